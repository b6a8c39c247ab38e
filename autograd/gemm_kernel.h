// tapelm's float GEMM, blocked and packed the way GotoBLAS and BLIS do it
// (Goto & van de Geijn, "Anatomy of High-Performance Matrix Multiplication",
// TOMS 2008; Van Zee & van de Geijn, "BLIS", TOMS 2015), with a register
// micro-kernel of kGemmMR rows × kGemmNR columns of C.
//
// gemm_f32 has gemm's contract (gemm.h). Each of the grid.rows × grid.cols
// threads packs the panels of its own tile of C, per block of 256 along k,
// and runs the micro-kernel over them; no thread waits on another. (Panels
// packed once and shared by the team, with a barrier per k block, measured
// slower on the lent 16-core Xeon: 295-638 against 756-1017 GFLOP/s on the
// small QKV product, 10-20% less on the mid and GPT-2 shapes, 5-10% more on
// the LM head's forward only.)
//
// Why our own kernel: Eigen's float kernel holds 12 accumulators (a 48×4
// tile) and slows down on wide outputs (an LM head's 50,257 columns); the
// 8×48 AVX-512 tile holds 24: 24 FMAs per 3 vector loads and 8 broadcasts.
// On one core of the lent Xeon the two are within noise of each other on the
// training step's products; on the head and at 16 threads ours is ahead
// (bench/gemm_bench.cpp, docs/performance.md "Many cores").
//
// Available on x86-64 with AVX-512F or AVX2+FMA (kGemmKernel is true); other
// targets, and double, use Eigen's kernel (gemm.cpp).
#pragma once
#include <cstdint>
#include <utility>

namespace tapelm {

// A product's tiles: rows × cols of them, one per thread (gemm.h's gemm_grid).
struct GemmGrid {
  int rows = 1, cols = 1;
};

#if defined(__AVX512F__)
inline constexpr bool kGemmKernel = true;
inline constexpr int64_t kGemmMR = 8, kGemmNR = 48;
#elif defined(__AVX2__) && defined(__FMA__)
inline constexpr bool kGemmKernel = true;
inline constexpr int64_t kGemmMR = 6, kGemmNR = 16;
#else
inline constexpr bool kGemmKernel = false;
inline constexpr int64_t kGemmMR = 1, kGemmNR = 16;
#endif

void gemm_f32(const float* a, bool ta, const float* b, bool tb, float* c, int64_t m, int64_t n, int64_t k,
              bool accumulate, const float* bias, GemmGrid grid);

// Part `part` of `parts` of `units` units, as [begin, end) in units: the
// rows or columns (in register tiles) of one tile of the grid.
inline std::pair<int64_t, int64_t> grid_span(int64_t part, int64_t parts, int64_t units) {
  return {units * part / parts, units * (part + 1) / parts};
}

}  // namespace tapelm
