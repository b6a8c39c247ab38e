// Inverted dropout (Srivastava et al. 2014): keep with probability 1−p and
// scale by 1/(1−p), so eval mode is the identity. The keep-mask is drawn from
// the given generator, so a seeded run drops the same units every time. On
// the GPU one 64-bit seed is drawn from the generator per call and a
// counter-based kernel makes the mask from it: as reproducible (the
// generator's state is in the checkpoint), but not the CPU's mask.
// FLOPs: 1 per element forward and backward.
#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"

namespace tapelm {

Tensor dropout(const Tensor& a, double p, bool training, Generator& gen) {
  TAPELM_CHECK(p >= 0 && p <= 1, "dropout: probability {} is not in [0, 1]", p);
  if (!training || p == 0) return a;
  const int64_t n = a.numel();
  if (op_device("dropout", {&a}) == Device::cuda) {
    TAPELM_CHECK(a.dtype() == DType::f32, "dropout: cuda runs float32, got {}", dtype_name(a.dtype()));
    Tensor scale_mask = Tensor::empty_like(a);
    Tensor out = Tensor::empty_like(a);
    cuda::dropout(a.cuda_data<float>(), out.cuda_data<float>(), scale_mask.cuda_data<float>(), n, (float)p,
                  p < 1 ? (float)(1.0 / (1.0 - p)) : 0.f, gen.next_u64());
    FlopCounter::add("dropout", n);
    return record("dropout", out, {a},
                  [scale_mask](const Tensor& grad) -> std::vector<Tensor> { return {mul(grad, scale_mask)}; });
  }
  Tensor scale_mask = Tensor::empty(a.shape(), a.dtype());  // 0 or 1/(1−p)
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  dispatch_float("dropout", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T keep_scale = p < 1 ? T(1.0 / (1.0 - p)) : T(0);
    T* pm = scale_mask.data<T>();
    for (int64_t i = 0; i < n; ++i) pm[i] = gen.uniform() < p ? T(0) : keep_scale;
    const T* pa = a.data<T>();
    T* po = out.data<T>();
    for (int64_t i = 0; i < n; ++i) po[i] = pa[i] * pm[i];
  });
  FlopCounter::add("dropout", n);
  return record("dropout", out, {a},
                [scale_mask](const Tensor& grad) -> std::vector<Tensor> { return {mul(grad, scale_mask)}; });
}

}  // namespace tapelm
