// The cumulative sum along an axis (ops/cumsum.cpp) on the GPU: x viewed as
// [outer, n, inner], a thread per (outer, inner) line adds its n elements in
// order (from the end for the reverse sum, the backward's): the CPU's order,
// no atomics.
#include <algorithm>

#include "autograd/cuda/check.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/launch.cuh"

namespace tapelm::cuda {

namespace {

__global__ void k_cumsum(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, bool reverse) {
  const int64_t lines = outer * inner;
  for (int64_t l = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; l < lines; l += (int64_t)blockDim.x * gridDim.x) {
    const int64_t o = l / inner, j = l % inner;
    float acc = 0.f;
    for (int64_t s = 0; s < n; ++s) {
      const int64_t i = reverse ? n - 1 - s : s, at = (o * n + i) * inner + j;
      acc += x[at];
      y[at] = acc;
    }
  }
}

}  // namespace

void cumsum(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, bool reverse) {
  const int64_t lines = outer * inner;
  if (lines == 0 || n == 0) return;
  k_cumsum<<<grid_for(lines), kLoopThreads, 0, stream()>>>(x, y, outer, n, inner, reverse);
  TAPELM_CUDA_LAUNCHED();
}

}  // namespace tapelm::cuda
