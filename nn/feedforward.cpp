#include "nn/feedforward.h"

#include "autograd/ops.h"

namespace tapelm::nn {

FeedForward::FeedForward(int64_t dim, int64_t hidden, const std::string& kind_, bool bias, double dropout,
                         Generator& gen, Generator* dropout_gen, double proj_std)
    : kind(kind_) {
  TAPELM_CHECK(kind == "gelu" || kind == "relu" || kind == "swiglu",
               "FeedForward: unknown kind '{}' (expected gelu, relu or swiglu)", kind);
  c_fc = register_module("c_fc", std::make_shared<Linear>(dim, hidden, bias, gen));
  if (kind == "swiglu") c_gate = register_module("c_gate", std::make_shared<Linear>(dim, hidden, bias, gen));
  c_proj = register_module("c_proj", std::make_shared<Linear>(hidden, dim, bias, gen, proj_std));
  drop = register_module("dropout", std::make_shared<Dropout>(dropout, dropout_gen));
}

// gelu and relu: the projection reads c_fc's output through the activation
// (one op: on the GPU the activation's output is never stored in float32).
Tensor FeedForward::forward(const Tensor& x) const {
  if (kind == "swiglu") return drop->forward(c_proj->forward(mul(silu(c_gate->forward(x)), c_fc->forward(x))));
  return drop->forward(c_proj->forward(c_fc->forward(x), kind == "gelu" ? Activation::gelu : Activation::relu));
}

}  // namespace tapelm::nn
