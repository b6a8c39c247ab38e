// The optimizer's kernels: AdamW's update (torch.optim.AdamW's order, as
// optim/optimizer.cpp), a deterministic Σx² for the gradient norm, a scale.
#include <vector>

#include "autograd/cuda/check.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/runtime.h"

namespace tapelm::cuda {

namespace {

constexpr int kBlock = 256, kGrid = 512;

__global__ void k_adamw(float* p, const float* g, float* m, float* v, int64_t n, float lr, float b1, float b2,
                        float eps, float wd, float bc1, float bc2s) {
  const float decay = 1.f - lr * wd, step_size = lr / bc1;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    const float gr = g[i];
    float th = p[i] * decay;
    const float mi = b1 * m[i] + (1.f - b1) * gr;
    const float vi = b2 * v[i] + (1.f - b2) * gr * gr;
    th -= step_size * mi / (sqrtf(vi) / bc2s + eps);
    p[i] = th, m[i] = mi, v[i] = vi;
  }
}

// Block b sums the elements i ≡ thread (mod kBlock·kGrid) it owns, then its
// tree: partial[b]. The host adds the partials in block order, in double.
__global__ void k_sum_squares(const float* x, int64_t n, double* partial) {
  __shared__ double part[kBlock];
  double s = 0;
  for (int64_t i = blockIdx.x * (int64_t)kBlock + threadIdx.x; i < n; i += (int64_t)kBlock * kGrid)
    s += (double)x[i] * x[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = kBlock / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = part[0];
}

__global__ void k_scale(float* x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x)
    x[i] *= s;
}

int blocks_for(int64_t n) { return (int)std::min<int64_t>((n + kBlock - 1) / kBlock, 4096); }

}  // namespace

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1, float beta2, float eps,
                float weight_decay, float bias_correction1, float bias_correction2_sqrt) {
  if (n == 0) return;
  k_adamw<<<blocks_for(n), kBlock, 0, stream()>>>(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay,
                                                  bias_correction1, bias_correction2_sqrt);
  TAPELM_CUDA_LAUNCHED();
}

std::vector<double> sum_of_squares(const std::vector<Span>& pieces) {
  std::vector<double> sums(pieces.size(), 0.0);
  if (pieces.empty()) return sums;
  double* partial = static_cast<double*>(allocate(pieces.size() * kGrid * sizeof(double)));
  for (size_t t = 0; t < pieces.size(); ++t) {
    if (pieces[t].n == 0) {
      TAPELM_CUDA(cudaMemsetAsync(partial + t * kGrid, 0, kGrid * sizeof(double), stream()));
      continue;
    }
    k_sum_squares<<<kGrid, kBlock, 0, stream()>>>(pieces[t].data, pieces[t].n, partial + t * kGrid);
    TAPELM_CUDA_LAUNCHED();
  }
  std::vector<double> host(pieces.size() * kGrid);
  copy_to_host(host.data(), partial, host.size() * sizeof(double));  // the one wait, for every piece
  release(partial);
  for (size_t t = 0; t < pieces.size(); ++t)
    for (int b = 0; b < kGrid; ++b) sums[t] += host[t * kGrid + b];
  return sums;
}

void scale_inplace(float* x, int64_t n, float s) {
  if (n == 0) return;
  k_scale<<<blocks_for(n), kBlock, 0, stream()>>>(x, n, s);
  TAPELM_CUDA_LAUNCHED();
}

}  // namespace tapelm::cuda
