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
  const Tensor& as(DType dtype) const {
    TAPELM_CHECK(dtype == DType::f32 || dtype == DType::f64, "ConstantTensor: no {} copy", dtype_name(dtype));
    return dtype == DType::f64 ? f64_ : f32_;
  }
  bool defined() const { return f64_.defined(); }

 private:
  Tensor f64_, f32_;
};

}  // namespace tapelm::nn
