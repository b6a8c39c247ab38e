// Walking a Strided view (kernels.h) in the .cu files: an element's offset
// from its row-major index, and the number of elements.
#pragma once
#include "autograd/cuda/kernels.h"

namespace tapelm::cuda::detail {

// The offset of linear index i (row-major over s.size) through s.stride.
__device__ inline int64_t offset_of(int64_t i, const Strided& s) {
  int64_t off = 0;
  for (int d = s.ndim - 1; d >= 0; --d) {
    const int64_t idx = i % s.size[d];
    i /= s.size[d];
    off += idx * s.stride[d];
  }
  return off;
}

inline int64_t count(const Strided& s) {
  int64_t n = 1;
  for (int d = 0; d < s.ndim; ++d) n *= s.size[d];
  return n;
}

}  // namespace tapelm::cuda::detail
