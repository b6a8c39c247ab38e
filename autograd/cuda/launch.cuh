// Internal to autograd/cuda/*.cu: the grid of a grid-stride loop over n
// items, 256 threads a block, at most 32 blocks per SM of an H100 (132 SMs);
// past that the loop strides (one block at least, so n = 0 launches too).
#pragma once
#include <algorithm>
#include <cstdint>

namespace tapelm::cuda {

constexpr int kLoopThreads = 256;

inline unsigned grid_for(int64_t n) {
  return (unsigned)std::max<int64_t>(1, std::min<int64_t>((n + kLoopThreads - 1) / kLoopThreads, 132 * 32));
}

}  // namespace tapelm::cuda
