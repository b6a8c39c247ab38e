// Internal to autograd/cuda/*.cu: error checks that throw tapelm::Error with
// the call, the CUDA error's name and where it was made.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "autograd/error.h"

namespace tapelm::cuda {

cudaStream_t stream();  // the one stream every kernel and copy runs on

}  // namespace tapelm::cuda

#define TAPELM_CUDA(call)                                                                                   \
  do {                                                                                                      \
    const cudaError_t tapelm_err_ = (call);                                                                 \
    if (tapelm_err_ != cudaSuccess)                                                                         \
      throw ::tapelm::Error(::fmt::format("cuda: {} failed: {} ({}) at {}:{}", #call,                     \
                                          cudaGetErrorName(tapelm_err_), cudaGetErrorString(tapelm_err_), \
                                          __FILE__, __LINE__));                                             \
  } while (0)

// After a kernel launch: a bad launch configuration shows here; a fault
// inside the kernel shows at the next synchronising call.
#define TAPELM_CUDA_LAUNCHED() TAPELM_CUDA(cudaGetLastError())
