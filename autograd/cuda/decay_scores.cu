// A chunk's scores under a decay per key (ops/decay_scores.cpp) on the GPU:
// q, k, L [chunks, C, K], A [chunks, C, C],
//   A_{t,s} = Σ_k q_{t,k} k_{s,k} e^{L_{t,k} − L_{s,k}} (s ≤ t; 0 above the diagonal).
// A thread per score, its K terms in order; the backward a thread per (p, k)
// of q, k and L: dq and dk are its two ordered sums over the chunk and
// dL = q·dq − k·dk with the diagonal term, which cancels, left out of both
// (as on the CPU). No atomics: the same bits every run.
#include "autograd/cuda/check.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/launch.cuh"

namespace tapelm::cuda {

namespace {

struct ScoreDims {
  int64_t chunks, C, K;
};

__global__ void k_scores_forward(const float* q, const float* k, const float* L, float* A, ScoreDims d) {
  const int64_t n = d.chunks * d.C * d.C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    const int64_t s = i % d.C, t = (i / d.C) % d.C, chunk = i / (d.C * d.C);
    const float *qt = q + (chunk * d.C + t) * d.K, *Lt = L + (chunk * d.C + t) * d.K;
    const float *ks = k + (chunk * d.C + s) * d.K, *Ls = L + (chunk * d.C + s) * d.K;
    float acc = 0.f;
    if (s <= t)
      for (int64_t j = 0; j < d.K; ++j) acc += qt[j] * ks[j] * expf(Lt[j] - Ls[j]);
    A[i] = acc;
  }
}

__global__ void k_scores_backward(const float* q, const float* k, const float* L, const float* dA, float* dq, float* dk,
                                  float* dL, ScoreDims d) {
  const int64_t n = d.chunks * d.C * d.K;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    const int64_t j = i % d.K, p = (i / d.K) % d.C, chunk = i / (d.C * d.K);
    const float *kc = k + chunk * d.C * d.K + j, *qc = q + chunk * d.C * d.K + j, *Lc = L + chunk * d.C * d.K + j;
    const float* dAc = dA + chunk * d.C * d.C;
    const float Lp = Lc[p * d.K];
    float gq = 0.f, gk = 0.f;  // the off-diagonal sums
    for (int64_t s = 0; s < p; ++s) gq += dAc[p * d.C + s] * kc[s * d.K] * expf(Lp - Lc[s * d.K]);        // p the query
    for (int64_t t = p + 1; t < d.C; ++t) gk += dAc[t * d.C + p] * qc[t * d.K] * expf(Lc[t * d.K] - Lp);  // p the key
    const float diagonal = dAc[p * d.C + p];
    dq[i] = gq + diagonal * k[i];
    dk[i] = gk + diagonal * q[i];
    dL[i] = q[i] * gq - k[i] * gk;
  }
}

}  // namespace

void decay_scores_forward(const float* q, const float* k, const float* L, float* A, int64_t chunks, int64_t C,
                          int64_t K) {
  if (chunks * C == 0) return;
  k_scores_forward<<<grid_for(chunks * C * C), kLoopThreads, 0, stream()>>>(q, k, L, A, {chunks, C, K});
  TAPELM_CUDA_LAUNCHED();
}

void decay_scores_backward(const float* q, const float* k, const float* L, const float* dA, float* dq, float* dk,
                           float* dL, int64_t chunks, int64_t C, int64_t K) {
  if (chunks * C * K == 0) return;
  k_scores_backward<<<grid_for(chunks * C * K), kLoopThreads, 0, stream()>>>(q, k, L, dA, dq, dk, dL, {chunks, C, K});
  TAPELM_CUDA_LAUNCHED();
}

}  // namespace tapelm::cuda
