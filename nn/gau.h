// Gated Attention Unit (Hua et al. 2022, "Transformer Quality in Linear Time",
// §2), the block that replaces both attention and the FFN:
//   U = silu(x W_u), V = silu(x W_v)          width e = 2·d   (to_hidden)
//   Z = silu(x W_z)                            width s = 128   (to_qk)
//   Q = Z ⊙ γ_q + β_q,  K = Z ⊙ γ_k + β_k      (qk_offset_scale)
//   A = relu²(QKᵀ/√s) / n,  causal and key-padding masked to 0
//   O = (U ⊙ A V) W_o                                          (to_out)
// Parameter names follow lucidrains/FLASH-pytorch. n is the context length
// (a constant, so decoding gives the same numbers as the full forward). This is
// the causal quadratic form; decoding caches K and V like attention.
// Not implemented yet: the paper's mixed-chunk linear form (FLASH).
#pragma once
#include "nn/attention.h"
#include "nn/config.h"
#include "nn/linear.h"
#include "nn/mixer.h"

namespace tapelm::nn {

class GatedAttentionUnit : public TokenMixer {
 public:
  GatedAttentionUnit(const ModelConfig& c, Generator& gen, double proj_std);
  Tensor forward(const Tensor& x, const MixerContext& ctx, MixerState* state) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;

  const int64_t dim, expansion, qk_dim, n;
  std::shared_ptr<Linear> to_hidden, to_qk, to_out;
  Tensor gamma, beta;  // qk_offset_scale: [2, s] (row 0: Q, row 1: K)
};

}  // namespace tapelm::nn
