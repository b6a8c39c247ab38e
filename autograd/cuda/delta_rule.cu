// The delta rule (ops/delta_rule.cpp; DeltaNet, Gated DeltaNet) on the GPU,
// in its recurrent form: per slice a K×V state,
//   u_t = S_{t−1}ᵀ k_t,  w_t = v_t − α_t u_t,
//   S_t = α_t S_{t−1} + β_t k_t w_tᵀ,   o_t = S_tᵀ q_t,     α_t = e^{g_t},
// and the exact reverse recurrence with G = ∂L/∂S_t and r_t = G_tᵀ k_t:
//   G_t = q_t do_tᵀ + α_{t+1} (G_{t+1} − β_{t+1} k_{t+1} r_{t+1}ᵀ)
//   dq_t = S_t do_t,   dv_t = β_t r_t,   dβ_t = r_t · w_t,
//   dk_t = β_t G_t w_t − α_t β_t S_{t−1} r_t,
//   dg_t = α_t (⟨G_t, S_{t−1}⟩ − β_t r_t · u_t).
// The states sit in registers as recurrence_layout.cuh lays them out; u_t
// and r_t are sums over rows (shared memory), the per-row gradients sums over
// columns (shuffles, then the column tiles in order); the backward recomputes
// the states from checkpoints every kChunk steps. No atomics.
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

// The slice's inputs.
struct DeltaInputs {
  const float *q, *k, *v, *beta, *g;
  __device__ DeltaInputs at(int64_t slice, const RecurrenceShape& s) const {
    return {q + slice * s.steps * s.K, k + slice * s.steps * s.K, v + slice * s.steps * s.V, beta + slice * s.steps,
            g + slice * s.steps};
  }
};

// One step: S ← α S + β k (v − α Sᵀk)ᵀ over the thread's rows; returns u_j = (S_{t−1}ᵀ k)_j.
template <int KPT>
__device__ inline float advance(float (&S)[KPT], const StatePlace& at, const RecurrenceShape& s, const DeltaInputs& in,
                                int64_t t, float* shared, int& turn) {
  const float u = detail::sum_over_rows(shared, turn, detail::rows_dot(S, at, s.K, in.k + t * s.K));
  if (at.live) {
    const float alpha = expf(in.g[t]), w = in.beta[t] * (in.v[t * s.V + at.j] - alpha * u);
#pragma unroll
    for (int m = 0; m < KPT; ++m) {
      const int64_t i = at.row(m);
      if (i < s.K) S[m] = alpha * S[m] + in.k[t * s.K + i] * w;
    }
  }
  return u;
}

template <int KPT>
__global__ void k_delta_forward(DeltaInputs inputs, float* o, float* state, RecurrenceShape s) {
  extern __shared__ float shared[];
  const StatePlace at(s.slices, s.V);
  const DeltaInputs in = inputs.at(at.slice, s);
  o += at.slice * s.steps * s.V;
  float S[KPT];
  detail::load_state(S, state, at, s.K, s.V);
  int turn = 0;
  for (int64_t t = 0; t < s.steps; ++t) {
    advance(S, at, s, in, t, shared, turn);
    const float ot = detail::sum_over_rows(shared, turn, detail::rows_dot(S, at, s.K, in.q + t * s.K));
    if (at.r == 0 && at.live) o[t * s.V + at.j] = ot;
  }
  if (state) detail::store_state(S, state, at, s.K, s.V);
}

// Where the backward's per-tile parts go: dq and dk per row, [2][tiles][slices][T][K];
// dβ and dα per row group, [2][tiles][slices][T][R].
struct DeltaParts {
  float *rows, *groups;
};

template <int KPT>
__global__ void k_delta_backward(DeltaInputs inputs, const float* dout, float* checkpoints, float* chunk_states,
                                 DeltaParts part, float* dv, RecurrenceShape s) {
  extern __shared__ float shared[];
  const StatePlace at(s.slices, s.V);
  const DeltaInputs in = inputs.at(at.slice, s);
  const int64_t T = s.steps, chunks = (T + kChunk - 1) / kChunk, tiles = gridDim.y, R = blockDim.y;
  dout += at.slice * T * s.V, dv += at.slice * T * s.V;
  auto row_ok = [&](int64_t i) { return at.live && i < s.K; };
  auto checkpoint = [&](int64_t c, int64_t i) -> float& {
    return checkpoints[detail::state_index(s.K, s.V, at.slice, chunks, c, i, at.j)];
  };
  auto chunk_state = [&](int64_t n, int64_t i) -> float& {
    return chunk_states[detail::state_index(s.K, s.V, at.slice, kChunk, n, i, at.j)];
  };
  int turn = 0;

  // Pass 1: the state entering each chunk.
  float S[KPT] = {};
  for (int64_t c = 0; c < chunks; ++c) {
    detail::store_state(S, checkpoints, at, s.K, s.V, chunks, c);
    if (c + 1 == chunks) break;
    for (int64_t t = c * kChunk; t < (c + 1) * kChunk; ++t) advance(S, at, s, in, t, shared, turn);
  }

  // Pass 2: chunks from the last; G and r_{t+1} carried backwards in registers.
  float G[KPT] = {}, r_next = 0.f;
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * kChunk, t1 = min(T, t0 + kChunk);
    detail::load_state(S, checkpoints, at, s.K, s.V, chunks, c);
    for (int64_t t = t0; t < t1; ++t) {
      advance(S, at, s, in, t, shared, turn);
      detail::store_state(S, chunk_states, at, s.K, s.V, kChunk, t - t0);
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const float alpha = expf(in.g[t]), beta = in.beta[t];
      const float dj = at.live ? dout[t * s.V + at.j] : 0.f, vj = at.live ? in.v[t * s.V + at.j] : 0.f;
      float S_t[KPT], S_prev[KPT], part_r = 0.f, part_u = 0.f;
#pragma unroll
      for (int m = 0; m < KPT; ++m) {
        const int64_t i = at.row(m);
        S_t[m] = S_prev[m] = 0.f;
        if (!row_ok(i)) continue;
        S_t[m] = chunk_state(t - t0, i);
        S_prev[m] = t > t0 ? chunk_state(t - t0 - 1, i) : checkpoint(c, i);
        if (t + 1 < T)  // G ← α_{t+1} (G − β_{t+1} k_{t+1} r_{t+1}ᵀ)
          G[m] = expf(in.g[t + 1]) * (G[m] - in.beta[t + 1] * in.k[(t + 1) * s.K + i] * r_next);
        G[m] += in.q[t * s.K + i] * dj;
        part_r += G[m] * in.k[t * s.K + i];
        part_u += S_prev[m] * in.k[t * s.K + i];
      }
      const float r = detail::sum_over_rows(shared, turn, part_r);  // (Gᵀk)_j
      const float u = detail::sum_over_rows(shared, turn, part_u);  // (S_{t−1}ᵀk)_j
      const float w = vj - alpha * u;
      if (at.r == 0 && at.live) dv[t * s.V + at.j] = beta * r;
      // Per row: dq = S_t do, dk = β G w − αβ S_{t−1} r, over the tile's columns.
      float dq[KPT], dk[KPT], G_dot_S = 0.f;
#pragma unroll
      for (int m = 0; m < KPT; ++m) {
        dq[m] = detail::sum_over_columns(S_t[m] * dj);
        dk[m] = detail::sum_over_columns(beta * G[m] * w - alpha * beta * S_prev[m] * r);
        G_dot_S += G[m] * S_prev[m];
      }
      // Per step (one term a column, on row group 0): dβ = r·w, dα = ⟨G, S_{t−1}⟩ − β r·u.
      const bool first = at.r == 0;
      const float dbeta = detail::sum_over_columns(first ? r * w : 0.f);
      const float dalpha = detail::sum_over_columns(G_dot_S - (first ? beta * r * u : 0.f));
      if (at.lane == 0 && at.live) {
        const int64_t base = ((int64_t)blockIdx.y * s.slices + at.slice) * T + t, stride = tiles * s.slices * T;
#pragma unroll
        for (int m = 0; m < KPT; ++m) {
          const int64_t i = at.row(m);
          if (i >= s.K) continue;
          part.rows[base * s.K + i] = dq[m];
          part.rows[(stride + base) * s.K + i] = dk[m];
        }
        part.groups[base * R + at.r] = dbeta;
        part.groups[(stride + base) * R + at.r] = dalpha;
      }
      r_next = r;
    }
  }
}

// dq, dk at (slice, t, i) and dβ, dg at (slice, t): the tiles' (and row groups') parts in order.
__global__ void k_delta_add_parts(DeltaParts part, const float* g, float* dq, float* dk, float* dbeta, float* dg,
                                  RecurrenceShape s, int64_t tiles, int64_t R) {
  const int64_t n = s.slices * s.steps * s.K, steps = s.slices * s.steps;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < max(n, steps);
       e += (int64_t)blockDim.x * gridDim.x) {
    if (e < n) {
      float a = 0.f, b = 0.f;
      for (int64_t tile = 0; tile < tiles; ++tile) a += part.rows[tile * n + e], b += part.rows[(tiles + tile) * n + e];
      dq[e] = a, dk[e] = b;
    }
    if (e >= steps) continue;
    float db = 0.f, da = 0.f;
    for (int64_t tile = 0; tile < tiles; ++tile)
      for (int64_t r = 0; r < R; ++r) {
        db += part.groups[(tile * steps + e) * R + r];
        da += part.groups[((tiles + tile) * steps + e) * R + r];
      }
    dbeta[e] = db, dg[e] = expf(g[e]) * da;
  }
}

}  // namespace

void delta_rule_forward(const float* q, const float* k, const float* v, const float* beta, const float* g, float* o,
                        float* state, const RecurrenceShape& s) {
  if (s.slices == 0 || s.V == 0 || (s.steps == 0 && !state)) return;
  const detail::StateLayout l = detail::state_layout(s.K, s.V);
  detail::with_rows_per_thread(l, [&](auto kpt) {
    k_delta_forward<decltype(kpt)::value>
        <<<l.grid(s.slices), l.block(), l.shared_bytes(), stream()>>>({q, k, v, beta, g}, o, state, s);
  });
  TAPELM_CUDA_LAUNCHED();
}

void delta_rule_backward(const float* q, const float* k, const float* v, const float* beta, const float* g,
                         const float* dout, float* dq, float* dk, float* dv, float* dbeta, float* dg,
                         const RecurrenceShape& s) {
  if (s.slices == 0 || s.steps == 0) return;
  const detail::StateLayout l = detail::state_layout(s.K, s.V);
  const int64_t chunks = (s.steps + kChunk - 1) / kChunk, tiles = std::max<int64_t>(l.tiles, 1);
  float* checkpoints = allocate_floats(s.slices * chunks * s.K * s.V);
  float* chunk_states = allocate_floats(s.slices * kChunk * s.K * s.V);
  const DeltaParts part{allocate_floats(2 * tiles * s.slices * s.steps * s.K),
                        allocate_floats(2 * tiles * s.slices * s.steps * l.R)};
  if (s.V > 0) {
    detail::with_rows_per_thread(l, [&](auto kpt) {
      k_delta_backward<decltype(kpt)::value><<<l.grid(s.slices), l.block(), l.shared_bytes(), stream()>>>(
          {q, k, v, beta, g}, dout, checkpoints, chunk_states, part, dv, s);
    });
    TAPELM_CUDA_LAUNCHED();
  } else {  // no values: every gradient but dv (empty) is 0
    fill(part.rows, 2 * s.slices * s.steps * s.K, 0.f);
    fill(part.groups, 2 * s.slices * s.steps * l.R, 0.f);
  }
  k_delta_add_parts<<<grid_for(s.slices * s.steps * std::max<int64_t>(s.K, 1)), kLoopThreads, 0, stream()>>>(
      part, g, dq, dk, dbeta, dg, s, tiles, l.R);
  TAPELM_CUDA_LAUNCHED();
  release(part.groups);
  release(part.rows);
  release(chunk_states);
  release(checkpoints);
}

}  // namespace tapelm::cuda
