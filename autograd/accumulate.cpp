#include "autograd/accumulate.h"

#include "autograd/cuda/kernels.h"
#include "autograd/flops.h"
#include "autograd/parallel.h"

namespace tapelm {

void add_(Tensor& dst, const Tensor& src) {
  TAPELM_CHECK(dst.shape() == src.shape() && dst.dtype() == src.dtype(), "add_: {} {} into {} {}",
               dtype_name(src.dtype()), src.str_shape(), dtype_name(dst.dtype()), dst.str_shape());
  if (dst.is_cuda() || src.is_cuda()) {
    TAPELM_CHECK(dst.is_cuda() && src.is_cuda() && dst.dtype() == DType::f32, "add_: {} {} on {} into {} {} on {}",
                 dtype_name(src.dtype()), src.str_shape(), device_name(src.device()), dtype_name(dst.dtype()),
                 dst.str_shape(), device_name(dst.device()));
    cuda::add_inplace(dst.cuda_data<float>(), src.cuda_data<float>(), dst.numel());
    FlopCounter::add("add_", dst.numel());
    return;
  }
  dispatch_float("add_", dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* pd = dst.data<T>();
    const T* ps = src.data<T>();
    int64_t n = dst.numel();
#pragma omp parallel for simd if (n > kParallelElements)
    for (int64_t i = 0; i < n; ++i) pd[i] += ps[i];
  });
  FlopCounter::add("add_", dst.numel());
}

}  // namespace tapelm
