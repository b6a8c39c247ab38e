#include "autograd/gemm_kernel.h"

#include "autograd/parallel.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#include <omp.h>

namespace tapelm {

namespace {

// The vector unit: one register of floats and the five instructions the
// micro-kernel needs.
#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16;
// 8 rows × 3 vectors = 24 accumulators, 3 B vectors and a broadcast: 28 of
// the 32 zmm registers (oneDNN's AVX-512 sgemm tile, 48×8 column-major).
// On the lent Xeon it beat 12 × 2 and 6 × 4 vectors on the products whose
// packing is a plain copy.
constexpr int kMR = 8;
constexpr int kNV = 3;
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vload(const float* p) { return _mm512_load_ps(p); }
inline Vec vloadu(const float* p) { return _mm512_loadu_ps(p); }
inline void vstoreu(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec vset1(float x) { return _mm512_set1_ps(x); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
// The first n lanes (0 ≤ n ≤ 16); the rest read as zeros, or are not written.
inline __mmask16 lanes(int64_t n) { return __mmask16((1u << n) - 1); }
inline Vec vload_first(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(lanes(n), p); }
inline void vstore_first(float* p, Vec v, int64_t n) { _mm512_mask_storeu_ps(p, lanes(n), v); }
#else
using Vec = __m256;
constexpr int kLanes = 8;
// 6 rows × 2 vectors = 12 accumulators, 2 B vectors and a broadcast: 15 of
// the 16 ymm registers (the classic Haswell 6×16 kernel).
constexpr int kMR = 6;
constexpr int kNV = 2;
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* p) { return _mm256_load_ps(p); }
inline Vec vloadu(const float* p) { return _mm256_loadu_ps(p); }
inline void vstoreu(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec vset1(float x) { return _mm256_set1_ps(x); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
// The first n lanes (0 ≤ n ≤ 8); the rest read as zeros, or are not written.
inline __m256i lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline Vec vload_first(const float* p, int64_t n) { return _mm256_maskload_ps(p, lanes(n)); }
inline void vstore_first(float* p, Vec v, int64_t n) { _mm256_maskstore_ps(p, lanes(n), v); }
#endif
constexpr int kNR = kNV * kLanes;

static_assert(kMR == kGemmMR && kNR == kGemmNR);

// Cache blocking. A kc×nc block of packed B (256 × 480 floats = 480 KB)
// stays in L2 while one kMR×kc sliver of packed A (8 KB) stays in L1 and
// meets every kNR-column sliver of that block in turn.
constexpr int64_t kKC = 256;
constexpr int64_t kNC = 512 / kNR * kNR;

// A per-thread packing buffer, 64-byte aligned, grown and never shrunk.
class PackBuffer {
 public:
  ~PackBuffer() { std::free(data_); }
  float* get(int64_t n) {
    if (n > capacity_) {
      std::free(data_);
      capacity_ = n;
      data_ = static_cast<float*>(std::aligned_alloc(64, ceil_div(n * (int64_t)sizeof(float), 64) * 64));
    }
    return data_;
  }

 private:
  float* data_ = nullptr;
  int64_t capacity_ = 0;
};

// dst[q * ldd + r] = src[r * ld + q] for an 8×8 block: Intel's
// _MM_TRANSPOSE8_PS sequence (unpack, shuffle, then swap 128-bit halves).
inline void transpose_8x8(const float* src, int64_t ld, float* dst, int64_t ldd) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);  // a_i0 a_j0 a_i1 a_j1 | a_i4 a_j4 a_i5 a_j5
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4)
    for (int h = 0; h < 2; ++h) {
      u[i + 2 * h] = _mm256_shuffle_ps(t[i + h], t[i + h + 2], _MM_SHUFFLE(1, 0, 1, 0));
      u[i + 2 * h + 1] = _mm256_shuffle_ps(t[i + h], t[i + h + 2], _MM_SHUFFLE(3, 2, 3, 2));
    }
  // u[0..3] hold columns 0-3 (low halves) and 4-7 (high halves) of rows 0-3; u[4..7] of rows 4-7.
  for (int q = 0; q < 4; ++q) {
    _mm256_storeu_ps(dst + q * ldd, _mm256_permute2f128_ps(u[q], u[q + 4], 0x20));
    _mm256_storeu_ps(dst + (q + 4) * ldd, _mm256_permute2f128_ps(u[q], u[q + 4], 0x31));
  }
}

// out[p * width + r] = src[r * ld + p] for r < rows, p < kc, and zeros for
// rows ≤ r < width: a packed sliver cut from rows that run along k. Whole
// 8×8 blocks go through registers, the edges element by element.
void pack_transposed(const float* src, int64_t ld, int64_t rows, int64_t kc, int64_t width, float* out) {
  int64_t r0 = 0;
  for (; r0 + 8 <= rows; r0 += 8) {
    int64_t p0 = 0;
    for (; p0 + 8 <= kc; p0 += 8) transpose_8x8(src + r0 * ld + p0, ld, out + p0 * width + r0, width);
    for (; p0 < kc; ++p0)
      for (int64_t r = r0; r < r0 + 8; ++r) out[p0 * width + r] = src[r * ld + p0];
  }
  for (int64_t r = r0; r < rows; ++r)
    for (int64_t p = 0; p < kc; ++p) out[p * width + r] = src[r * ld + p];
  for (int64_t p = 0; p < kc; ++p)
    for (int64_t r = rows; r < width; ++r) out[p * width + r] = 0;
}

// out[p * width + r] = src[p * ld + r] for r < rows, p < kc, and zeros for
// rows ≤ r < width: a packed sliver cut from rows that run across k.
void pack_contiguous(const float* src, int64_t ld, int64_t rows, int64_t kc, int64_t width, float* out) {
  for (int64_t p = 0; p < kc; ++p) {
    const float* from = src + p * ld;
    float* to = out + p * width;
    if (rows == width) {
      std::memcpy(to, from, width * sizeof(float));
      continue;
    }
    for (int64_t r = 0; r < rows; ++r) to[r] = from[r];
    for (int64_t r = rows; r < width; ++r) to[r] = 0;
  }
}

// op(A)[i0:i0+rows, p0:p0+kc] as one sliver of kMR rows stored column by
// column (kMR consecutive values per p); rows past `rows` are zeros.
void pack_a_sliver(const float* a, int64_t lda, bool ta, int64_t i0, int64_t rows, int64_t p0, int64_t kc, float* out) {
  if (ta)
    pack_contiguous(a + p0 * lda + i0, lda, rows, kc, kMR, out);  // A is [k, m]
  else
    pack_transposed(a + i0 * lda + p0, lda, rows, kc, kMR, out);  // A is [m, k]
}

// op(B)[p0:p0+kc, j0:j0+cols] as one sliver of kNR columns stored row by row
// (kNR consecutive values per p); columns past `cols` are zeros.
void pack_b_sliver(const float* b, int64_t ldb, bool tb, int64_t p0, int64_t kc, int64_t j0, int64_t cols, float* out) {
  if (tb)
    pack_transposed(b + j0 * ldb + p0, ldb, cols, kc, kNR, out);  // B is [n, k] (a Linear weight)
  else
    pack_contiguous(b + p0 * ldb + j0, ldb, cols, kc, kNR, out);  // B is [k, n]
}

// C[kMR, NV·kLanes] (ldc) = (beta ? C : 0) + (bias row if given) + Ap · Bp
// over kc: the register tile (Bp's rows are kNR apart). A partial tile
// (rows < kMR or cols < kNR, at C's edges) reads and writes only what is
// inside C.
// Kept out of line: inlined into gemm_f32's one-thread path, GCC (-mtune=generic,
// AVX2) ran out of the 16 ymm registers and kept an accumulator on the stack,
// a load and a store per k step that halved the kernel's speed (42 against 86
// GFLOP/s on one Zen 3 core). On its own the tile gets every register.
template <int NV>
__attribute__((noinline)) void micro_kernel(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc,
                                            bool beta, const float* bias, int64_t rows, int64_t cols) {
  Vec acc[kMR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = vzero();
  for (int64_t p = 0; p < kc; ++p) {
    Vec bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = vload(bp + v * kLanes);
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i) {
      const Vec ai = vset1(ap[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = vfma(ai, bv[v], acc[i][v]);
    }
    ap += kMR;
    bp += kNR;
  }
  // C (+)= the tile (+ the bias row): what is inside C of a partial tile.
  Vec bias_vec[NV];
  for (int v = 0; v < NV; ++v)
    bias_vec[v] = bias ? vload_first(bias + v * kLanes, std::clamp<int64_t>(cols - v * kLanes, 0, kLanes)) : vzero();
  if (rows == kMR && cols == NV * kLanes) {
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        float* ci = c + i * ldc + v * kLanes;
        const Vec x = bias ? vadd(acc[i][v], bias_vec[v]) : acc[i][v];
        vstoreu(ci, beta ? vadd(vloadu(ci), x) : x);
      }
    return;
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int v = 0; v < NV; ++v) {
      const int64_t n = std::clamp<int64_t>(cols - v * kLanes, 0, kLanes);
      float* ci = c + i * ldc + v * kLanes;
      const Vec x = bias ? vadd(acc[i][v], bias_vec[v]) : acc[i][v];
      if (n > 0) vstore_first(ci, beta ? vadd(vload_first(ci, n), x) : x, n);
    }
}

// The register tile for `cols` columns: a last sliver of B that is less than
// kNR wide runs with fewer vectors (n = 128 is 2⅔ slivers of 48).
void multiply_tile(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, bool beta, const float* bias,
                   int64_t rows, int64_t cols) {
  if (cols <= kLanes)
    micro_kernel<1>(kc, ap, bp, c, ldc, beta, bias, rows, cols);
  else if (kNV > 2 && cols <= 2 * kLanes)
    micro_kernel<2>(kc, ap, bp, c, ldc, beta, bias, rows, cols);
  else
    micro_kernel<kNV>(kc, ap, bp, c, ldc, beta, bias, rows, cols);
}

}  // namespace

void gemm_f32(const float* a, bool ta, const float* b, bool tb, float* c, int64_t m, int64_t n, int64_t k,
              bool accumulate, const float* bias, GemmGrid grid) {
  const int64_t lda = ta ? m : k, ldb = tb ? k : n;
  const int64_t a_slivers = ceil_div(m, kMR), b_slivers = ceil_div(n, kNR);
  const int64_t kc_max = std::min(k, kKC);
  const int tiles = grid.rows * grid.cols;

  // One thread's tiles, with its own packed panels: no thread waits on another.
  auto work = [&](int thread, int threads) {
    thread_local PackBuffer packed_a, packed_b;
    for (int tile = thread; tile < tiles; tile += threads) {
      const auto [i0, i1] = grid_span(tile / grid.cols, grid.rows, a_slivers);
      const auto [j0, j1] = grid_span(tile % grid.cols, grid.cols, b_slivers);
      float* const ap = packed_a.get((i1 - i0) * kMR * kc_max);
      float* const bp = packed_b.get(kNC * kc_max);
      for (int64_t p0 = 0; p0 < k; p0 += kKC) {
        const int64_t kc = std::min(kKC, k - p0);
        const bool beta = accumulate || p0 > 0;  // later k blocks add to C
        const float* block_bias = p0 == 0 ? bias : nullptr;
        for (int64_t i = i0; i < i1; ++i)
          pack_a_sliver(a, lda, ta, i * kMR, std::min<int64_t>(kMR, m - i * kMR), p0, kc, ap + (i - i0) * kMR * kc);
        // kNC columns of packed B stay in L2 while every A sliver (in L1) meets them.
        for (int64_t jc = j0; jc < j1; jc += kNC / kNR) {
          const int64_t jend = std::min(j1, jc + kNC / kNR);
          for (int64_t j = jc; j < jend; ++j)
            pack_b_sliver(b, ldb, tb, p0, kc, j * kNR, std::min<int64_t>(kNR, n - j * kNR), bp + (j - jc) * kNR * kc);
          for (int64_t i = i0; i < i1; ++i)
            for (int64_t j = jc; j < jend; ++j)
              multiply_tile(kc, ap + (i - i0) * kMR * kc, bp + (j - jc) * kNR * kc, c + i * kMR * n + j * kNR, n, beta,
                            block_bias ? block_bias + j * kNR : nullptr, std::min<int64_t>(kMR, m - i * kMR),
                            std::min<int64_t>(kNR, n - j * kNR));
        }
      }
    }
  };
  if (tiles == 1) {
    work(0, 1);
    return;
  }
#pragma omp parallel num_threads(tiles)
  work(omp_get_thread_num(), omp_get_num_threads());
}

}  // namespace tapelm

#else

namespace tapelm {
// Never called: gemm.cpp takes Eigen's kernel where kGemmKernel is false.
void gemm_f32(const float*, bool, const float*, bool, float*, int64_t, int64_t, int64_t, bool, const float*, GemmGrid) {
  std::abort();
}
}  // namespace tapelm

#endif
