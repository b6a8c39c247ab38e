// Inclusive cumulative sum along an axis: y_i = Σ_{j≤i} x_j.
// Its adjoint is the reverse cumulative sum: dx_j = Σ_{i≥j} g_i.
// FLOPs: 1 per element each way.
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {
Tensor cumsum_kernel(const Tensor& a, int64_t axis, bool reverse) {
  int64_t outer = 1, inner = 1, n = a.size(axis);
  for (int64_t d = 0; d < axis; ++d) outer *= a.size(d);
  for (int64_t d = axis + 1; d < a.dim(); ++d) inner *= a.size(d);
  FlopCounter::add("cumsum", a.numel());
  if (a.is_cuda()) {  // autograd/cuda/cumsum.cu
    TAPELM_CHECK(a.dtype() == DType::f32, "cumsum: cuda tensors must be float32, got {}", dtype_name(a.dtype()));
    Tensor out = Tensor::empty_like(a);
    cuda::cumsum(a.cuda_data<float>(), out.cuda_data<float>(), outer, n, inner, reverse);
    return out;
  }
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  dispatch_float("cumsum", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    T* po = out.data<T>();
#pragma omp parallel for if (a.numel() > kParallelElements)
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < inner; ++j) {
        T acc = 0;
        for (int64_t t = 0; t < n; ++t) {
          int64_t i = reverse ? n - 1 - t : t;
          int64_t idx = (o * n + i) * inner + j;
          acc += pa[idx];
          po[idx] = acc;
        }
      }
  });
  return out;
}
}  // namespace

Tensor cumsum(const Tensor& a, int64_t axis) {
  op_device("cumsum", {&a});
  int64_t ax = normalize_axis("cumsum", axis, a.dim());
  Tensor out = cumsum_kernel(a, ax, false);
  return record("cumsum", out, {a},
                [ax](const Tensor& grad) -> std::vector<Tensor> { return {cumsum_kernel(grad, ax, true)}; });
}

}  // namespace tapelm
