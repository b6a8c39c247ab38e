// autograd/gemm.h against a plain double-precision triple loop, within the
// classical rounding-error bound of a dot product: every
// combination of transposes, accumulate and bias, on shapes that leave
// partial register tiles and cross each cache block (kc 256, nc 512, mc
// 128·MR rows), on one thread and on a tile grid.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "autograd/gemm.h"

namespace {

struct GemmCase {
  int64_t m, n, k;
};

template <class T>
void check_gemm(const GemmCase& s, bool ta, bool tb, bool accumulate, bool with_bias, int threads) {
  std::mt19937 rng(uint32_t(s.m * 131 + s.n * 17 + s.k));
  std::uniform_real_distribution<double> uniform(-1, 1);
  auto fill = [&](std::vector<T>& v) {
    for (auto& x : v) x = T(uniform(rng));
  };
  std::vector<T> a(s.m * s.k), b(s.k * s.n), c(s.m * s.n), bias(s.n);
  fill(a), fill(b), fill(c), fill(bias);
  const std::vector<T> c0 = c;
  // op(A)[i, p] and op(B)[p, j] from their row-major storage.
  auto A = [&](int64_t i, int64_t p) { return double(ta ? a[p * s.m + i] : a[i * s.k + p]); };
  auto B = [&](int64_t p, int64_t j) { return double(tb ? b[j * s.k + p] : b[p * s.n + j]); };

  omp_set_num_threads(threads);
  tapelm::gemm(a.data(), ta, b.data(), tb, c.data(), s.m, s.n, s.k, accumulate, with_bias ? bias.data() : nullptr);
  omp_set_num_threads(1);

  // Higham's bound for a sum of k + 2 rounded terms (accumulate and bias
  // included): |error| ≤ (k + 2)·u·Σ|term|, u the unit roundoff. A correct
  // GEMM stays far inside it; a dropped or doubled term is far outside.
  const double u = std::numeric_limits<T>::epsilon() / 2;
  double worst = 0;  // error / bound
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t j = 0; j < s.n; ++j) {
      double want = (accumulate ? double(c0[i * s.n + j]) : 0.0) + (with_bias ? double(bias[j]) : 0.0);
      double magnitude = std::abs(want);
      for (int64_t p = 0; p < s.k; ++p) {
        want += A(i, p) * B(p, j);
        magnitude += std::abs(A(i, p) * B(p, j));
      }
      const double bound = (double(s.k) + 2) * u * magnitude + 1e-300;
      worst = std::max(worst, std::abs(c[i * s.n + j] - want) / bound);
    }
  EXPECT_LE(worst, 1.0) << "m=" << s.m << " n=" << s.n << " k=" << s.k << " ta=" << ta << " tb=" << tb
                        << " accumulate=" << accumulate << " bias=" << with_bias << " threads=" << threads;
}

}  // namespace

TEST(Gemm, Float32MatchesDoubleLoopOnEdgeShapes) {
  const std::vector<GemmCase> cases = {{1, 1, 1},     {5, 7, 3},     {13, 33, 17}, {12, 32, 256},
                                       {25, 49, 257}, {37, 515, 40}, {3, 1030, 9}, {40, 20, 600}};
  for (const GemmCase& s : cases)
    for (int flags = 0; flags < 16; ++flags) check_gemm<float>(s, flags & 1, flags & 2, flags & 4, flags & 8, 1);
}

TEST(Gemm, Float32TileGridMatches) {
  // Large enough for a grid of several tiles, and more rows than one packed
  // block of A (mc).
  for (const GemmCase& s : {GemmCase{1700, 45, 70}, GemmCase{160, 600, 300}})
    for (int flags = 0; flags < 16; ++flags)
      for (int threads : {1, 2, 3}) check_gemm<float>(s, flags & 1, flags & 2, flags & 4, flags & 8, threads);
}

TEST(Gemm, Float64MatchesDoubleLoop) {
  for (const GemmCase& s : {GemmCase{13, 33, 17}, GemmCase{37, 515, 300}})
    for (int flags = 0; flags < 16; ++flags) check_gemm<double>(s, flags & 1, flags & 2, flags & 4, flags & 8, 2);
}

TEST(Gemm, EmptyInnerDimensionGivesBiasOrZeroOrKeepsC) {
  for (bool accumulate : {false, true})
    for (bool with_bias : {false, true}) check_gemm<float>({6, 9, 0}, false, false, accumulate, with_bias, 1);
}
