// The one dense matrix product the ops call: C = op(A)·op(B), or C += it,
// optionally plus a bias row broadcast over C's rows (F.linear's bias).
// Row-major, natural leading dimensions: A is [m,k] ([k,m] if ta), B is
// [k,n] ([n,k] if tb), C is [m,n], bias is [n].
//
// Outside an OpenMP parallel region and with more than one thread, C is cut
// into a grid of tiles, one per thread (gemm_grid), chosen to keep each
// thread's share equal and the panels it reads small. Inside a parallel
// region (one product per head, per chunk) it runs on the calling thread.
//
// float runs tapelm's own packed kernel (gemm_kernel.h) on each tile;
// double (gradient checks), and CPUs without AVX2/AVX-512, run Eigen's
// single-threaded kernel on each tile. Eigen's own threaded product reached
// 55-60% of PyTorch's GEMM at 4 threads on the 16-core machine
// (shared/measurements/gemm-16core.md).
#pragma once
#include <cstdint>

#include "autograd/gemm_kernel.h"

namespace tapelm {

template <class T>
void gemm(const T* a, bool ta, const T* b, bool tb, T* c, int64_t m, int64_t n, int64_t k, bool accumulate = false,
          const T* bias = nullptr);

// The tile grid gemm uses for an m×n×k product on `threads` threads (rows ×
// columns of tiles; rows·cols ≤ threads; GemmGrid in gemm_kernel.h). Exposed
// for tests and benchmarks.
GemmGrid gemm_grid(int64_t m, int64_t n, int64_t k, int threads);

}  // namespace tapelm
