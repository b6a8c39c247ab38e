#include "autograd/gemm.h"

#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <limits>

namespace tapelm {

namespace {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Block = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using ConstBlock = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;

// Below this many multiply-adds per thread a product is not worth waking
// another thread for (about 2 µs of one core's GEMM).
constexpr int64_t kMinMacsPerThread = int64_t(1) << 18;
// Tile widths are multiples of one AVX-512 float vector, so tiles meet on
// vector boundaries of C's rows.
constexpr int64_t kColGrain = 16;
// Packing an element of A or B costs about as much time as this many
// multiply-adds of the kernel: the weight of a tile's perimeter against its
// area when choosing the grid.
constexpr int64_t kPackCost = 10;
// Eigen's kernel slows down on very wide outputs (an LM head's 50,257
// columns ran at 88 GFLOP/s on one core, against 170 in panels of 512-4096
// columns), so a tile is run as panels at most this wide.
constexpr int64_t kMaxPanelCols = 4096;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// C[r0:r0+rows, c0:c0+cols] (+)= bias[c0:] + op(A)[r0:, :]·op(B)[:, c0:], one thread.
template <class T>
void gemm_panel(const T* a, bool ta, const T* b, bool tb, T* c, int64_t m, int64_t n, int64_t k, bool accumulate,
                const T* bias, int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
  Block<T> C(c + r0 * n + c0, rows, cols, Eigen::OuterStride<>(n));
  if (bias) {
    const auto row = Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias + c0, cols);
    if (accumulate) C.rowwise() += row;
    else C.rowwise() = row;
    accumulate = true;
  }
  if (k == 0) {
    if (!accumulate) C.setZero();
    return;
  }
  // A's rows r0.. of op(A); B's columns c0.. of op(B), read in place.
  ConstBlock<T> A(ta ? a + r0 : a + r0 * k, ta ? k : rows, ta ? rows : k, Eigen::OuterStride<>(ta ? m : k));
  ConstBlock<T> B(tb ? b + c0 * k : b + c0, tb ? cols : k, tb ? k : cols, Eigen::OuterStride<>(tb ? k : n));
  auto run = [&](const auto& opA, const auto& opB) {
    if (accumulate) C.noalias() += opA * opB;
    else C.noalias() = opA * opB;
  };
  if (!ta && !tb) run(A, B);
  else if (ta && !tb) run(A.transpose(), B);
  else if (!ta && tb) run(A, B.transpose());
  else run(A.transpose(), B.transpose());
}

template <class T>
void gemm_tile(const T* a, bool ta, const T* b, bool tb, T* c, int64_t m, int64_t n, int64_t k, bool accumulate,
               const T* bias, int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
  if (rows <= 0) return;
  for (int64_t p = c0; p < c0 + cols; p += kMaxPanelCols)
    gemm_panel(a, ta, b, tb, c, m, n, k, accumulate, bias, r0, rows, p, std::min(kMaxPanelCols, c0 + cols - p));
}

}  // namespace

GemmGrid gemm_grid(int64_t m, int64_t n, int64_t k, int threads) {
  const int64_t macs = m * n * std::max<int64_t>(k, 1);
  const int64_t p = std::clamp<int64_t>(macs / kMinMacsPerThread, 1, std::max(threads, 1));
  GemmGrid best;
  int64_t best_cost = std::numeric_limits<int64_t>::max();
  for (int64_t pr = 1; pr <= p; ++pr) {
    const int64_t pc = p / pr;
    if (pr > m || (pc > 1 && pc > ceil_div(n, kColGrain))) continue;
    const int64_t tile_rows = ceil_div(m, pr);
    const int64_t tile_cols = std::min(n, ceil_div(ceil_div(n, pc), kColGrain) * kColGrain);
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
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const GemmGrid g = gemm_grid(m, n, k, threads);
  if (g.rows * g.cols == 1) {
    gemm_tile(a, ta, b, tb, c, m, n, k, accumulate, bias, 0, m, 0, n);
    return;
  }
  // Column boundaries on kColGrain multiples; rows split evenly.
  const int64_t col_step = ceil_div(ceil_div(n, g.cols), kColGrain) * kColGrain;
#pragma omp parallel num_threads(g.rows * g.cols)
  {
    const int t = omp_get_thread_num();
    const int64_t i = t / g.cols, j = t % g.cols;
    const int64_t r0 = i * m / g.rows, r1 = (i + 1) * m / g.rows;
    const int64_t c0 = std::min(n, j * col_step), c1 = j + 1 == g.cols ? n : std::min(n, (j + 1) * col_step);
    gemm_tile(a, ta, b, tb, c, m, n, k, accumulate, bias, r0, r1 - r0, c0, c1 - c0);
  }
}

template void gemm<float>(const float*, bool, const float*, bool, float*, int64_t, int64_t, int64_t, bool, const float*);
template void gemm<double>(const double*, bool, const double*, bool, double*, int64_t, int64_t, int64_t, bool,
                           const double*);

}  // namespace tapelm
