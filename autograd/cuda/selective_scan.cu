// Mamba's selective scan (ops/selective_scan.cpp) on the GPU: per batch row
// b and channel d a state h ∈ R^N,
//   h_t = exp(Δ_t A_d) ⊙ h_{t−1} + Δ_t u_t B_t,   y_t = C_t · h_t,
// and the reverse scan of the backward with G = ∂L/∂h_t,
//   G += dy_t C_t;  dC_t += dy_t h_t;  dB_t += Δ_t u_t G;  du_t = Δ_t (G·B_t);
//   dΔ_t = Σ_n G_n (A_n e^{Δ_t A_n} h_{t−1,n} + u_t B_tn);  dA_n += Δ_t G_n e^{Δ_t A_n} h_{t−1,n};
//   G ⊙= e^{Δ_t A}.
// A thread per (b, d) holds h, A_d and G in registers (N ≤ 256, a template
// bound). Blocks run along d for one b, so a warp's 32 channels share B_t and
// C_t: dB_t and dC_t, sums over the channels, are butterfly shuffles within
// the warp, then the warps' parts are added in warp order; dA, a sum over
// the batch, is added in row order. No atomics: the same bits every run.
// The backward recomputes h from checkpoints every kChunk steps, as
// recurrence.cu does.
#include <algorithm>

#include "autograd/cuda/check.cuh"
#include "autograd/cuda/column_sums.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/runtime.h"

namespace tapelm::cuda {

namespace {

constexpr int64_t kChunk = 64;  // steps between the backward's checkpoints
constexpr int kThreads = 128;   // channels a block (whole warps)

// The thread's channel: b = blockIdx.y, d along x; `live` false past D (such
// threads compute zeros and join the warp's shuffles).
struct Channel {
  int64_t b, d, slice;  // slice = b·D + d
  bool live;
  __device__ Channel(const ScanShape& s) {
    b = blockIdx.y;
    d = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    live = d < s.channels;
    if (!live) d = 0;
    slice = b * s.channels + d;
  }
};

// h ← e^{Δ_t A} ⊙ h + Δ_t u_t B_t over the N states.
template <int NMAX>
__device__ inline void advance(float (&h)[NMAX], const float (&a)[NMAX], const float* u, const float* delta,
                               const float* Bm, const Channel& at, const ScanShape& s, int64_t t) {
  const int64_t bt = at.b * s.steps + t;
  const float dt = delta[bt * s.channels + at.d], write = dt * u[bt * s.channels + at.d];
#pragma unroll
  for (int n = 0; n < NMAX; ++n)
    if (n < s.N) h[n] = expf(dt * a[n]) * h[n] + write * Bm[bt * s.N + n];
}

template <int NMAX>
__global__ void k_scan_forward(const float* u, const float* delta, const float* A, const float* Bm, const float* Cm,
                               float* y, float* state, ScanShape s) {
  const Channel at(s);
  if (!at.live) return;  // no barriers or shuffles here
  float a[NMAX], h[NMAX];
#pragma unroll
  for (int n = 0; n < NMAX; ++n) {
    a[n] = n < s.N ? A[at.d * s.N + n] : 0.f;
    h[n] = n < s.N && state ? state[at.slice * s.N + n] : 0.f;
  }
  for (int64_t t = 0; t < s.steps; ++t) {
    advance(h, a, u, delta, Bm, at, s, t);
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
      if (n < s.N) state[at.slice * s.N + n] = h[n];
}

// part[(sum, warp, b, t, n)]: dC (sum 0) and dB (sum 1) over the warp's channels.
template <int NMAX>
__global__ void k_scan_backward(const float* u, const float* delta, const float* A, const float* Bm, const float* Cm,
                                const float* dy, float* checkpoints, float* chunk_states, float* part, float* du,
                                float* ddelta, float* dA_rows, ScanShape s) {
  const Channel at(s);
  const int64_t T = s.steps, BD = s.batch * s.channels, chunks = (T + kChunk - 1) / kChunk;
  const int64_t warps = (s.channels + 31) / 32, warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  // Thread-private scratch, laid out so a warp's accesses are coalesced.
  auto checkpoint = [&](int64_t c, int n) -> float& { return checkpoints[(c * s.N + n) * BD + at.slice]; };
  auto chunk_state = [&](int64_t j, int n) -> float& { return chunk_states[(j * s.N + n) * BD + at.slice]; };
  float a[NMAX], h[NMAX] = {}, G[NMAX] = {}, dA[NMAX] = {};
#pragma unroll
  for (int n = 0; n < NMAX; ++n) a[n] = n < s.N && at.live ? A[at.d * s.N + n] : 0.f;

  // Pass 1: the state entering each chunk.
  if (at.live)
    for (int64_t c = 0; c < chunks; ++c) {
#pragma unroll
      for (int n = 0; n < NMAX; ++n)
        if (n < s.N) checkpoint(c, n) = h[n];
      if (c + 1 == chunks) break;
      for (int64_t t = c * kChunk; t < (c + 1) * kChunk; ++t) advance(h, a, u, delta, Bm, at, s, t);
    }

  // Pass 2: chunks from the last, each recomputed, then read in reverse.
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * kChunk, t1 = min(T, t0 + kChunk);
    if (at.live) {
#pragma unroll
      for (int n = 0; n < NMAX; ++n)
        if (n < s.N) h[n] = checkpoint(c, n);
      for (int64_t t = t0; t < t1; ++t) {
        advance(h, a, u, delta, Bm, at, s, t);
#pragma unroll
        for (int n = 0; n < NMAX; ++n)
          if (n < s.N) chunk_state(t - t0, n) = h[n];
      }
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t bt = at.b * T + t, bd = bt * s.channels + at.d;
      const float dt = at.live ? delta[bd] : 0.f, x = at.live ? u[bd] : 0.f, grad = at.live ? dy[bd] : 0.f;
      float pc[NMAX], pb[NMAX], du_acc = 0.f, dd_acc = 0.f;
#pragma unroll
      for (int n = 0; n < NMAX; ++n) {
        pc[n] = pb[n] = 0.f;
        if (n >= s.N || !at.live) continue;
        const float h_t = chunk_state(t - t0, n), h_prev = t > t0 ? chunk_state(t - t0 - 1, n) : checkpoint(c, n);
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
  }
  if (at.live)
#pragma unroll
    for (int n = 0; n < NMAX; ++n)
      if (n < s.N) dA_rows[at.slice * s.N + n] = dA[n];
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

}  // namespace

bool selective_scan_supported(int64_t N) { return N >= 1 && N <= 256; }

void selective_scan_forward(const float* u, const float* delta, const float* A, const float* Bm, const float* Cm,
                            float* y, float* state, const ScanShape& s) {
  if (s.batch == 0 || s.channels == 0) return;
  const dim3 grid((unsigned)((s.channels + kThreads - 1) / kThreads), (unsigned)s.batch);
  with_states(s.N, [&](auto n) {
    k_scan_forward<decltype(n)::value><<<grid, kThreads, 0, stream()>>>(u, delta, A, Bm, Cm, y, state, s);
  });
  TAPELM_CUDA_LAUNCHED();
}

void selective_scan_backward(const float* u, const float* delta, const float* A, const float* Bm, const float* Cm,
                             const float* dy, float* du, float* ddelta, float* dA, float* dB, float* dC,
                             const ScanShape& s) {
  const int64_t T = s.steps, BD = s.batch * s.channels, chunks = std::max<int64_t>(1, (T + kChunk - 1) / kChunk);
  const int64_t warps = (s.channels + 31) / 32, cols = s.batch * T * s.N;
  float* checkpoints = allocate_floats(chunks * s.N * BD);
  float* chunk_states = allocate_floats(kChunk * s.N * BD);
  float* part = allocate_floats(2 * warps * cols);
  float* dA_rows = allocate_floats(BD * s.N);
  if (BD > 0 && T > 0) {
    const dim3 grid((unsigned)((s.channels + kThreads - 1) / kThreads), (unsigned)s.batch);
    with_states(s.N, [&](auto n) {
      k_scan_backward<decltype(n)::value><<<grid, kThreads, 0, stream()>>>(u, delta, A, Bm, Cm, dy, checkpoints,
                                                                           chunk_states, part, du, ddelta, dA_rows, s);
    });
    TAPELM_CUDA_LAUNCHED();
  } else if (BD > 0) {  // no steps: h stays 0
    fill(dA_rows, BD * s.N, 0.f);
  }
  detail::column_sums(ChannelSums{part, warps, cols}, warps, cols, {dC, dB});
  // dA at (d, n): the column sums of the batch rows' parts [batch, channels·N], rows in order.
  detail::column_sums(detail::MatrixColumns{dA_rows, s.channels * s.N}, s.batch, s.channels * s.N, {dA});
  release(dA_rows);
  release(part);
  release(chunk_states);
  release(checkpoints);
}

}  // namespace tapelm::cuda
