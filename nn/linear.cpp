#include "nn/linear.h"

#include "autograd/flops.h"
#include "autograd/ops.h"

namespace tapelm::nn {

Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator& gen, double init_std) {
  weight = register_parameter("weight", randn({out, in}, gen, DType::f32, 0.0, init_std));
  if (has_bias) bias = register_parameter("bias", zeros({out}));
}

Tensor Linear::forward(const Tensor& x, Activation input_activation) const {
  TAPELM_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1),
               "Linear: input {} does not end in in_features {} (weight {})", x.str_shape(), weight.size(1),
               weight.str_shape());
  // FLOPs of parameter matmuls are booked to "<component>.proj": the 6N part.
  FlopCounter::Scope scope("proj");
  return linear(x, weight, bias, input_activation);
}

Embedding::Embedding(int64_t num, int64_t dim, Generator& gen, double init_std) {
  weight = register_parameter("weight", randn({num, dim}, gen, DType::f32, 0.0, init_std));
}

Tensor Embedding::forward(const Tensor& ids) const { return embedding(weight, ids); }

}  // namespace tapelm::nn
