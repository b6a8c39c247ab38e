// Boolean-mask ops. Masks are b8 tensors that broadcast like any operand.
//   masked_fill: y = mask ? value : a;   da = mask ? 0 : g
//   where:       y = mask ? a : b;       da = Σ_bcast(mask ? g : 0), db likewise
// FLOPs: 0 (selection only).
#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/ops.h"
#include "autograd/ops/broadcast_loop.h"

namespace tapelm {

namespace {
void check_mask(const char* op, const Tensor& mask) {
  TAPELM_CHECK(mask.dtype() == DType::b8, "{}: the mask must be bool, got {} {}", op, dtype_name(mask.dtype()),
               mask.str_shape());
}
}  // namespace

Tensor logical_not(const Tensor& mask) {
  if (mask.is_cuda())
    return cpu_fallback("logical_not", {mask}, [&](const std::vector<Tensor>& c) { return logical_not(c[0]); });

  check_mask("logical_not", mask);
  Tensor out = Tensor::empty(mask.shape(), DType::b8);
  const uint8_t* pm = mask.data<uint8_t>();
  uint8_t* po = out.data<uint8_t>();
  for (int64_t i = 0; i < mask.numel(); ++i) po[i] = !pm[i];
  return out;
}

Tensor attention_mask(int64_t B, int64_t Tq, int64_t Tk, const Tensor& key_pad, int64_t past, Device device) {
  TAPELM_CHECK(!key_pad.defined() || (key_pad.dtype() == DType::b8 && key_pad.numel() == B * Tk),
               "attention_mask: key_pad {} {} must be bool [B,Tk] = [{},{}]", dtype_name(key_pad.dtype()),
               key_pad.str_shape(), B, Tk);
  if (past < 0) past = Tk - Tq;
  Tensor m = Tensor::empty({B, 1, Tq, Tk}, DType::b8, device);
  if (device == Device::cuda) {
    const Tensor pad = key_pad.defined() ? key_pad.to(Device::cuda) : key_pad;
    cuda::attention_mask(pad.defined() ? pad.cuda_data<uint8_t>() : nullptr, m.cuda_data<uint8_t>(), B, Tq, Tk, past);
    return m;
  }
  uint8_t* pm = m.data<uint8_t>();
  const uint8_t* kp = key_pad.defined() ? key_pad.data<uint8_t>() : nullptr;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t j = 0; j < Tk; ++j) pm[(b * Tq + i) * Tk + j] = (j > past + i) || (kp && kp[b * Tk + j]);
  return m;
}

Tensor where(const Tensor& mask, const Tensor& a, const Tensor& b) {
  if (op_device("where", {&a, &b}) == Device::cuda || mask.is_cuda())
    return cpu_fallback("where", {mask, a, b}, [&](const std::vector<Tensor>& c) { return where(c[0], c[1], c[2]); });

  check_mask("where", mask);
  TAPELM_CHECK(a.dtype() == b.dtype(), "where: dtypes {} and {} differ ({} and {})", dtype_name(a.dtype()),
               dtype_name(b.dtype()), a.str_shape(), b.str_shape());
  Shape out_shape = broadcast_shapes("where", broadcast_shapes("where", mask.shape(), a.shape()), b.shape());
  Tensor out = Tensor::empty(out_shape, a.dtype());
  dispatch_float("where", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const uint8_t* pm = mask.data<uint8_t>();
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* po = out.data<T>();
    std::array<Shape, 3> st{broadcast_strides(mask.shape(), out_shape), broadcast_strides(a.shape(), out_shape),
                            broadcast_strides(b.shape(), out_shape)};
    detail::broadcast_rows<3>(out_shape, st, [&](int64_t o, auto s, auto step, int64_t len) {
      for (int64_t j = 0; j < len; ++j)
        po[o + j] = pm[s[0] + j * step[0]] ? pa[s[1] + j * step[1]] : pb[s[2] + j * step[2]];
    });
  });
  Shape sa = a.shape(), sb = b.shape();
  return record("where", out, {Tensor(), a, b}, [mask, sa, sb](const Tensor& grad) -> std::vector<Tensor> {
    Tensor z = zeros({}, grad.dtype());
    return {Tensor(), sum_to(where(mask, grad, z), sa), sum_to(where(mask, z, grad), sb)};
  });
}

Tensor masked_fill(const Tensor& a, const Tensor& mask, double value) {
  check_mask("masked_fill", mask);
  Shape b = broadcast_shapes("masked_fill", a.shape(), mask.shape());
  TAPELM_CHECK(b == a.shape(), "masked_fill: mask {} does not broadcast to the tensor {}", mask.str_shape(),
               a.str_shape());
  if (op_device("masked_fill", {&a}) == Device::cuda) {  // a host mask is uploaded
    TAPELM_CHECK(a.dtype() == DType::f32, "masked_fill: cuda runs float32, got {}", dtype_name(a.dtype()));
    const Tensor m = mask.is_cuda() ? mask : mask.to(Device::cuda);
    Tensor out = Tensor::empty_like(a);
    cuda::masked_fill(a.cuda_data<float>(), m.cuda_data<uint8_t>(),
                      cuda_broadcast_view("masked_fill", m.shape(), a.shape()), out.cuda_data<float>(), (float)value);
    return record("masked_fill", out, {a, Tensor()}, [m](const Tensor& grad) -> std::vector<Tensor> {
      return {masked_fill(grad, m, 0.0), Tensor()};
    });
  }
  TAPELM_CHECK(!mask.is_cuda(), "masked_fill: the mask is on cuda and the tensor on the cpu");
  Tensor out = Tensor::empty(a.shape(), a.dtype());
  dispatch_float("masked_fill", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const uint8_t* pm = mask.data<uint8_t>();
    const T* pa = a.data<T>();
    T* po = out.data<T>();
    const T v = (T)value;
    std::array<Shape, 1> st{broadcast_strides(mask.shape(), a.shape())};
    detail::broadcast_rows<1>(a.shape(), st, [&](int64_t o, auto s, auto step, int64_t len) {
      for (int64_t j = 0; j < len; ++j) po[o + j] = pm[s[0] + j * step[0]] ? v : pa[o + j];
    });
  });
  return record("masked_fill", out, {a, Tensor()}, [mask](const Tensor& grad) -> std::vector<Tensor> {
    return {masked_fill(grad, mask, 0.0), Tensor()};
  });
}

Tensor above_diagonal(int64_t n, bool diagonal, Device device) {
  TAPELM_CHECK(n >= 0, "above_diagonal: size must be non-negative, got {}", n);
  Tensor m = Tensor::empty({n, n}, DType::b8);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) m.data<uint8_t>()[i * n + j] = diagonal ? j >= i : j > i;
  return device == Device::cpu ? m : m.to(device);
}

}  // namespace tapelm
