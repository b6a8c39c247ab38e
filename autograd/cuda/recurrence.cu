// The linear-recurrence core (ops/recurrence.cpp) on the GPU, in its
// recurrent form: per slice (batch row and head) a K×V state
//   S_t = diag(exp g_t)·S_{t−1} + k_t v_tᵀ,   o_t = S_tᵀ q_t
// and the backward's reverse recurrence with G = ∂L/∂S_t,
//   G ← diag(exp g_{t+1}) G + q_t do_tᵀ,  dq_t = S_t do_t,  dk_t = G v_t,
//   dv_t = Gᵀ k_t,  dg_t[i] = e^{g_ti} Σ_j G[i,j] S_{t−1}[i,j].
//
// The states sit in registers as recurrence_layout.cuh lays them out: the
// read o_j = Σ_i S[i,j] q_i and dv are sums over rows (shared memory, in
// row-group order); dq, dk and dg sums over columns (butterfly shuffles
// within a tile, then the column tiles in order, in a second pass). No
// atomics: the same bits every run.
//
// The backward recomputes the states: one pass from zero stores the state
// entering each chunk of kChunk steps; then, chunk by chunk from the last, the
// chunk's states are recomputed into scratch and read in reverse.
#include <algorithm>

#include "autograd/cuda/check.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/launch.cuh"
#include "autograd/cuda/recurrence_layout.cuh"
#include "autograd/cuda/runtime.h"

namespace tapelm::cuda {

namespace {

using detail::StatePlace;

constexpr int64_t kChunk = 64;  // steps between the backward's checkpoints

// exp g_t of each of the thread's rows (one exp for a decay per step).
template <int KPT>
__device__ inline void decays(float (&e)[KPT], const StatePlace& at, const RecurrenceShape& s, const float* g,
                              int64_t t) {
  const float shared_decay = s.GK == 1 && at.live ? expf(g[t]) : 0.f;
#pragma unroll
  for (int m = 0; m < KPT; ++m) {
    const int64_t i = at.row(m);
    e[m] = s.GK == 1 ? shared_decay : at.live && i < s.K ? expf(g[t * s.GK + i]) : 0.f;
  }
}

// S ← diag(exp g_t) S + k_t v_tᵀ over the thread's rows.
template <int KPT>
__device__ inline void advance(float (&S)[KPT], const StatePlace& at, const RecurrenceShape& s, const float* k,
                               const float* g, float vj, int64_t t) {
  float e[KPT];
  decays(e, at, s, g, t);
#pragma unroll
  for (int m = 0; m < KPT; ++m) {
    const int64_t i = at.row(m);
    if (at.live && i < s.K) S[m] = e[m] * S[m] + k[t * s.K + i] * vj;
  }
}

template <int KPT>
__global__ void k_recurrence_forward(const float* q, const float* k, const float* v, const float* g, float* o,
                                     float* state, RecurrenceShape s) {
  extern __shared__ float shared[];
  const StatePlace at(s.slices, s.V);
  const int64_t T = s.steps;
  q += at.slice * T * s.K, k += at.slice * T * s.K, v += at.slice * T * s.V, g += at.slice * T * s.GK;
  o += at.slice * T * s.V;
  float S[KPT];
  detail::load_state(S, state, at, s.K, s.V);
  int turn = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float vj = at.live ? v[t * s.V + at.j] : 0.f;
    advance(S, at, s, k, g, vj, t);
    const float ot = detail::sum_over_rows(shared, turn, detail::rows_dot(S, at, s.K, q + t * s.K));
    if (at.r == 0 && at.live) o[t * s.V + at.j] = ot;
  }
  if (state) detail::store_state(S, state, at, s.K, s.V);
}

// Writes part[(sum, tile, slice, t, i)]: dq, dk and dg's column sums over this block's tile.
template <int KPT>
__global__ void k_recurrence_backward(const float* q, const float* k, const float* v, const float* g, const float* dout,
                                      float* checkpoints, float* chunk_states, float* part, float* dv,
                                      RecurrenceShape s) {
  extern __shared__ float shared[];
  const StatePlace at(s.slices, s.V);
  const int64_t T = s.steps, chunks = (T + kChunk - 1) / kChunk, tiles = gridDim.y;
  const int64_t slice = at.slice;
  q += slice * T * s.K, k += slice * T * s.K, v += slice * T * s.V, g += slice * T * s.GK;
  dout += slice * T * s.V, dv += slice * T * s.V;
  auto row_ok = [&](int64_t i) { return at.live && i < s.K; };

  // Pass 1: the state entering each chunk.
  float S[KPT] = {};
  for (int64_t c = 0; c < chunks; ++c) {
    detail::store_state(S, checkpoints, at, s.K, s.V, chunks, c);
    if (c + 1 == chunks) break;
    for (int64_t t = c * kChunk; t < (c + 1) * kChunk; ++t)
      advance(S, at, s, k, g, at.live ? v[t * s.V + at.j] : 0.f, t);
  }

  // Pass 2: chunks from the last; G = ∂L/∂S_t carried backwards in registers.
  float G[KPT] = {};
  int turn = 0;
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * kChunk, t1 = min(T, t0 + kChunk);
    detail::load_state(S, checkpoints, at, s.K, s.V, chunks, c);
    for (int64_t t = t0; t < t1; ++t) {
      advance(S, at, s, k, g, at.live ? v[t * s.V + at.j] : 0.f, t);
      detail::store_state(S, chunk_states, at, s.K, s.V, kChunk, t - t0);
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const float dj = at.live ? dout[t * s.V + at.j] : 0.f, vj = at.live ? v[t * s.V + at.j] : 0.f;
      float pq[KPT], pk[KPT], pg[KPT], dv_part = 0.f, e_next[KPT];
      if (t + 1 < T) decays(e_next, at, s, g, t + 1);
#pragma unroll
      for (int m = 0; m < KPT; ++m) {
        const int64_t i = at.row(m);
        pq[m] = pk[m] = pg[m] = 0.f;
        if (!row_ok(i)) continue;
        const float S_t = chunk_states[detail::state_index(s.K, s.V, slice, kChunk, t - t0, i, at.j)];
        const float S_prev = t > t0 ? chunk_states[detail::state_index(s.K, s.V, slice, kChunk, t - t0 - 1, i, at.j)]
                                    : checkpoints[detail::state_index(s.K, s.V, slice, chunks, c, i, at.j)];
        if (t + 1 < T) G[m] *= e_next[m];  // the future reaches S_t through step t+1's decay
        G[m] += q[t * s.K + i] * dj;
        pq[m] = S_t * dj;
        pk[m] = G[m] * vj;
        pg[m] = G[m] * S_prev;
        dv_part += G[m] * k[t * s.K + i];
      }
      // Sums over the tile's columns.
#pragma unroll
      for (int m = 0; m < KPT; ++m) {
        pq[m] = detail::sum_over_columns(pq[m]);
        pk[m] = detail::sum_over_columns(pk[m]);
        pg[m] = detail::sum_over_columns(pg[m]);
      }
      if (at.lane == 0 && at.live) {
        const int64_t base = ((int64_t)blockIdx.y * s.slices + slice) * T + t, stride = tiles * s.slices * T;
#pragma unroll
        for (int m = 0; m < KPT; ++m) {
          const int64_t i = at.row(m);
          if (i >= s.K) continue;
          part[base * s.K + i] = pq[m];
          part[(stride + base) * s.K + i] = pk[m];
          part[(2 * stride + base) * s.K + i] = pg[m];
        }
      }
      const float dvj = detail::sum_over_rows(shared, turn, dv_part);
      if (at.r == 0 && at.live) dv[t * s.V + at.j] = dvj;
    }
  }
}

// dq, dk (and dg for a vector decay) at (slice, t, i): the column tiles' parts added in tile order.
__global__ void k_recurrence_add_tiles(const float* part, const float* g, float* dq, float* dk, float* dg,
                                       RecurrenceShape s, int64_t tiles) {
  const int64_t n = s.slices * s.steps * s.K, stride = tiles * n;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)blockDim.x * gridDim.x) {
    float a = 0.f, b = 0.f, c = 0.f;
    for (int64_t tile = 0; tile < tiles; ++tile) {
      a += part[tile * n + e];
      b += part[stride + tile * n + e];
      c += part[2 * stride + tile * n + e];
    }
    dq[e] = a, dk[e] = b;
    if (s.GK != 1) dg[e] = expf(g[e]) * c;
  }
}

// dg for a decay per head and step: e^{g_t} Σ_i Σ_tile part, rows in order.
__global__ void k_recurrence_scalar_decay(const float* part, const float* g, float* dg, RecurrenceShape s,
                                          int64_t tiles) {
  const int64_t n = s.slices * s.steps, stride = tiles * n * s.K;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)blockDim.x * gridDim.x) {
    float acc = 0.f;
    for (int64_t i = 0; i < s.K; ++i) {
      float row = 0.f;
      for (int64_t tile = 0; tile < tiles; ++tile) row += part[2 * stride + (tile * n + e) * s.K + i];
      acc += row;
    }
    dg[e] = expf(g[e]) * acc;
  }
}

}  // namespace

bool gated_recurrence_supported(int64_t K) { return K >= 1 && K <= 1024; }

void gated_recurrence_forward(const float* q, const float* k, const float* v, const float* g, float* o, float* state,
                              const RecurrenceShape& s) {
  if (s.slices == 0 || s.V == 0 || (s.steps == 0 && !state)) return;
  const detail::StateLayout l = detail::state_layout(s.K, s.V);
  detail::with_rows_per_thread(l, [&](auto kpt) {
    k_recurrence_forward<decltype(kpt)::value>
        <<<l.grid(s.slices), l.block(), l.shared_bytes(), stream()>>>(q, k, v, g, o, state, s);
  });
  TAPELM_CUDA_LAUNCHED();
}

void gated_recurrence_backward(const float* q, const float* k, const float* v, const float* g, const float* dout,
                               float* dq, float* dk, float* dv, float* dg, const RecurrenceShape& s) {
  if (s.slices == 0 || s.steps == 0) return;
  const detail::StateLayout l = detail::state_layout(s.K, s.V);
  const int64_t chunks = (s.steps + kChunk - 1) / kChunk, state = s.K * s.V;
  float* checkpoints = allocate_floats(s.slices * chunks * state);
  float* chunk_states = allocate_floats(s.slices * kChunk * state);
  float* part = allocate_floats(3 * l.tiles * s.slices * s.steps * s.K);
  if (s.V > 0) {
    detail::with_rows_per_thread(l, [&](auto kpt) {
      k_recurrence_backward<decltype(kpt)::value><<<l.grid(s.slices), l.block(), l.shared_bytes(), stream()>>>(
          q, k, v, g, dout, checkpoints, chunk_states, part, dv, s);
    });
    TAPELM_CUDA_LAUNCHED();
  } else {
    fill(part, 3 * s.slices * s.steps * s.K, 0.f);
  }
  const int64_t tiles = std::max<int64_t>(l.tiles, 1);
  k_recurrence_add_tiles<<<grid_for(s.slices * s.steps * s.K), kLoopThreads, 0, stream()>>>(part, g, dq, dk, dg, s,
                                                                                            tiles);
  TAPELM_CUDA_LAUNCHED();
  if (s.GK == 1) {
    k_recurrence_scalar_decay<<<grid_for(s.slices * s.steps), kLoopThreads, 0, stream()>>>(part, g, dg, s, tiles);
    TAPELM_CUDA_LAUNCHED();
  }
  release(part);
  release(chunk_states);
  release(checkpoints);
}

}  // namespace tapelm::cuda
