// ShortConvolution: a causal depthwise 1-D convolution over time on [B,T,C],
//   y_{t,c} = b_c + Σ_{j<k} w_{c,j} · x_{t−k+1+j, c}   (x before the start = 0),
// the short convolution of Mamba (mamba_ssm's `conv1d`, with a bias) and of
// fla's DeltaNet and Gated DeltaNet (`q_conv1d`, `k_conv1d`, `v_conv1d`, no
// bias). The activation (SiLU in all of them) stays with the caller. Weight
// [C,1,k] as PyTorch's nn.Conv1d(groups=C), initialised as PyTorch's default
// U(±1/√k). Decoding carries the last k − 1 inputs in a cache [B,k−1,C].
#pragma once
#include "autograd/ops.h"
#include "nn/module.h"

namespace tapelm::nn {

class ShortConvolution : public Module {
 public:
  ShortConvolution(int64_t channels, int64_t kernel, bool bias, Generator& gen);
  // y for x [B,T,C]; with a cache, continues from it (zeros when undefined) and
  // leaves the last k − 1 inputs in it.
  Tensor forward(const Tensor& x, Tensor* cache = nullptr) const;

  const int64_t channels, kernel;
  Tensor weight, bias;  // bias undefined when disabled
};

}  // namespace tapelm::nn
