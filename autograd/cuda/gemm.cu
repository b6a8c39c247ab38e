// Products through cuBLAS, row-major on top of its column-major API: C = A·B
// row-major is Cᵀ = Bᵀ·Aᵀ column-major, so the operands swap places and keep
// their transpose flags. One handle on the one stream; the default math mode
// (no TF32 for float32 unless NVIDIA_TF32_OVERRIDE says so), so float32
// products are exact float32 and, cuBLAS guarantees, the same bits run to run
// on the same GPU.
#include "autograd/cuda/check.cuh"
#include "autograd/cuda/kernels.h"

namespace tapelm::cuda {

namespace {
cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t created;
    TAPELM_CUBLAS(cublasCreate(&created));
    TAPELM_CUBLAS(cublasSetStream(created, stream()));
    TAPELM_CUBLAS(cublasSetMathMode(created, CUBLAS_PEDANTIC_MATH));
    return created;
  }();
  return h;
}
}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* A, int64_t stride_a,
          const float* B, int64_t stride_b, float* C, int64_t stride_c, int64_t batch, float beta) {
  if (m == 0 || n == 0 || batch == 0) return;
  const float alpha = 1.f;
  if (k == 0) {  // an empty sum: C = beta·C
    TAPELM_CHECK(beta == 0.f || beta == 1.f, "cuda gemm: k = 0 with beta {}", beta);
    if (beta == 0.f)
      for (int64_t b = 0; b < batch; ++b) fill(C + b * stride_c, m * n, 0.f);
    return;
  }
  const int lda = (int)(trans_a ? m : k), ldb = (int)(trans_b ? k : n);
  TAPELM_CUBLAS(cublasSgemmStridedBatched(handle(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                          trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m, (int)k, &alpha, B, ldb,
                                          stride_b, A, lda, stride_a, &beta, C, (int)n, stride_c, (int)batch));
}

}  // namespace tapelm::cuda
