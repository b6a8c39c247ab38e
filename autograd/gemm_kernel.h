// tapelm's float GEMM, blocked and packed the way GotoBLAS and BLIS do it
// (Goto & van de Geijn, "Anatomy of High-Performance Matrix Multiplication",
// TOMS 2008; Van Zee & van de Geijn, "BLIS", TOMS 2015), with a register
// micro-kernel of kGemmMR rows × kGemmNR columns of C.
//
// gemm_f32 has gemm's contract (gemm.h). For each block of 256 along k, the
// team of grid.rows × grid.cols threads packs op(A) and op(B) once, into
// panels all threads share (each packs its share), then each thread runs the
// micro-kernel over its own tile of C. One thread is a team of one.
//
// Why our own kernel: Eigen's float kernel holds 12 accumulators (a 48×4
// tile), wants its panels per thread, and slows down on wide outputs (an LM
// head's 50,257 columns). The 8×48 AVX-512 tile holds 24 accumulators: 24
// FMAs per 3 vector loads and 8 broadcasts.
//
// Available on x86-64 with AVX-512F or AVX2+FMA (kGemmKernel is true); other
// targets, and double, use Eigen's kernel (gemm.cpp).
#pragma once
#include <cstdint>
#include <utility>

#include "autograd/gemm.h"

namespace tapelm {

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
