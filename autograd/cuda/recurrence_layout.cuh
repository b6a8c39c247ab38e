// Internal to the matrix-state recurrences (recurrence.cu, delta_rule.cu):
// how a block holds K×V states in registers, and the sums over its rows.
//
// Thread (j, r, p) of a block owns column j (of a tile of VT ≤ 32 columns)
// and rows r, r + R, r + 2R, … (KPT of them) of slice p of the block (P
// slices a block when states are small). VT and R are powers of two, so a
// block is whole warps and a warp's VT-lane groups are one row group each:
// sums over a tile's columns are butterfly shuffles of width VT; sums over
// rows go through shared memory, added in row-group order.
#pragma once
#include <algorithm>
#include <type_traits>

#include "autograd/cuda/kernels.h"

namespace tapelm::cuda::detail {

inline int next_pow2(int64_t n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

// A launch's thread layout.
struct StateLayout {
  int VT, R, P, KPT;
  int64_t tiles;  // column tiles of VT over V
  dim3 block() const { return dim3(VT, R, P); }
  dim3 grid(int64_t slices) const {
    return dim3((unsigned)((slices + P - 1) / P), (unsigned)std::max<int64_t>(tiles, 1));
  }
  // Two halves of [P][R][VT] floats: sum_over_rows alternates between them.
  size_t shared_bytes() const { return 2 * sizeof(float) * VT * R * P; }
};

// KPT rows a thread: 8 up to K = 256 (R ≤ 32 row groups), 32 up to 1024.
inline StateLayout state_layout(int64_t K, int64_t V) {
  StateLayout l;
  l.KPT = K <= 256 ? 8 : 32;
  l.VT = std::min(32, next_pow2(V));
  l.R = next_pow2((K + l.KPT - 1) / l.KPT);
  l.P = std::max(1, 64 / (l.VT * l.R));  // small states: several slices a block
  l.tiles = (V + l.VT - 1) / l.VT;
  return l;
}

// f(std::integral_constant<int, KPT>) for the layout's KPT.
template <class F>
void with_rows_per_thread(const StateLayout& l, F f) {
  if (l.KPT == 8) return f(std::integral_constant<int, 8>());
  return f(std::integral_constant<int, 32>());
}

// Which slice, column and rows a thread holds.
struct StatePlace {
  int lane, r, p;
  int64_t slice, j;
  bool live;  // a real slice and column (others compute zeros and join the barriers and shuffles)
  __device__ StatePlace(int64_t slices, int64_t V) {
    lane = threadIdx.x, r = threadIdx.y, p = threadIdx.z;
    slice = (int64_t)blockIdx.x * blockDim.z + p;
    j = (int64_t)blockIdx.y * blockDim.x + lane;
    live = slice < slices && j < V;
    if (!live) slice = 0, j = 0;  // in-bounds addresses for the guarded loads
  }
  __device__ int64_t row(int m) const { return r + (int64_t)blockDim.y * m; }
};

// Entry (i, j) of state n of a slice's `count` states, [slices][count][K][V].
__device__ inline int64_t state_index(int64_t K, int64_t V, int64_t slice, int64_t count, int64_t n, int64_t i,
                                      int64_t j) {
  return ((slice * count + n) * K + i) * V + j;
}

// The thread's rows of state n of its slice's `count` in `states`
// ([slices][count][K][V]) into S: 0 past K, for a thread not live, and when
// there are no states (null).
template <int KPT>
__device__ inline void load_state(float (&S)[KPT], const float* states, const StatePlace& at, int64_t K, int64_t V,
                                  int64_t count = 1, int64_t n = 0) {
#pragma unroll
  for (int m = 0; m < KPT; ++m) {
    const int64_t i = at.row(m);
    S[m] = states && at.live && i < K ? states[state_index(K, V, at.slice, count, n, i, at.j)] : 0.f;
  }
}

// S, the thread's rows, into state n of its slice's `count` in `states`.
template <int KPT>
__device__ inline void store_state(const float (&S)[KPT], float* states, const StatePlace& at, int64_t K, int64_t V,
                                   int64_t count = 1, int64_t n = 0) {
  if (!at.live) return;
#pragma unroll
  for (int m = 0; m < KPT; ++m) {
    const int64_t i = at.row(m);
    if (i < K) states[state_index(K, V, at.slice, count, n, i, at.j)] = S[m];
  }
}

// The thread's part of (Sᵀx)_j = Σ_i S[i,j] x_i, over its rows (x: one
// step's K values); sum_over_rows adds the row groups' parts.
template <int KPT>
__device__ inline float rows_dot(const float (&S)[KPT], const StatePlace& at, int64_t K, const float* x) {
  float part = 0.f;
#pragma unroll
  for (int m = 0; m < KPT; ++m) {
    const int64_t i = at.row(m);
    if (at.live && i < K) part += S[m] * x[i];
  }
  return part;
}

// Σ over the R row groups of each thread's `part` for its column and slice,
// added in row-group order, returned to every thread. `turn` counts the
// calls: they alternate between the two halves of `shared`, so one barrier a
// call suffices (a half is written again only after the next call's barrier,
// which every thread reaches after reading it). Every thread must call it.
__device__ inline float sum_over_rows(float* shared, int& turn, float part) {
  const int VT = blockDim.x, R = blockDim.y;
  float* mine = shared + (turn & 1) * VT * R * blockDim.z + threadIdx.z * R * VT;
  ++turn;
  mine[threadIdx.y * VT + threadIdx.x] = part;
  __syncthreads();
  float acc = 0.f;
  for (int r = 0; r < R; ++r) acc += mine[r * VT + threadIdx.x];
  return acc;
}

// Σ over the tile's VT columns of x, in every lane (a butterfly: the same bits in each).
__device__ inline float sum_over_columns(float x) {
  for (int off = blockDim.x / 2; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off, blockDim.x);
  return x;
}

}  // namespace tapelm::cuda::detail
