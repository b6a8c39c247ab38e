// add, sub, mul, div with NumPy broadcasting. One FLOP per output element.
// Backward: each input's gradient is summed back down to its own shape.
#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/ops/broadcast_loop.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {

template <class F>
Tensor binary_forward(const char* op, cuda::Binary kind, const Tensor& a, const Tensor& b, F f) {
  TAPELM_CHECK(a.dtype() == b.dtype(), "{}: dtypes {} and {} differ ({} and {})", op, dtype_name(a.dtype()),
               dtype_name(b.dtype()), a.str_shape(), b.str_shape());
  Shape out_shape = broadcast_shapes(op, a.shape(), b.shape());
  if (op_device(op, {&a, &b}) == Device::cuda) {
    TAPELM_CHECK(a.dtype() == DType::f32, "{}: cuda tensors must be float32, got {}", op, dtype_name(a.dtype()));
    Tensor out = Tensor::empty(out_shape, a.dtype(), Device::cuda);
    cuda::binary(kind, a.cuda_data<float>(), cuda_broadcast_view(op, a.shape(), out_shape), b.cuda_data<float>(),
                 cuda_broadcast_view(op, b.shape(), out_shape), out.cuda_data<float>());
    FlopCounter::add(op, out.numel());
    return out;
  }
  Tensor out = Tensor::empty(out_shape, a.dtype());
  dispatch_float(op, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* po = out.data<T>();
    if (a.shape() == b.shape()) {  // fast path: same shape
      int64_t n = out.numel();
#pragma omp parallel for simd if (n > kParallelElements)
      for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], pb[i]);
      return;
    }
    std::array<Shape, 2> st{broadcast_strides(a.shape(), out_shape), broadcast_strides(b.shape(), out_shape)};
    detail::broadcast_rows<2>(out_shape, st, [&](int64_t o, auto s, auto step, int64_t len) {
      for (int64_t j = 0; j < len; ++j) po[o + j] = f(pa[s[0] + j * step[0]], pb[s[1] + j * step[1]]);
    });
  });
  FlopCounter::add(op, out.numel());
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward("add", cuda::Binary::add, a, b, [](auto x, auto y) { return x + y; });
  Shape sa = a.shape(), sb = b.shape();
  return record("add", out, {a, b}, [sa, sb](const Tensor& grad) -> std::vector<Tensor> {
    return {sum_to(grad, sa), sum_to(grad, sb)};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward("sub", cuda::Binary::sub, a, b, [](auto x, auto y) { return x - y; });
  Shape sa = a.shape(), sb = b.shape();
  return record("sub", out, {a, b}, [sa, sb](const Tensor& grad) -> std::vector<Tensor> {
    return {sum_to(grad, sa), sum_to(neg(grad), sb)};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward("mul", cuda::Binary::mul, a, b, [](auto x, auto y) { return x * y; });
  return record("mul", out, {a, b}, [a, b](const Tensor& grad) -> std::vector<Tensor> {
    Tensor ga, gb;
    if (a.requires_grad()) ga = sum_to(mul(grad, b), a.shape());
    if (b.requires_grad()) gb = sum_to(mul(grad, a), b.shape());
    return {ga, gb};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward("div", cuda::Binary::div, a, b, [](auto x, auto y) { return x / y; });
  return record("div", out, {a, b}, [a, b, out](const Tensor& grad) -> std::vector<Tensor> {
    Tensor ga, gb;
    Tensor g_over_b = div(grad, b);
    if (a.requires_grad()) ga = sum_to(g_over_b, a.shape());
    // d(a/b)/db = -(a/b)/b
    if (b.requires_grad()) gb = sum_to(neg(mul(g_over_b, out)), b.shape());
    return {ga, gb};
  });
}

}  // namespace tapelm
