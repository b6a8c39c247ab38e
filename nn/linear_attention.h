// The linear-attention family on one recurrence core (autograd's
// gated_recurrence): per head a state S_t ∈ R^{K×V},
//   S_t = diag(exp g_t) S_{t−1} + k_t v_tᵀ,   y_t = S_tᵀ q_t,
// and a mixer is only its projections, its decay g and its output path. Each
// member is fla's layer (fla/layers/*.py) with fla's defaults:
//   linear           Katharopoulos et al. 2020: φ(q), φ(k) with φ = elu+1 (or
//                    relu, identity), g = 0, y = φ(q)ᵀS / (φ(q)ᵀz + ε) with
//                    z_t = Σ φ(k) (computed by the same core through a column
//                    of ones appended to v), or unnormalised with a per-head RMSNorm.
//   retnet           Sun et al. 2023: g = log γ_h, γ_h = 1 − 2^(−5−h); rotary q, k;
//                    y = o_proj(swish(g_proj x) ⊙ RMSNorm(Y)); values 2d wide.
//   gated_retention  YOCO's gRetNet (fla/layers/yoco.py, YOCOGatedRetention): as
//                    retnet with a data-dependent decay per head, γ_t = σ(x W_γ)^(1/τ),
//                    τ = 16, no gate bias; interleaved rotary; values d wide; the
//                    per-head norm o_norm has no weight.
//   gla              Yang et al. 2023: decay per key dimension,
//                    α_t = σ(x W₁W₂ + b)^(1/τ), τ = 16; no rotary; keys d/2 wide.
//   deltanet         Schlag et al. 2021 / Yang et al. 2024 on the delta-rule core
//                    (autograd's delta_rule): S_t = (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,
//                    β_t = σ(x W_β); q, k, v through a causal short convolution
//                    (size d_conv) and SiLU, then q and k L2-normalised; per-head RMSNorm.
//   gated_deltanet   Yang et al. 2024b: Mamba-2's decay in front,
//                    g_t = −exp(A_log)·softplus(x W_a + dt_bias) per head, the short
//                    convolutions, an output gate swish(g_proj x); keys 0.75·d and
//                    values 1.5·d wide (fla's 6d² parameters per layer).
// Padding: a padded position writes nothing and does not decay (k = 0, β = 0, g = 0),
// and enters the short convolutions as 0 (as at the start of a sequence), so real
// tokens see the same state with or without padding.
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
#include "nn/short_conv.h"

namespace tapelm::nn {

// What sets one member of the family apart from the others: one row per mixer.
enum class DecayKind {
  none,      // g = 0 (linear attention, DeltaNet)
  fixed,     // g = log γ_h, a constant per head (RetNet)
  per_head,  // g = log σ(x W)/τ, one value per head and step (gated retention)
  per_key,   // g = log σ(x W₁W₂ + b)/τ, one value per key dimension (GLA)
  mamba2,    // g = −exp(A_log)·softplus(x W_a + dt_bias), one value per head and step (Gated DeltaNet)
};
struct LinearRecipe {
  std::string kind;
  DecayKind decay = DecayKind::none;
  bool delta_rule = false;  // the delta-rule core with write strength β, L2-normalised q and k
  bool rotary = false;      // rotary positions on q and k
  Rotary::Layout rotary_layout = Rotary::Layout::half;  // fla's RotaryEmbedding: half; YOCO's: interleaved
  bool output_gate = false;                             // y ← swish(g_proj x) ⊙ y before o_proj
  bool short_conv = false;         // q, k, v ← SiLU(causal depthwise conv(·)) (fla's use_short_conv)
  bool gate_bias = false;          // a bias in the per-head decay projection gk_proj (DecayKind::per_head)
  double expand_k = 1.0;           // key width / n_embd (fla's expand_k)
  double expand_v = 1.0;           // value width / n_embd (fla's expand_v)
  const char* norm_name = "norm";  // the per-head output norm's name in fla's layer
  bool norm_affine = true;         // the per-head output norm has a weight (fla's elementwise_affine)
};
// The row of `kind` (one of linear, retnet, gated_retention, gla, deltanet, gated_deltanet).
const LinearRecipe& recipe_of(const std::string& kind);

// Key and value widths of c's mixer (n_embd · expand), checked: each a whole
// multiple of n_head, the key head even where q and k are rotated (throws Error).
struct LinearWidths {
  int64_t key, value;
};
LinearWidths linear_widths(const ModelConfig& c);
// The smallest n_embd step whose multiples all pass linear_widths (compare's widths).
int64_t linear_width_multiple(const ModelConfig& c);

struct RecurrentState : MixerState {
  Tensor S;                       // [B, H, K, V]
  Tensor q_conv, k_conv, v_conv;  // the short convolutions' last inputs [B, d_conv − 1, width]
  int64_t bytes() const override;
};

class LinearRecurrentMixer : public TokenMixer {
 public:
  LinearRecurrentMixer(const ModelConfig& c, RecurrenceForm form, Generator& gen, double proj_std);
  Tensor forward(const Tensor& x, const MixerContext& ctx, MixerState* state) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;

  const LinearRecipe& recipe;
  const std::string kind;
  const int64_t dim, n_head, key_dim, value_dim, head_k, head_v;
  RecurrenceForm form;
  int64_t chunk;
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, b_proj, a_proj, g_proj, gk_proj_0, gk_proj_1, o_proj;
  std::shared_ptr<ShortConvolution> q_conv1d, k_conv1d, v_conv1d;
  std::shared_ptr<RMSNorm> out_norm;  // per head, under recipe.norm_name
  Tensor A_log, dt_bias;              // Gated DeltaNet's decay (never weight-decayed)

 private:
  // Linear attention divided by φ(q)ᵀz (the only member without the per-head RMSNorm).
  bool normalized_linear() const { return kind == "linear" && normalize_; }
  // q, k, v, each [B,T,width], through the short convolutions (and their caches).
  void short_convolutions(Tensor& q, Tensor& k, Tensor& v, const Tensor& pad, RecurrentState* st) const;
  // [B,T,H·d] -> [B,H,T,d]
  Tensor split_heads(const Tensor& t, int64_t B, int64_t T) const;
  std::string feature_map_;
  bool normalize_;
  std::shared_ptr<Rotary> rotary_;
  ConstantTensor retnet_log_gamma_;  // [1,H,1,1] (retnet)
};

// The mixer table's sequence_flops for this family (delta-rule core for DeltaNet).
int64_t linear_recurrent_sequence_flops(const ModelConfig& c, RecurrenceForm form, int64_t b, int64_t s,
                                        std::string* formula);

}  // namespace tapelm::nn
