// Ops with a scalar operand. One FLOP per element forward; backward as stated.
#include <cmath>

#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {
template <class F>
Tensor map_scalar(const char* op, cuda::ScalarOp kind, double s, const Tensor& a, int64_t flops_per_elem, F f) {
  if (op_device(op, {&a}) == Device::cuda) {
    TAPELM_CHECK(a.dtype() == DType::f32, "{}: a cuda tensor must be float32, got {}", op, dtype_name(a.dtype()));
    Tensor out = Tensor::empty_like(a);
    cuda::scalar_map(kind, a.cuda_data<float>(), out.cuda_data<float>(), a.numel(), (float)s);
    FlopCounter::add(op, flops_per_elem * a.numel());
    return out;
  }
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
  Tensor out = map_scalar("add_scalar", cuda::ScalarOp::add, s, a, 1, [s](auto x) { return x + (decltype(x))s; });
  return record("add_scalar", out, {a}, [](const Tensor& grad) -> std::vector<Tensor> { return {grad}; });
}

Tensor mul_scalar(const Tensor& a, double s) {
  Tensor out = map_scalar("mul_scalar", cuda::ScalarOp::mul, s, a, 1, [s](auto x) { return x * (decltype(x))s; });
  return record("mul_scalar", out, {a},
                [s](const Tensor& grad) -> std::vector<Tensor> { return {mul_scalar(grad, s)}; });
}

Tensor rsub_scalar(double s, const Tensor& a) {
  Tensor out = map_scalar("rsub_scalar", cuda::ScalarOp::rsub, s, a, 1, [s](auto x) { return (decltype(x))s - x; });
  return record("rsub_scalar", out, {a}, [](const Tensor& grad) -> std::vector<Tensor> { return {neg(grad)}; });
}

Tensor rdiv_scalar(double s, const Tensor& a) {
  Tensor out = map_scalar("rdiv_scalar", cuda::ScalarOp::rdiv, s, a, 1, [s](auto x) { return (decltype(x))s / x; });
  // d(s/a)/da = -(s/a)/a
  return record("rdiv_scalar", out, {a},
                [a, out](const Tensor& grad) -> std::vector<Tensor> { return {neg(div(mul(grad, out), a))}; });
}

Tensor pow(const Tensor& a, double p) {
  Tensor out = map_scalar("pow", cuda::ScalarOp::pow, p, a, 1, [p](auto x) { return (decltype(x))std::pow(x, p); });
  // d(a^p)/da = p·a^(p-1)
  return record("pow", out, {a}, [a, p](const Tensor& grad) -> std::vector<Tensor> {
    return {mul(grad, mul_scalar(pow(a, p - 1), p))};
  });
}

}  // namespace tapelm
