// The inverse of a unit lower-triangular matrix (ops/unit_tril_inverse.cpp)
// on the GPU: N and X [matrices, C, C], X = (I + N)⁻¹ by forward
// substitution. A thread per column j of a matrix walks its rows in order,
// X_ij = −Σ_{j≤m<i} N_im X_mj, reading back the entries it wrote; the
// threads of a warp hold neighbouring columns, so they read one N_im
// together and X's rows coalesced. No atomics: the same bits every run.
#include "autograd/cuda/check.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/launch.cuh"

namespace tapelm::cuda {

namespace {

__global__ void k_unit_tril_inverse(const float* N, float* X, int64_t matrices, int64_t C) {
  const int64_t n = matrices * C;
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < n; c += (int64_t)blockDim.x * gridDim.x) {
    const int64_t j = c % C, at = (c / C) * C * C;
    const float* Nb = N + at;
    float* Xb = X + at;
    for (int64_t i = 0; i < j; ++i) Xb[i * C + j] = 0.f;
    Xb[j * C + j] = 1.f;
    for (int64_t i = j + 1; i < C; ++i) {
      float acc = 0.f;
      for (int64_t m = j; m < i; ++m) acc -= Nb[i * C + m] * Xb[m * C + j];
      Xb[i * C + j] = acc;
    }
  }
}

}  // namespace

void unit_tril_inverse(const float* N, float* X, int64_t matrices, int64_t C) {
  if (matrices * C == 0) return;
  k_unit_tril_inverse<<<grid_for(matrices * C), kLoopThreads, 0, stream()>>>(N, X, matrices, C);
  TAPELM_CUDA_LAUNCHED();
}

}  // namespace tapelm::cuda
