// Mamba (Gu & Dao 2023), mamba_ssm's mamba_simple.py block. Its selective
// scan, per channel c:
//   h_t = exp(Δ_{t,c} A_c) ⊙ h_{t−1} + Δ_{t,c} B_t x_{t,c},  y_{t,c} = C_t·h_t + D_c x_{t,c}.
// The recurrent form is the fused selective_scan op (fast on a CPU); the
// parallel and chunkwise forms run the same recurrence on autograd's
// gated_recurrence core with one "head" per channel (K = d_state, V = 1):
//   q = C_t, k = B_t, v = Δ_{t,c} x_{t,c}, g = Δ_{t,c} A_c (a decay per state dimension).
// Parameter names follow mamba_simple.py; as there, A_log and D are never
// weight-decayed (`_no_weight_decay`). Padding is an identity step: zero conv
// input and Δ = 0. Decoding keeps the last d_conv − 1 conv inputs and the state.
#pragma once
#include "autograd/ops.h"
#include "nn/config.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/short_conv.h"
#include "nn/ssm.h"

namespace tapelm::nn {

class Mamba : public TokenMixer {
 public:
  Mamba(const ModelConfig& c, RecurrenceForm form, Generator& gen, double proj_std);
  Tensor forward(const Tensor& x, const MixerContext& ctx, MixerState* state) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;

  const int64_t dim, d_inner, d_state, d_conv, dt_rank;
  RecurrenceForm form;
  int64_t chunk;
  std::shared_ptr<Linear> in_proj, x_proj, dt_proj, out_proj;
  std::shared_ptr<ShortConvolution> conv1d;
  Tensor A_log, D;
};

// The mixer table's sequence_flops for Mamba (the selective scan, or the core in its other forms).
int64_t mamba_sequence_flops(const ModelConfig& c, RecurrenceForm form, int64_t b, int64_t s, std::string* formula);

}  // namespace tapelm::nn
