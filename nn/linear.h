// Linear: y = x·Wᵀ + b, W stored [out, in] as in PyTorch. x may have any
// leading dims; the product is one GEMM with those dims folded into rows.
#pragma once
#include "autograd/ops.h"
#include "nn/module.h"

namespace tapelm::nn {

class Linear : public Module {
 public:
  // Weight ~ N(0, init_std²) (GPT-2's 0.02 by default), bias zero.
  Linear(int64_t in, int64_t out, bool bias, Generator& gen, double init_std = 0.02);
  // With an activation: activation(x)·Wᵀ + b, one op (ops.h's linear).
  Tensor forward(const Tensor& x, Activation input_activation = Activation::none) const;
  Tensor weight, bias;  // bias undefined when disabled
};

class Embedding : public Module {
 public:
  Embedding(int64_t num, int64_t dim, Generator& gen, double init_std = 0.02);
  Tensor forward(const Tensor& ids) const;  // int32 [...] -> [..., dim]
  Tensor weight;
};

}  // namespace tapelm::nn
