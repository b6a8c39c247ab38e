#include "autograd/gemm.h"

#include "autograd/eigen_maps.h"
#include "autograd/gemm_kernel.h"
#include "autograd/parallel.h"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <limits>
#include <type_traits>

namespace tapelm {

namespace {

// Below this many multiply-adds per thread a product is not worth waking
// another thread for (about 2 µs of one core's GEMM).
constexpr int64_t kMinMacsPerThread = int64_t(1) << 18;
// Packing an element of A or B costs a thread about as much time as this
// many multiply-adds of the kernel: the weight of a tile's
// perimeter against its area when choosing the grid.
constexpr int64_t kPackCost = 10;
// Eigen's kernel slows down on very wide outputs (an LM head's 50,257
// columns ran at 88 GFLOP/s on one core, against 170 in panels of 512-4096
// columns), so a tile is run as panels at most this wide.
constexpr int64_t kMaxPanelCols = 4096;

// Eigen's kernel for C[r0:r0+rows, c0:c0+cols] (+)= bias[c0:] + op(A)[r0:, :]·op(B)[:, c0:], one thread.
template <class T>
void eigen_panel(const T* a, bool ta, const T* b, bool tb, T* c, int64_t m, int64_t n, int64_t k, bool accumulate,
                 const T* bias, int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
  StridedMatrixMap<T> C(c + r0 * n + c0, rows, cols, Eigen::OuterStride<>(n));
  if (bias) {
    const auto row = Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias + c0, cols);
    if (accumulate)
      C.rowwise() += row;
    else
      C.rowwise() = row;
    accumulate = true;
  }
  // A's rows r0.. of op(A); B's columns c0.. of op(B), read in place.
  ConstStridedMatrixMap<T> A(ta ? a + r0 : a + r0 * k, ta ? k : rows, ta ? rows : k, Eigen::OuterStride<>(ta ? m : k));
  ConstStridedMatrixMap<T> B(tb ? b + c0 * k : b + c0, tb ? cols : k, tb ? k : cols, Eigen::OuterStride<>(tb ? k : n));
  auto run = [&](const auto& opA, const auto& opB) {
    if (accumulate)
      C.noalias() += opA * opB;
    else
      C.noalias() = opA * opB;
  };
  if (!ta && !tb)
    run(A, B);
  else if (ta && !tb)
    run(A.transpose(), B);
  else if (!ta && tb)
    run(A, B.transpose());
  else
    run(A.transpose(), B.transpose());
}

// Eigen's kernel over the grid: each thread its own tiles, its own packing.
template <class T>
void eigen_gemm(const T* a, bool ta, const T* b, bool tb, T* c, int64_t m, int64_t n, int64_t k, bool accumulate,
                const T* bias, GemmGrid grid) {
  const int tiles = grid.rows * grid.cols;
  auto work = [&](int thread, int threads) {
    for (int tile = thread; tile < tiles; tile += threads) {
      const auto [i0, i1] = grid_span(tile / grid.cols, grid.rows, ceil_div(m, kGemmMR));
      const auto [j0, j1] = grid_span(tile % grid.cols, grid.cols, ceil_div(n, kGemmNR));
      const int64_t r0 = i0 * kGemmMR, r1 = std::min(m, i1 * kGemmMR);
      const int64_t c0 = j0 * kGemmNR, c1 = std::min(n, j1 * kGemmNR);
      for (int64_t p = c0; p < c1; p += kMaxPanelCols)
        eigen_panel(a, ta, b, tb, c, m, n, k, accumulate, bias, r0, r1 - r0, p, std::min(kMaxPanelCols, c1 - p));
    }
  };
  if (tiles == 1) {
    work(0, 1);
    return;
  }
#pragma omp parallel num_threads(tiles)
  work(omp_get_thread_num(), omp_get_num_threads());
}

}  // namespace

GemmGrid gemm_grid(int64_t m, int64_t n, int64_t k, int threads) {
  const int64_t macs = m * n * std::max<int64_t>(k, 1);
  const int64_t p = std::clamp<int64_t>(macs / kMinMacsPerThread, 1, std::max(threads, 1));
  // In register tiles: a thread's tile is whole kernel tiles.
  const int64_t row_units = ceil_div(m, kGemmMR), col_units = ceil_div(n, kGemmNR);
  GemmGrid best;
  int64_t best_cost = std::numeric_limits<int64_t>::max();
  for (int64_t pr = 1; pr <= p; ++pr) {
    const int64_t pc = p / pr;
    if (pr > row_units || pc > col_units) continue;
    const int64_t tile_rows = ceil_div(row_units, pr) * kGemmMR;
    const int64_t tile_cols = ceil_div(col_units, pc) * kGemmNR;
    // The slowest thread's time: its tile's area plus the panels it packs.
    const int64_t cost = tile_rows * tile_cols + kPackCost * (tile_rows + tile_cols);
    if (cost < best_cost) {
      best_cost = cost;
      best = {(int)pr, (int)pc};
    }
  }
  return best;
}

template <class T>
void gemm(const T* a, bool ta, const T* b, bool tb, T* c, int64_t m, int64_t n, int64_t k, bool accumulate,
          const T* bias) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // C = (accumulate ? C : 0) + bias
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * n + j] = (accumulate ? c[i * n + j] : T(0)) + (bias ? bias[j] : T(0));
    return;
  }
  const GemmGrid grid = gemm_grid(m, n, k, omp_in_parallel() ? 1 : omp_get_max_threads());
  if constexpr (std::is_same_v<T, float> && kGemmKernel)
    gemm_f32(a, ta, b, tb, c, m, n, k, accumulate, bias, grid);
  else
    eigen_gemm(a, ta, b, tb, c, m, n, k, accumulate, bias, grid);
}

template void gemm<float>(const float*, bool, const float*, bool, float*, int64_t, int64_t, int64_t, bool,
                          const float*);
template void gemm<double>(const double*, bool, const double*, bool, double*, int64_t, int64_t, int64_t, bool,
                           const double*);

}  // namespace tapelm
