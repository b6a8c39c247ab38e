// The linear-attention family on one recurrence core (autograd's
// gated_recurrence): per head a state S_t ∈ R^{K×V},
//   S_t = diag(exp g_t) S_{t−1} + k_t v_tᵀ,   y_t = S_tᵀ q_t,
// and a mixer is only its projections, its decay g and its output path:
//   linear           Katharopoulos et al. 2020: φ(q), φ(k) with φ = elu+1 (or
//                    relu, identity), g = 0, y = φ(q)ᵀS / (φ(q)ᵀz + ε) with
//                    z_t = Σ φ(k) (computed by the same core through a column
//                    of ones appended to v), or unnormalised with a per-head RMSNorm.
//   retnet           Sun et al. 2023: g = log γ_h, γ_h = 1 − 2^(−5−h); rotary q, k;
//                    y = o_proj(swish(g_proj x) ⊙ GroupNorm(Y)).
//   gated_retention  as retnet with a data-dependent decay per head,
//                    γ_t = σ(x W_γ)^(1/τ), τ = 16 (the gRetNet of YOCO).
//   gla              Yang et al. 2023: decay per key dimension,
//                    α_t = σ(x W₁W₂ + b)^(1/τ), τ = 16; no rotary.
//   deltanet         Schlag et al. 2021 / Yang et al. 2024 on the delta-rule core
//                    (autograd's delta_rule): S_t = (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,
//                    β_t = σ(x W_β), L2-normalised q and k, per-head RMSNorm.
//   gated_deltanet   Yang et al. 2024b: a scalar decay α_t = σ(x W_α)^(1/τ) in
//                    front, and an output gate swish(g_proj x).
// Padding: a padded position writes nothing and does not decay (k = 0, β = 0, g = 0),
// so real tokens see the same state with or without padding.
#pragma once
#include <memory>
#include <string>

#include "autograd/ops.h"
#include "nn/config.h"
#include "nn/constant_tensor.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/norm.h"
#include "nn/position.h"

namespace tapelm::nn {

// What sets one member of the family apart from the others: one row per mixer.
enum class DecayKind {
  none,      // g = 0 (linear attention, DeltaNet)
  fixed,     // g = log γ_h, a constant per head (RetNet)
  per_head,  // g = log σ(x W)/τ, one value per head and step (gated retention, Gated DeltaNet)
  per_key,   // g = log σ(x W₁W₂ + b)/τ, one value per key dimension (GLA)
};
struct LinearRecipe {
  std::string kind;
  DecayKind decay;
  bool delta_rule;   // the delta-rule core with write strength β, L2-normalised q and k
  bool rotary;       // rotary positions on q and k
  bool output_gate;  // y ← swish(g_proj x) ⊙ y before o_proj
};
// The row of `kind` (one of linear, retnet, gated_retention, gla, deltanet, gated_deltanet).
const LinearRecipe& recipe_of(const std::string& kind);

struct RecurrentState : MixerState {
  Tensor S;  // [B, H, K, V]
  int64_t bytes() const override { return S.defined() ? S.numel() * (int64_t)dtype_size(S.dtype()) : 0; }
};

class LinearRecurrentMixer : public TokenMixer {
 public:
  LinearRecurrentMixer(const ModelConfig& c, Generator& gen, double proj_std);
  Tensor forward(const Tensor& x, const MixerContext& ctx, MixerState* state) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;

  const LinearRecipe& recipe;
  const std::string kind;
  const int64_t dim, n_head, head_dim;
  RecurrenceForm form;
  int64_t chunk;
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, b_proj, g_proj, gk_proj_0, gk_proj_1, o_proj;
  std::shared_ptr<RMSNorm> g_norm;

 private:
  // Linear attention divided by φ(q)ᵀz (the only member without the per-head RMSNorm).
  bool normalized_linear() const { return kind == "linear" && normalize_; }
  // [B,T,H·d] -> [B,H,T,d]
  Tensor split_heads(const Tensor& t, int64_t B, int64_t T) const;
  std::string feature_map_;
  bool normalize_;
  std::shared_ptr<Rotary> rotary_;
  ConstantTensor retnet_log_gamma_;  // [1,H,1,1] (retnet)
};

// Forward FLOPs of the gated_recurrence core S_t = diag(decay) S_{t−1} + k_t v_tᵀ,
// o_t = S_tᵀ q_t over H heads of key width K and value width V, in `form`, with
// the formula in words (this family and Mamba's non-fused forms, Mamba-2's SSD).
int64_t gated_core_flops(int64_t b, int64_t s, int64_t H, int64_t K, int64_t V, RecurrenceForm form, int64_t chunk,
                         std::string* formula);
// The mixer table's sequence_flops for this family (delta-rule core for DeltaNet).
int64_t linear_recurrent_sequence_flops(const ModelConfig& c, int64_t b, int64_t s, std::string* formula);

}  // namespace tapelm::nn
