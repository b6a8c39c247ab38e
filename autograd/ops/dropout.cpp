// Inverted dropout (Srivastava et al. 2014): keep with probability 1−p and
// scale by 1/(1−p), so eval mode is the identity. The keep-mask is drawn from
// the given generator, so a seeded run drops the same units every time.
// FLOPs: 1 per element forward and backward.
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"

namespace tapelm {

Tensor dropout(const Tensor& a, double p, bool training, Generator& gen) {
  // On the GPU through the CPU for now: the masks come from the same CPU
  // generator, so a run draws the same masks on either device.
  if (op_device("dropout", {&a}) == Device::cuda && training && p > 0)
    return cpu_fallback("dropout", {a}, [&](const std::vector<Tensor>& c) { return dropout(c[0], p, training, gen); });

  TAPELM_CHECK(p >= 0 && p <= 1, "dropout: probability {} is not in [0, 1]", p);
  if (!training || p == 0) return a;
  const int64_t n = a.numel();
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
