// Gated Attention Unit (Hua et al. 2022, "Transformer Quality in Linear Time",
// §2), the block that replaces both attention and the FFN:
//   V = silu(x W_v), U = silu(x W_u)          width e = 2·d   (to_hidden: value, gate)
//   Z = silu(x W_z)                            width s = 128   (to_qk)
//   Q = Z ⊙ γ_q + β_q,  K = Z ⊙ γ_k + β_k      (qk_offset_scale, γ ~ N(0, 0.02))
//   A = relu²(QKᵀ/n + b),  causal and key-padding masked to 0
//   O = (U ⊙ A V) W_o                                          (to_out)
// as in the paper's pseudocode (Appendix A): b is its relative position bias,
// one learned value per distance (rel_pos_bias, N(0, 0.02)), and n the
// context length (a constant, so decoding gives the same numbers as the full
// forward). The bias is what keeps relu² alive: QKᵀ/n starts near 1e-6, so
// without it the scores fall below 0 and relu² stops every gradient.
// Parameter names follow lucidrains/FLASH-pytorch's FLASH class (to_hidden.0,
// to_qk.0, qk_offset_scale, to_out); its bias is T5's bucketed one, ours the
// paper's per-distance one. GAU is FLASH below with one chunk; decoding caches
// K and V like attention.
// Two options of FLASH-pytorch's layer, on in its FLASHTransformer (and in the
// gau/flash recipes): gau_token_shift shifts the first half of the normed
// input one token on before the projections (nn/token_shift.h), and
// gau_rotary_dim rotates the first min(r, s) features of every q and k head
// (RoPE, rotary_embedding_torch's interleaved pairs) at their positions.
//
// FLASH (mixer "flash", §3 of the paper): the mixed-chunk form, linear in T.
// Positions are grouped into chunks of C (chunk id = position id / C, so
// padding never shifts them); within a chunk the quadratic relu² attention
// above with n = C (causal), across chunks linear attention over all earlier chunks:
//   Ô_t = Σ_{u ≤ t, same chunk} relu²(q_t·k_u/C + b_{t−u}) v_u + q'_tᵀ Σ_{chunks before} k'_u v_uᵀ / C
// with Q', K' two more scale/offset heads of Z (rows quad_q, lin_q, quad_k,
// lin_k). Both are projections plus one call into autograd's fused
// gau_attention, in its forms: parallel (T×T masks, O(T²)); chunkwise (per
// chunk, S = Σ k'vᵀ carried across chunks, O(T·C)); recurrent, as decoding
// runs: a state Σ k'vᵀ over finished chunks plus the current chunk's keys and
// values, O(C) per token.
#pragma once
#include "autograd/ops.h"
#include "nn/config.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/position.h"

namespace tapelm::nn {

// FLASH-pytorch's nn.Sequential(nn.Linear, nn.SiLU): the linear layer is
// child "0", so its names are to_hidden.0.weight and to_qk.0.weight.
struct LinearSiLU : Module {
  std::shared_ptr<Linear> linear;
  LinearSiLU(int64_t in, int64_t out, Generator& gen);
  Tensor forward(const Tensor& x) const { return silu(linear->forward(x)); }
};

class GatedAttentionUnit : public TokenMixer {
 public:
  GatedAttentionUnit(const ModelConfig& c, RecurrenceForm form, Generator& gen, double proj_std);
  Tensor forward(const Tensor& x, const MixerContext& ctx, MixerState* state) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;

  const bool mixed_chunk;  // FLASH
  const int64_t dim, expansion, qk_dim, n;
  const int64_t chunk;
  RecurrenceForm form;  // training form (GAU's one chunk makes chunkwise and parallel the same T×T product)
  std::shared_ptr<LinearSiLU> to_hidden, to_qk;
  std::shared_ptr<Linear> to_out;
  Tensor gamma, beta;   // qk_offset_scale: [2 or 4, s] (rows: GAU q, k; FLASH quad_q, lin_q, quad_k, lin_k)
  Tensor rel_pos_bias;  // [group()]: the score bias per distance
  const bool token_shift;
  std::shared_ptr<Rotary> rotary;  // partial RoPE on the q and k heads, or null
  // Positions one quadratic part spans: FLASH's chunk C, GAU's context n.
  int64_t group() const { return mixed_chunk ? chunk : n; }
};

// The mixer table's sequence_flops for GAU (quadratic) and FLASH (mixed chunk).
int64_t gau_sequence_flops(const ModelConfig& c, RecurrenceForm form, int64_t b, int64_t s, std::string* formula);

// Checks of the GAU options that join fields: the rotated width min(r, s) is even.
void gau_validate(const ModelConfig& c);

// Decoding state of GAU (its keys and values: it grows) and FLASH (Σ k'vᵀ over
// finished chunks and the current chunk's keys and values: bounded), and the
// token shift's last token.
struct GauState : MixerState {
  GauAttentionState core;
  Tensor shifted;  // [B, ⌈d/2⌉]: first half of the last real token's input (token shift)
  int64_t bytes() const override;
};

}  // namespace tapelm::nn
