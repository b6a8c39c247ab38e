// Mamba (Gu & Dao 2023) and Mamba-2 (Dao & Gu 2024) blocks. Both run their
// state-space recurrence on autograd's gated_recurrence core:
//   Mamba-1 selective scan, per channel c: its recurrent form is the fused
//   selective_scan op; its parallel and chunkwise forms run on the core with
//   one "head" per channel (K = d_state, V = 1):
//     h_t = exp(Δ_{t,c} A_c) ⊙ h_{t−1} + Δ_{t,c} B_t x_{t,c},  y_{t,c} = C_t·h_t + D_c x_{t,c}
//     → q = C_t, k = B_t, v = Δ_{t,c} x_{t,c}, g = Δ_{t,c} A_c (decay per state dimension).
//   Mamba-2 SSD, per head h (A_h a scalar, head dim P, B and C shared by heads):
//     → q = C_t, k = B_t, v = Δ_{t,h} x_{t,h}, g = Δ_{t,h} A_h (one decay per head);
//     its parallel form is the quadratic dual Y = (L ⊙ C Bᵀ) X with L from segment
//     sums of ΔA (differences of cumulative sums), its chunkwise form the chunked SSD.
// Parameter names follow mamba_ssm's mamba_simple.py / Mamba2Simple; as there,
// A_log, D and dt_bias are never weight-decayed (`_no_weight_decay`). Padding is an
// identity step: zero conv input and Δ = 0. Decoding keeps the last d_conv − 1
// conv inputs and the SSM state.
#pragma once
#include "autograd/ops.h"
#include "nn/config.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/norm.h"
#include "nn/short_conv.h"

namespace tapelm::nn {

struct MambaState : MixerState {
  Tensor conv;  // [B, d_conv − 1, channels]: the last conv inputs
  Tensor S;     // SSM state [B, heads, d_state, V]
  int64_t bytes() const override;
};

class Mamba : public TokenMixer {
 public:
  // version 1 (selective scan) or 2 (SSD), from config.mixer.
  Mamba(const ModelConfig& c, Generator& gen, double proj_std);
  Tensor forward(const Tensor& x, const MixerContext& ctx, MixerState* state) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;

  const int version;
  const int64_t dim, d_inner, d_state, d_conv, dt_rank, head_dim, n_head, conv_channels;  // Mamba-1: n_head = d_inner
  RecurrenceForm form;
  int64_t chunk;
  std::shared_ptr<Linear> in_proj, x_proj, dt_proj, out_proj;
  std::shared_ptr<ShortConvolution> conv1d;
  std::shared_ptr<RMSNorm> norm;  // Mamba-2's gated RMSNorm
  Tensor A_log, D, dt_bias;
};

// mamba_ssm's initial dt_bias for n heads or channels: Δ drawn log-uniform in
// [0.001, 0.1] (floored at 1e-4), stored as its inverse softplus (also Gated DeltaNet's).
Tensor dt_bias_init(int64_t n, Generator& gen);

// The mixer table's sequence_flops for Mamba (the selective scan) and Mamba-2 (SSD).
int64_t mamba_sequence_flops(const ModelConfig& c, int64_t b, int64_t s, std::string* formula);

}  // namespace tapelm::nn
