// Mamba-2 (Dao & Gu 2024), mamba_ssm's Mamba2Simple block: SSD, per head h
// (A_h a scalar, head dim P, B and C shared by the heads), on autograd's
// gated_recurrence core:
//   q = C_t, k = B_t, v = Δ_{t,h} x_{t,h}, g = Δ_{t,h} A_h (one decay per head);
// its parallel form is the quadratic dual Y = (L ⊙ C Bᵀ) X with L from segment
// sums of ΔA, its chunkwise form the chunked SSD, its recurrent form the step.
// The output passes a gated RMSNorm (norm after the gate). Names follow
// Mamba2Simple; A_log, D and dt_bias are never weight-decayed. Padding and
// decoding as Mamba's (nn/mamba.h).
#pragma once
#include "autograd/ops.h"
#include "nn/config.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/norm.h"
#include "nn/short_conv.h"
#include "nn/ssm.h"

namespace tapelm::nn {

class Mamba2 : public TokenMixer {
 public:
  Mamba2(const ModelConfig& c, RecurrenceForm form, Generator& gen, double proj_std);
  Tensor forward(const Tensor& x, const MixerContext& ctx, MixerState* state) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;

  const int64_t dim, d_inner, d_state, d_conv, head_dim, n_head, conv_channels;
  RecurrenceForm form;
  int64_t chunk;
  std::shared_ptr<Linear> in_proj, out_proj;
  std::shared_ptr<ShortConvolution> conv1d;
  std::shared_ptr<RMSNorm> norm;  // the gated RMSNorm
  Tensor A_log, D, dt_bias;
};

// The mixer table's sequence_flops for Mamba-2 (SSD on the core).
int64_t mamba2_sequence_flops(const ModelConfig& c, RecurrenceForm form, int64_t b, int64_t s, std::string* formula);

}  // namespace tapelm::nn
