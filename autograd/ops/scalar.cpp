// Ops with a scalar operand. One FLOP per element forward; backward as stated.
#include <cmath>

#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {
template <class F>
Tensor map_scalar(const char* op, const Tensor& a, int64_t flops_per_elem, F f) {
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  dispatch_float(op, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    T* po = out.data<T>();
    int64_t n = a.numel();
#pragma omp parallel for simd if (n > kParallelElements)
    for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i]);
  });
  FlopCounter::add(op, flops_per_elem * a.numel());
  return out;
}
}  // namespace

Tensor add_scalar(const Tensor& a, double s) {
  Tensor out = map_scalar("add_scalar", a, 1, [s](auto x) { return x + (decltype(x))s; });
  return record("add_scalar", out, {a}, [](const Tensor& grad) -> std::vector<Tensor> { return {grad}; });
}

Tensor mul_scalar(const Tensor& a, double s) {
  Tensor out = map_scalar("mul_scalar", a, 1, [s](auto x) { return x * (decltype(x))s; });
  return record("mul_scalar", out, {a},
                [s](const Tensor& grad) -> std::vector<Tensor> { return {mul_scalar(grad, s)}; });
}

Tensor rsub_scalar(double s, const Tensor& a) {
  Tensor out = map_scalar("rsub_scalar", a, 1, [s](auto x) { return (decltype(x))s - x; });
  return record("rsub_scalar", out, {a}, [](const Tensor& grad) -> std::vector<Tensor> { return {neg(grad)}; });
}

Tensor rdiv_scalar(double s, const Tensor& a) {
  Tensor out = map_scalar("rdiv_scalar", a, 1, [s](auto x) { return (decltype(x))s / x; });
  // d(s/a)/da = -(s/a)/a
  return record("rdiv_scalar", out, {a},
                [a, out](const Tensor& grad) -> std::vector<Tensor> { return {neg(div(mul(grad, out), a))}; });
}

Tensor pow(const Tensor& a, double p) {
  Tensor out = map_scalar("pow", a, 1, [p](auto x) { return (decltype(x))std::pow(x, p); });
  // d(a^p)/da = p·a^(p-1)
  return record("pow", out, {a}, [a, p](const Tensor& grad) -> std::vector<Tensor> {
    return {mul(grad, mul_scalar(pow(a, p - 1), p))};
  });
}

}  // namespace tapelm
