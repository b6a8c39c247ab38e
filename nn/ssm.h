// What the state-space mixers share: mamba_ssm's initial Δ bias (Mamba,
// Mamba-2, and Gated DeltaNet's decay, which is Mamba-2's) and the decoding
// state of a block that runs a short convolution into an SSM (Mamba, Mamba-2).
#pragma once
#include "autograd/random.h"
#include "autograd/tensor.h"
#include "nn/mixer.h"

namespace tapelm::nn {

// mamba_ssm's initial dt_bias for n heads or channels: Δ drawn log-uniform in
// [0.001, 0.1] (floored at 1e-4), stored as its inverse softplus.
Tensor dt_bias_init(int64_t n, Generator& gen);

struct MambaState : MixerState {
  Tensor conv;  // [B, d_conv − 1, channels]: the last conv inputs
  Tensor S;     // SSM state [B, heads, d_state, V]
  int64_t bytes() const override;
};

}  // namespace tapelm::nn
