// Column sums over many rows (a bias's or a norm weight's gradient over a
// batch of 16k rows), deterministic and coalesced, in two passes. Pass 1: a
// block of 32 columns × 8 row lanes sums one chunk of kChunkRows rows (lanes
// added in a fixed order) into part[sum, chunk, col]; pass 2 adds the chunks
// in order. One thread per column over every row would leave 768 threads to
// do a 16k-row step's work one row at a time.
//
// Terms is a functor with `static constexpr int kSums` and
// `__device__ void operator()(int64_t row, int64_t col, float* terms) const`
// giving each sum's term at (row, col).
#pragma once
#include "autograd/cuda/check.cuh"
#include "autograd/cuda/runtime.h"

namespace tapelm::cuda::detail {

constexpr int kChunkRows = 256;

template <class Terms>
__global__ void k_column_chunks(Terms terms, float* part, int64_t rows, int64_t cols) {
  constexpr int S = Terms::kSums;
  __shared__ float lanes[S][8][33];
  const int64_t j = blockIdx.x * 32 + threadIdx.x, chunk = blockIdx.y, chunks = gridDim.y;
  float sum[S] = {};
  if (j < cols) {
    const int64_t end = min(rows, (chunk + 1) * kChunkRows);
    for (int64_t r = chunk * kChunkRows + threadIdx.y; r < end; r += 8) {
      float t[S];
      terms(r, j, t);
      for (int s = 0; s < S; ++s) sum[s] += t[s];
    }
  }
  for (int s = 0; s < S; ++s) lanes[s][threadIdx.y][threadIdx.x] = sum[s];
  __syncthreads();
  if (threadIdx.y != 0 || j >= cols) return;
  for (int s = 0; s < S; ++s) {
    for (int y = 1; y < 8; ++y) sum[s] += lanes[s][y][threadIdx.x];
    part[(s * chunks + chunk) * cols + j] = sum[s];
  }
}

template <int S>
struct Outputs {
  float* out[S];
};

template <int S>
__global__ void k_add_chunks(const float* part, Outputs<S> outs, int64_t chunks, int64_t cols, float scale) {
  const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (j >= cols) return;
  for (int s = 0; s < S; ++s) {
    if (!outs.out[s]) continue;
    float v = 0.f;
    for (int64_t c = 0; c < chunks; ++c) v += part[(s * chunks + c) * cols + j];
    outs.out[s][j] = v * scale;
  }
}

// The terms of a plain row-major matrix x (row stride ld): its column sums.
struct MatrixColumns {
  static constexpr int kSums = 1;
  const float* x;
  int64_t ld;
  __device__ void operator()(int64_t row, int64_t col, float* terms) const { terms[0] = x[row * ld + col]; }
};

// outs.out[s][col] = scale · Σ_row terms(row, col)[s]; a null output is skipped.
template <class Terms>
void column_sums(const Terms& terms, int64_t rows, int64_t cols, Outputs<Terms::kSums> outs, float scale = 1.f) {
  if (cols == 0) return;
  const int64_t chunks = rows == 0 ? 1 : (rows + kChunkRows - 1) / kChunkRows;
  float* part = static_cast<float*>(allocate(Terms::kSums * chunks * cols * sizeof(float)));
  k_column_chunks<<<dim3((unsigned)((cols + 31) / 32), (unsigned)chunks), dim3(32, 8), 0, stream()>>>(terms, part, rows,
                                                                                                      cols);
  TAPELM_CUDA_LAUNCHED();
  k_add_chunks<<<(unsigned)((cols + 255) / 256), 256, 0, stream()>>>(part, outs, chunks, cols, scale);
  TAPELM_CUDA_LAUNCHED();
  release(part);  // stream-ordered: after the kernels that read it
}

}  // namespace tapelm::cuda::detail
