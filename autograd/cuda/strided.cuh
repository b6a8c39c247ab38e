// Walking a Strided view (kernels.h) in the .cu files: an element's offset
// from its row-major index, the number of elements, and the host-side
// coalescing that lets most views be walked with one or two divisions.
#pragma once
#include <cstdint>
#include <initializer_list>

#include "autograd/cuda/kernels.h"

namespace tapelm::cuda::detail {

// The offset of linear index i (row-major over s.size) through s.stride. I
// is the index type: uint32_t when the view has fewer than 2^31 elements
// (32-bit division is several times cheaper than 64-bit on the GPU). The
// outermost index needs no division: it is what is left of i.
template <class I>
__device__ inline int64_t offset_of(I i, const Strided& s) {
  int64_t off = 0;
  for (int d = s.ndim - 1; d > 0; --d) {
    const I size = (I)s.size[d];
    off += (int64_t)(i % size) * s.stride[d];
    i /= size;
  }
  return off + (int64_t)i * s.stride[0];
}

inline int64_t count(const Strided& s) {
  int64_t n = 1;
  for (int d = 0; d < s.ndim; ++d) n *= s.size[d];
  return n;
}

// Whether a launch over n elements can index with 32 bits (a grid-stride loop
// adds at most 2^31 to an index below n).
inline bool fits_32_bits(int64_t n) { return n < (int64_t{1} << 31); }

// Rewrites views of the same sizes, walked together in row-major order, with
// as few dimensions as walk the same elements: size-1 dimensions dropped,
// and neighbours d, d+1 merged where every view steps from one to the other
// as one dimension would (stride[d] = stride[d+1]·size[d+1]). A contiguous
// tensor becomes one dimension of stride 1; a bias broadcast over rows two.
inline void coalesce(std::initializer_list<Strided*> views) {
  const Strided& first = **views.begin();
  int kept = 0;
  for (int d = 0; d < first.ndim; ++d) {
    if (first.size[d] == 1) continue;
    bool merge = kept > 0;
    for (const Strided* v : views)
      merge = merge && v->stride[kept - 1] == v->stride[d] * v->size[d];
    for (Strided* v : views) {
      if (merge) {
        v->size[kept - 1] *= v->size[d];
        v->stride[kept - 1] = v->stride[d];
      } else {
        v->size[kept] = v->size[d];
        v->stride[kept] = v->stride[d];
      }
    }
    if (!merge) ++kept;
  }
  for (Strided* v : views) {
    if (kept == 0) v->size[0] = 1, v->stride[0] = 0;  // one element
    v->ndim = kept == 0 ? 1 : kept;
  }
}

}  // namespace tapelm::cuda::detail
