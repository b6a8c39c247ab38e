// Sums over axes, deterministic: each output element is summed by one block
// (a fixed thread-to-element assignment and a fixed shared-memory tree) when
// it reduces many elements, or by one thread in index order when it reduces
// few; never with atomics.
#include "autograd/cuda/check.cuh"
#include "autograd/cuda/column_sums.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/strided.cuh"

namespace tapelm::cuda {

using detail::coalesce;
using detail::count;
using detail::offset_of;

namespace {

constexpr int kBlock = 256;

__global__ void k_reduce_thread(const float* x, Strided kept, Strided reduced, float* out, int64_t n_out,
                                int64_t n_red, float scale) {
  const int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (o >= n_out) return;
  const float* base = x + offset_of(o, kept);
  float s = 0.f;
  for (int64_t r = 0; r < n_red; ++r) s += base[offset_of(r, reduced)];
  out[o] = s * scale;
}

__global__ void k_reduce_block(const float* x, Strided kept, Strided reduced, float* out, int64_t n_red, float scale) {
  __shared__ float part[kBlock];
  const int64_t o = blockIdx.x;
  const float* base = x + offset_of(o, kept);
  float s = 0.f;
  for (int64_t r = threadIdx.x; r < n_red; r += kBlock) s += base[offset_of(r, reduced)];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = kBlock / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[o] = part[0] * scale;
}

}  // namespace

void reduce_sum(const float* x, const Strided& kept_view, const Strided& reduced_view, float* out, float scale) {
  const int64_t n_out = count(kept_view), n_red = count(reduced_view);
  if (n_out == 0) return;
  Strided kept = kept_view, reduced = reduced_view;  // each walked alone: coalesced alone
  coalesce({&kept});
  coalesce({&reduced});
  if (kept.ndim == 1 && kept.stride[0] == 1 && reduced.ndim == 1 && reduced.stride[0] == kept.size[0] &&
      n_red >= 4 * kBlock) {  // the columns of a tall matrix
    detail::column_sums(detail::MatrixColumns{x, n_out}, n_red, n_out, {out}, scale);
    return;
  }
  if (n_red >= 4 * kBlock || n_out < 1024) {
    k_reduce_block<<<(unsigned)n_out, kBlock, 0, stream()>>>(x, kept, reduced, out, n_red, scale);
  } else {
    k_reduce_thread<<<(unsigned)((n_out + kBlock - 1) / kBlock), kBlock, 0, stream()>>>(x, kept, reduced, out, n_out,
                                                                                        n_red, scale);
  }
  TAPELM_CUDA_LAUNCHED();
}

}  // namespace tapelm::cuda
