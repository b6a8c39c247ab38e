// The depthwise causal convolution (ops/conv1d.cpp; Mamba's short
// convolution) on the GPU: x [B,T,C], w [C,K], y_{t,c} = b_c + Σ_j w_{c,j}
// x_{t−K+1+j, c}. One thread per output element for y and for dx (each reads
// its K inputs: K is small, 4 in Mamba); dw and db are column sums over the
// B·T rows (column_sums.cuh: a fixed order, no atomics), dw's columns being
// the (c, j) pairs.
#include "autograd/cuda/check.cuh"
#include "autograd/cuda/column_sums.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/launch.cuh"

namespace tapelm::cuda {

namespace {

struct ConvDims {
  int64_t B, T, C, K;
};

__global__ void k_conv_forward(const float* x, const float* w, const float* bias, float* y, ConvDims d) {
  const int64_t n = d.B * d.T * d.C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    const int64_t c = i % d.C, t = (i / d.C) % d.T;
    float acc = bias ? bias[c] : 0.f;
    for (int64_t j = 0; j < d.K; ++j) {
      const int64_t s = t - d.K + 1 + j;  // x_s, s ≥ 0
      if (s >= 0) acc += w[c * d.K + j] * x[i + (s - t) * d.C];
    }
    y[i] = acc;
  }
}

// dx_{s,c} = Σ_j w_{c,j} g_{s+K−1−j, c}, the outputs before T.
__global__ void k_conv_backward_x(const float* w, const float* g, float* dx, ConvDims d) {
  const int64_t n = d.B * d.T * d.C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    const int64_t c = i % d.C, s = (i / d.C) % d.T;
    float acc = 0.f;
    for (int64_t j = 0; j < d.K; ++j) {
      const int64_t t = s + d.K - 1 - j;
      if (t < d.T) acc += w[c * d.K + j] * g[i + (t - s) * d.C];
    }
    dx[i] = acc;
  }
}

// dw_{c,j} = Σ_{b,t} g_{t,c} x_{t−K+1+j, c}: column q = c·K + j of row (b, t).
struct WeightTerms {
  static constexpr int kSums = 1;
  const float *x, *g;
  ConvDims d;
  __device__ void operator()(int64_t row, int64_t q, float* terms) const {
    const int64_t c = q / d.K, j = q % d.K, t = row % d.T, s = t - d.K + 1 + j;
    terms[0] = s >= 0 ? g[row * d.C + c] * x[(row + s - t) * d.C + c] : 0.f;
  }
};

}  // namespace

void causal_conv1d_forward(const float* x, const float* w, const float* bias, float* y, int64_t B, int64_t T, int64_t C,
                           int64_t K) {
  if (B * T * C == 0) return;
  k_conv_forward<<<grid_for(B * T * C), kLoopThreads, 0, stream()>>>(x, w, bias, y, {B, T, C, K});
  TAPELM_CUDA_LAUNCHED();
}

void causal_conv1d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db, int64_t B,
                            int64_t T, int64_t C, int64_t K) {
  const ConvDims d{B, T, C, K};
  if (B * T * C > 0) {
    k_conv_backward_x<<<grid_for(B * T * C), kLoopThreads, 0, stream()>>>(w, dy, dx, d);
    TAPELM_CUDA_LAUNCHED();
  }
  detail::column_sums(WeightTerms{x, dy, d}, B * T, C * K, {dw});
  if (db) detail::column_sums(detail::MatrixColumns{dy, C}, B * T, C, {db});  // db_c = Σ_{b,t} g_{t,c}
}

}  // namespace tapelm::cuda
