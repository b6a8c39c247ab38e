// Products through cuBLAS, row-major on top of its column-major API: C = A·B
// row-major is Cᵀ = Bᵀ·Aᵀ column-major, so the operands swap places and keep
// their transpose flags. One handle on the one stream; the default math mode
// (no TF32 for float32 unless NVIDIA_TF32_OVERRIDE says so), so float32
// products are exact float32 and, cuBLAS guarantees, the same bits run to run
// on the same GPU.
#include <dlfcn.h>

#include <string>
#include <type_traits>

#include "autograd/cuda/check.cuh"
#include "autograd/cuda/kernels.h"

namespace tapelm::cuda {

namespace {

// cuBLAS is opened on the first product, not linked: loading libcublasLt
// registers thousands of kernels (0.26 s of start-up per process, every
// process, GPU or not). The few entry points used, from the library itself.
struct Cublas {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasSetMathMode) set_math_mode = nullptr;
  decltype(&cublasSgemmStridedBatched) sgemm_strided_batched = nullptr;
  decltype(&cublasGetStatusName) status_name = nullptr;
};

const Cublas& cublas() {
  static const Cublas api = [] {
    const std::string name = fmt::format("libcublas.so.{}", CUBLAS_VER_MAJOR);
    void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    TAPELM_CHECK(lib, "cuda: cannot load {} ({}): the products need cuBLAS from the CUDA {} toolkit on the library path",
                 name, dlerror(), CUBLAS_VER_MAJOR);
    Cublas a;
    auto find = [&](auto& fn, const char* symbol) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, symbol));
      TAPELM_CHECK(fn, "cuda: {} has no {}", name, symbol);
    };
    find(a.create, "cublasCreate_v2");
    find(a.set_stream, "cublasSetStream_v2");
    find(a.set_math_mode, "cublasSetMathMode");
    find(a.sgemm_strided_batched, "cublasSgemmStridedBatched");
    find(a.status_name, "cublasGetStatusName");
    return a;
  }();
  return api;
}

void check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(fmt::format("cublas: {} failed: {}", call, cublas().status_name(status)));
}

cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t created;
    check(cublas().create(&created), "cublasCreate");
    check(cublas().set_stream(created, stream()), "cublasSetStream");
    check(cublas().set_math_mode(created, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
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
  check(cublas().sgemm_strided_batched(handle(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                       trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m, (int)k, &alpha, B, ldb,
                                       stride_b, A, lda, stride_a, &beta, C, (int)n, stride_c, (int)batch),
        "cublasSgemmStridedBatched");
}

}  // namespace tapelm::cuda
