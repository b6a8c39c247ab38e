// A fixed, non-trainable table (rotary angles, sinusoidal positions, RetNet's
// decays) kept in both float dtypes, so a forward in either dtype reads it
// without converting it every call.
#pragma once
#include "autograd/tensor.h"

namespace tapelm::nn {

class ConstantTensor {
 public:
  ConstantTensor() = default;
  explicit ConstantTensor(const Tensor& values) : f64_(values.to(DType::f64)), f32_(values.to(DType::f32)) {}
  // The table in `dtype` on `device`: the float32 copy goes to the GPU the
  // first time a cuda forward asks for it, and stays there.
  const Tensor& as(DType dtype, Device device = Device::cpu) const {
    TAPELM_CHECK(dtype == DType::f32 || dtype == DType::f64, "ConstantTensor: no {} copy", dtype_name(dtype));
    if (device == Device::cuda) {
      TAPELM_CHECK(dtype == DType::f32, "ConstantTensor: a cuda copy is float32, not {}", dtype_name(dtype));
      if (!f32_cuda_.defined()) f32_cuda_ = f32_.to(Device::cuda);
      return f32_cuda_;
    }
    return dtype == DType::f64 ? f64_ : f32_;
  }
  const Tensor& like(const Tensor& x) const { return as(x.dtype(), x.device()); }
  bool defined() const { return f64_.defined(); }

 private:
  Tensor f64_, f32_;
  mutable Tensor f32_cuda_;
};

}  // namespace tapelm::nn
