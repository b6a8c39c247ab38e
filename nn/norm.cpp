#include "nn/norm.h"

#include "autograd/ops.h"

namespace tapelm::nn {

LayerNorm::LayerNorm(int64_t dim, bool has_bias, double eps_) : eps(eps_) {
  weight = register_parameter("weight", ones({dim}));
  if (has_bias) bias = register_parameter("bias", zeros({dim}));
}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }

RMSNorm::RMSNorm(int64_t dim, double eps_, bool elementwise_affine) : eps(eps_) {
  if (elementwise_affine)
    weight = register_parameter("weight", ones({dim}));
  else
    unit_ = ConstantTensor(ones({dim}, DType::f64));
}

Tensor RMSNorm::forward(const Tensor& x) const { return rms_norm(x, weight.defined() ? weight : unit_.like(x), eps); }

DyT::DyT(int64_t dim, bool has_bias, double alpha_init) {
  alpha = register_parameter("alpha", full({1}, alpha_init));
  weight = register_parameter("weight", ones({dim}));
  if (has_bias) bias = register_parameter("bias", zeros({dim}));
}

Tensor DyT::forward(const Tensor& x) const {
  Tensor y = mul(tanh(mul(x, alpha)), weight);
  return bias.defined() ? add(y, bias) : y;
}

ScaleNorm::ScaleNorm(double eps_) : eps(eps_) { g = register_parameter("g", ones({1})); }

Tensor ScaleNorm::forward(const Tensor& x) const { return scale_norm(x, g, eps); }

std::shared_ptr<Norm> make_norm(const std::string& kind, int64_t dim, bool bias, double eps) {
  if (kind == "layernorm") return std::make_shared<LayerNorm>(dim, bias, eps);
  if (kind == "rmsnorm") return std::make_shared<RMSNorm>(dim, eps);
  if (kind == "dyt") return std::make_shared<DyT>(dim, bias);
  if (kind == "scalenorm") return std::make_shared<ScaleNorm>(eps);
  throw Error(fmt::format("norm: unknown kind '{}' (expected layernorm, rmsnorm, dyt or scalenorm)", kind));
}

}  // namespace tapelm::nn
