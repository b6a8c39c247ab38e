// Internal: iterate an output shape row by row (rows = all dims but the last)
// with N inputs read through broadcast strides. The callback gets, per row,
// the output offset, each input's start offset and step along the last axis,
// and the row length, so it can run a tight (vectorisable) inner loop.
#pragma once
#include <array>

#include "autograd/parallel.h"
#include "autograd/shape.h"

namespace tapelm::detail {

template <size_t N, class F>
void broadcast_rows(const Shape& out, const std::array<Shape, N>& strides, F&& f) {
  const int64_t nd = (int64_t)out.size();
  const int64_t len = nd == 0 ? 1 : out[nd - 1];
  const int64_t rows = len == 0 ? 0 : numel_of(out) / len;
  std::array<int64_t, N> step{};
  for (size_t k = 0; k < N; ++k) step[k] = nd == 0 ? 0 : strides[k][nd - 1];
#pragma omp parallel for schedule(static) if (rows * len > kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    std::array<int64_t, N> start{};
    int64_t rem = r;
    for (int64_t d = nd - 2; d >= 0; --d) {
      int64_t idx = rem % out[d];
      rem /= out[d];
      for (size_t k = 0; k < N; ++k) start[k] += idx * strides[k][d];
    }
    f(r * len, start, step, len);
  }
}

}  // namespace tapelm::detail
