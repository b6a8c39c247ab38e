// Mamba's selective scan (ops/selective_scan.cpp) on the GPU: per batch row
// b and channel d a state h ∈ R^N,
//   h_t = exp(Δ_t A_d) ⊙ h_{t−1} + Δ_t u_t B_t,   y_t = C_t · h_t,
// and the reverse scan of the backward with G = ∂L/∂h_t,
//   G += dy_t C_t;  dC_t += dy_t h_t;  dB_t += Δ_t u_t G;  du_t = Δ_t (G·B_t);
//   dΔ_t = Σ_n G_n (A_n e^{Δ_t A_n} h_{t−1,n} + u_t B_tn);  dA_n += Δ_t G_n e^{Δ_t A_n} h_{t−1,n};
//   G ⊙= e^{Δ_t A}.
// Chunks of kChunk steps run in parallel (a thread per (b, chunk, d) holds h,
// A_d and G in registers, N ≤ 256), as a scan of a linear recurrence splits:
// the state entering chunk c is
//   h_in(c+1) = e^{A_d Σ_{t∈c} Δ_t} ⊙ h_in(c) + h_local(c),
// h_local(c) the chunk's end state from zero, a short sequential carry over
// the chunks per (b, n, d); the adjoint carries back the same way,
//   F(c−1) = e^{Δ_{t0(c)} A} Ĝ(c) + e^{A Σ_{t∈c} Δ_t} ⊙ F(c),
// Ĝ(c) the chunk's adjoint at its first step from a zero future. Then each
// chunk reruns from its true h_in and F. Without the split a thread walked
// all T steps, and a Mamba layer at batch 4 has 6,144 channels: 47 threads
// an SM. A warp's 32 channels share B_t and C_t: dB_t and dC_t, sums over the
// channels, are butterfly shuffles within the warp, then the warps' parts
// added in warp order; dA, a sum over the batch and the chunks, is added in
// (b, chunk) order. No atomics: the same bits every run.
#include <algorithm>

#include "autograd/cuda/check.cuh"
#include "autograd/cuda/column_sums.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/launch.cuh"
#include "autograd/cuda/runtime.h"

namespace tapelm::cuda {

namespace {

constexpr int64_t kChunk = 64;  // steps a thread scans; the chunks run in parallel
constexpr int kThreads = 128;   // channels a block (whole warps)

// The thread's channel and chunk: d along x, the chunk along y, b along z;
// `live` false past D (such threads compute zeros and join the warp's shuffles).
struct ChunkOf {
  int64_t b, c, d, t0, t1;
  bool live;
  __device__ ChunkOf(const ScanShape& s) {
    b = blockIdx.z, c = blockIdx.y;
    d = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    live = d < s.channels;
    if (!live) d = 0;
    t0 = c * kChunk, t1 = min(s.steps, t0 + kChunk);
  }
};

// Per (b, chunk, n, d) arrays, d fastest (a warp's accesses coalesce).
__device__ inline int64_t chunk_index(const ScanShape& s, int64_t chunks, int64_t b, int64_t c, int64_t n, int64_t d) {
  return ((b * chunks + c) * s.N + n) * s.channels + d;
}

// h ← e^{Δ_t A} ⊙ h + Δ_t u_t B_t over the N states; returns Δ_t.
template <int NMAX>
__device__ inline float advance(float (&h)[NMAX], const float (&a)[NMAX], const float* u, const float* delta,
                                const float* Bm, int64_t b, int64_t d, const ScanShape& s, int64_t t) {
  const int64_t bt = b * s.steps + t;
  const float dt = delta[bt * s.channels + d], write = dt * u[bt * s.channels + d];
#pragma unroll
  for (int n = 0; n < NMAX; ++n)
    if (n < s.N) h[n] = expf(dt * a[n]) * h[n] + write * Bm[bt * s.N + n];
  return dt;
}

template <int NMAX>
__device__ inline void load_A(float (&a)[NMAX], const float* A, const ScanShape& s, int64_t d, bool live) {
#pragma unroll
  for (int n = 0; n < NMAX; ++n) a[n] = n < s.N && live ? A[d * s.N + n] : 0.f;
}

// One chunk from a zero state: its end state h_local and Σ_t Δ_t.
template <int NMAX>
__global__ void k_chunk_local_ends(const float* u, const float* delta, const float* A, const float* Bm, float* h_local,
                                   float* sum_dt, ScanShape s, int64_t chunks) {
  const ChunkOf at(s);
  if (!at.live) return;
  float a[NMAX], h[NMAX] = {}, total = 0.f;
  load_A(a, A, s, at.d, true);
  for (int64_t t = at.t0; t < at.t1; ++t) total += advance(h, a, u, delta, Bm, at.b, at.d, s, t);
#pragma unroll
  for (int n = 0; n < NMAX; ++n)
    if (n < s.N) h_local[chunk_index(s, chunks, at.b, at.c, n, at.d)] = h[n];
  sum_dt[(at.b * chunks + at.c) * s.channels + at.d] = total;
}

// The state entering each chunk, a thread per (b, n, d) walking the chunks:
// h_in(0) = state (or 0), h_in(c+1) = e^{A Σ Δ} h_in(c) + h_local(c); the
// final state goes back to `state` when given.
__global__ void k_chunk_carry(const float* A, const float* h_local, const float* sum_dt, float* h_in, float* state,
                              ScanShape s, int64_t chunks) {
  const int64_t n_all = s.batch * s.N * s.channels;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_all; i += (int64_t)blockDim.x * gridDim.x) {
    const int64_t d = i % s.channels, n = (i / s.channels) % s.N, b = i / (s.channels * s.N);
    const float a = A[d * s.N + n];
    float h = state ? state[(b * s.channels + d) * s.N + n] : 0.f;
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t at = chunk_index(s, chunks, b, c, n, d);
      h_in[at] = h;
      h = expf(a * sum_dt[(b * chunks + c) * s.channels + d]) * h + h_local[at];
    }
    if (state) state[(b * s.channels + d) * s.N + n] = h;
  }
}

// Each chunk from its true entering state: y_t = C_t · h_t.
template <int NMAX>
__global__ void k_chunk_outputs(const float* u, const float* delta, const float* A, const float* Bm, const float* Cm,
                                const float* h_in, float* y, ScanShape s, int64_t chunks) {
  const ChunkOf at(s);
  if (!at.live) return;
  float a[NMAX], h[NMAX];
  load_A(a, A, s, at.d, true);
#pragma unroll
  for (int n = 0; n < NMAX; ++n) h[n] = n < s.N ? h_in[chunk_index(s, chunks, at.b, at.c, n, at.d)] : 0.f;
  for (int64_t t = at.t0; t < at.t1; ++t) {
    advance(h, a, u, delta, Bm, at.b, at.d, s, t);
    const int64_t bt = at.b * s.steps + t;
    float acc = 0.f;
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
      if (n < s.N) acc += h[n] * Cm[bt * s.N + n];
    y[bt * s.channels + at.d] = acc;
  }
}

// One chunk (T ≤ kChunk, decoding): the scan from `state` ([B, D, N], or
// zero), y_t = C_t · h_t, the final state back to `state`; one launch.
template <int NMAX>
__global__ void k_single_chunk_forward(const float* u, const float* delta, const float* A, const float* Bm,
                                       const float* Cm, float* y, float* state, ScanShape s) {
  const ChunkOf at(s);
  if (!at.live) return;
  const int64_t slice = at.b * s.channels + at.d;
  float a[NMAX], h[NMAX];
  load_A(a, A, s, at.d, true);
#pragma unroll
  for (int n = 0; n < NMAX; ++n) h[n] = n < s.N && state ? state[slice * s.N + n] : 0.f;
  for (int64_t t = at.t0; t < at.t1; ++t) {
    advance(h, a, u, delta, Bm, at.b, at.d, s, t);
    const int64_t bt = at.b * s.steps + t;
    float acc = 0.f;
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
      if (n < s.N) acc += h[n] * Cm[bt * s.N + n];
    y[bt * s.channels + at.d] = acc;
  }
  if (state)
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
      if (n < s.N) state[slice * s.N + n] = h[n];
}

// The chunk's adjoint from a zero future, carried to the step before it:
// e^{Δ_{t0} A} Ĝ(c), where Ĝ(c) = Σ_{t∈c} (Π_{t0<s≤t} e^{Δ_s A}) dy_t C_t.
template <int NMAX>
__global__ void k_chunk_local_adjoint(const float* delta, const float* A, const float* Cm, const float* dy,
                                      float* G_local, ScanShape s, int64_t chunks) {
  const ChunkOf at(s);
  if (!at.live) return;
  float a[NMAX], G[NMAX] = {};
  load_A(a, A, s, at.d, true);
  for (int64_t t = at.t1 - 1; t >= at.t0; --t) {
    const int64_t bt = at.b * s.steps + t;
    const float grad = dy[bt * s.channels + at.d], dt = delta[bt * s.channels + at.d];
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
      if (n < s.N) G[n] = (G[n] + grad * Cm[bt * s.N + n]) * expf(dt * a[n]);
  }
#pragma unroll
  for (int n = 0; n < NMAX; ++n)
    if (n < s.N) G_local[chunk_index(s, chunks, at.b, at.c, n, at.d)] = G[n];
}

// The adjoint reaching each chunk's last step from the chunks after it, a
// thread per (b, n, d) walking back: F(last) = 0, F(c−1) = G_local(c) + e^{A Σ Δ} F(c).
__global__ void k_chunk_adjoint_carry(const float* A, const float* G_local, const float* sum_dt, float* F, ScanShape s,
                                      int64_t chunks) {
  const int64_t n_all = s.batch * s.N * s.channels;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_all; i += (int64_t)blockDim.x * gridDim.x) {
    const int64_t d = i % s.channels, n = (i / s.channels) % s.N, b = i / (s.channels * s.N);
    const float a = A[d * s.N + n];
    float f = 0.f;
    for (int64_t c = chunks - 1; c >= 0; --c) {
      const int64_t at = chunk_index(s, chunks, b, c, n, d);
      F[at] = f;
      f = G_local[at] + expf(a * sum_dt[(b * chunks + c) * s.channels + d]) * f;
    }
  }
}

// Each chunk's reverse scan from its true h_in and F: du, dΔ per step; dB and
// dC parts per warp in part[(sum, warp, b, t, n)]; dA per (b, chunk, d, n).
template <int NMAX>
__global__ void k_chunk_backward(const float* u, const float* delta, const float* A, const float* Bm, const float* Cm,
                                 const float* dy, const float* h_in, const float* F, float* chunk_states, float* part,
                                 float* du, float* ddelta, float* dA_rows, ScanShape s, int64_t chunks) {
  const ChunkOf at(s);
  const int64_t T = s.steps, warps = (s.channels + 31) / 32;
  const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  // The chunk's states h_t, thread-private, laid out so a warp's accesses coalesce.
  auto state_at = [&](int64_t j, int n) -> float& {
    return chunk_states[(((at.b * chunks + at.c) * kChunk + j) * s.N + n) * s.channels + at.d];
  };
  float a[NMAX], h[NMAX], G[NMAX], dA[NMAX] = {};
  load_A(a, A, s, at.d, at.live);
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    const bool ok = n < s.N && at.live;
    h[n] = ok ? h_in[chunk_index(s, chunks, at.b, at.c, n, at.d)] : 0.f;
    G[n] = ok ? F[chunk_index(s, chunks, at.b, at.c, n, at.d)] : 0.f;
  }
  if (at.live)
    for (int64_t t = at.t0; t < at.t1; ++t) {
      advance(h, a, u, delta, Bm, at.b, at.d, s, t);
#pragma unroll
      for (int n = 0; n < NMAX; ++n)
        if (n < s.N) state_at(t - at.t0, n) = h[n];
    }
  for (int64_t t = at.t1 - 1; t >= at.t0; --t) {
    const int64_t bt = at.b * T + t, bd = bt * s.channels + at.d, j = t - at.t0;
    const float dt = at.live ? delta[bd] : 0.f, x = at.live ? u[bd] : 0.f, grad = at.live ? dy[bd] : 0.f;
    float pc[NMAX], pb[NMAX], du_acc = 0.f, dd_acc = 0.f;
#pragma unroll
    for (int n = 0; n < NMAX; ++n) {
      pc[n] = pb[n] = 0.f;
      if (n >= s.N || !at.live) continue;
      const float h_t = state_at(j, n),
                  h_prev = j > 0 ? state_at(j - 1, n) : h_in[chunk_index(s, chunks, at.b, at.c, n, at.d)];
      const float e = expf(dt * a[n]), bn = Bm[bt * s.N + n];
      G[n] += grad * Cm[bt * s.N + n];
      pc[n] = grad * h_t;
      pb[n] = dt * x * G[n];
      du_acc += G[n] * bn;
      dd_acc += G[n] * (a[n] * e * h_prev + x * bn);
      dA[n] += dt * G[n] * e * h_prev;
      G[n] *= e;  // to h_{t−1}
    }
    if (at.live) du[bd] = dt * du_acc, ddelta[bd] = dd_acc;
    // Sums over the warp's channels (every lane ends with the sum).
    for (int off = 16; off > 0; off /= 2) {
#pragma unroll
      for (int n = 0; n < NMAX; ++n) {
        if (n >= s.N) continue;
        pc[n] += __shfl_xor_sync(0xffffffffu, pc[n], off);
        pb[n] += __shfl_xor_sync(0xffffffffu, pb[n], off);
      }
    }
    if (lane == 0 && warp < warps) {  // a block's last warps may hold no channel
      const int64_t rows = s.batch * T * s.N;
#pragma unroll
      for (int n = 0; n < NMAX; ++n) {
        if (n >= s.N) continue;
        part[warp * rows + bt * s.N + n] = pc[n];
        part[(warps + warp) * rows + bt * s.N + n] = pb[n];
      }
    }
  }
  if (at.live)
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
      if (n < s.N) dA_rows[((at.b * chunks + at.c) * s.channels + at.d) * s.N + n] = dA[n];
}

// dC and dB at (b, t, n): the warps' parts in warp order.
struct ChannelSums {
  static constexpr int kSums = 2;
  const float* part;
  int64_t warps, cols;
  __device__ void operator()(int64_t warp, int64_t col, float* terms) const {
    terms[0] = part[warp * cols + col];
    terms[1] = part[(warps + warp) * cols + col];
  }
};

template <class F>
void with_states(int64_t N, F f) {
  if (N <= 16) return f(std::integral_constant<int, 16>());
  if (N <= 64) return f(std::integral_constant<int, 64>());
  return f(std::integral_constant<int, 256>());
}

int64_t chunks_of(const ScanShape& s) { return std::max<int64_t>(1, (s.steps + kChunk - 1) / kChunk); }

dim3 chunk_grid(const ScanShape& s, int64_t chunks) {
  return dim3((unsigned)((s.channels + kThreads - 1) / kThreads), (unsigned)chunks, (unsigned)s.batch);
}

// h_in (the state entering each chunk) and Σ Δ per chunk; `state` as k_chunk_carry uses it.
void chunk_entries(const float* u, const float* delta, const float* A, const float* Bm, float* h_in, float* sum_dt,
                   float* state, const ScanShape& s, int64_t chunks) {
  float* h_local = allocate_floats(s.batch * chunks * s.N * s.channels);
  with_states(s.N, [&](auto n) {
    k_chunk_local_ends<decltype(n)::value>
        <<<chunk_grid(s, chunks), kThreads, 0, stream()>>>(u, delta, A, Bm, h_local, sum_dt, s, chunks);
  });
  TAPELM_CUDA_LAUNCHED();
  k_chunk_carry<<<grid_for(s.batch * s.N * s.channels), kLoopThreads, 0, stream()>>>(A, h_local, sum_dt, h_in, state, s,
                                                                                     chunks);
  TAPELM_CUDA_LAUNCHED();
  release(h_local);
}

}  // namespace

bool selective_scan_supported(int64_t N) { return N >= 1 && N <= 256; }

void selective_scan_forward(const float* u, const float* delta, const float* A, const float* Bm, const float* Cm,
                            float* y, float* state, const ScanShape& s) {
  if (s.batch == 0 || s.channels == 0) return;
  if (s.steps == 0) return;  // y is empty and the state stays
  const int64_t chunks = chunks_of(s), per_chunk = s.batch * chunks * s.N * s.channels;
  if (chunks == 1) {
    with_states(s.N, [&](auto n) {
      k_single_chunk_forward<decltype(n)::value>
          <<<chunk_grid(s, 1), kThreads, 0, stream()>>>(u, delta, A, Bm, Cm, y, state, s);
    });
    TAPELM_CUDA_LAUNCHED();
    return;
  }
  float *h_in = allocate_floats(per_chunk), *sum_dt = allocate_floats(s.batch * chunks * s.channels);
  chunk_entries(u, delta, A, Bm, h_in, sum_dt, state, s, chunks);
  with_states(s.N, [&](auto n) {
    k_chunk_outputs<decltype(n)::value>
        <<<chunk_grid(s, chunks), kThreads, 0, stream()>>>(u, delta, A, Bm, Cm, h_in, y, s, chunks);
  });
  TAPELM_CUDA_LAUNCHED();
  release(sum_dt);
  release(h_in);
}

void selective_scan_backward(const float* u, const float* delta, const float* A, const float* Bm, const float* Cm,
                             const float* dy, float* du, float* ddelta, float* dA, float* dB, float* dC,
                             const ScanShape& s) {
  const int64_t T = s.steps, chunks = chunks_of(s), per_chunk = s.batch * chunks * s.N * s.channels;
  const int64_t warps = (s.channels + 31) / 32, cols = s.batch * T * s.N;
  float* part = allocate_floats(2 * warps * cols);
  float* dA_rows = allocate_floats(s.batch * chunks * s.channels * s.N);
  if (s.batch * s.channels > 0 && T > 0) {
    float *h_in = allocate_floats(per_chunk), *F = allocate_floats(per_chunk), *G_local = allocate_floats(per_chunk);
    float* sum_dt = allocate_floats(s.batch * chunks * s.channels);
    float* chunk_states = allocate_floats(s.batch * chunks * kChunk * s.N * s.channels);
    chunk_entries(u, delta, A, Bm, h_in, sum_dt, nullptr, s, chunks);  // training: from a zero state
    with_states(s.N, [&](auto n) {
      k_chunk_local_adjoint<decltype(n)::value>
          <<<chunk_grid(s, chunks), kThreads, 0, stream()>>>(delta, A, Cm, dy, G_local, s, chunks);
    });
    TAPELM_CUDA_LAUNCHED();
    k_chunk_adjoint_carry<<<grid_for(s.batch * s.N * s.channels), kLoopThreads, 0, stream()>>>(A, G_local, sum_dt, F, s,
                                                                                               chunks);
    TAPELM_CUDA_LAUNCHED();
    with_states(s.N, [&](auto n) {
      k_chunk_backward<decltype(n)::value><<<chunk_grid(s, chunks), kThreads, 0, stream()>>>(
          u, delta, A, Bm, Cm, dy, h_in, F, chunk_states, part, du, ddelta, dA_rows, s, chunks);
    });
    TAPELM_CUDA_LAUNCHED();
    for (float* p : {chunk_states, sum_dt, G_local, F, h_in}) release(p);
  } else if (s.batch * s.channels > 0) {  // no steps: h stays 0
    fill(dA_rows, s.batch * chunks * s.channels * s.N, 0.f);
  }
  detail::column_sums(ChannelSums{part, warps, cols}, warps, cols, {dC, dB});
  // dA at (d, n): the column sums of the (b, chunk) rows' parts [channels·N], rows in order.
  detail::column_sums(detail::MatrixColumns{dA_rows, s.channels * s.N}, s.batch * chunks, s.channels * s.N, {dA});
  release(dA_rows);
  release(part);
}

}  // namespace tapelm::cuda
