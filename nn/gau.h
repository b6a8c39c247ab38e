// Gated Attention Unit (Hua et al. 2022, "Transformer Quality in Linear Time",
// §2), the block that replaces both attention and the FFN:
//   U = silu(x W_u), V = silu(x W_v)          width e = 2·d   (to_hidden)
//   Z = silu(x W_z)                            width s = 128   (to_qk)
//   Q = Z ⊙ γ_q + β_q,  K = Z ⊙ γ_k + β_k      (qk_offset_scale)
//   A = relu²(QKᵀ/√s) / n,  causal and key-padding masked to 0
//   O = (U ⊙ A V) W_o                                          (to_out)
// Parameter names follow lucidrains/FLASH-pytorch. n is the context length
// (a constant, so decoding gives the same numbers as the full forward). GAU is
// FLASH below with one chunk; decoding caches K and V like attention.
//
// FLASH (mixer "flash", §3 of the paper): the mixed-chunk form, linear in T.
// Positions are grouped into chunks of C (chunk id = position id / C, so
// padding never shifts them); within a chunk the quadratic relu² attention
// above (causal), across chunks linear attention over all earlier chunks:
//   Ô_t = Σ_{s ≤ t, same chunk} relu²(q_t·k_s/√s)/n v_s + q'_tᵀ Σ_{chunks before} k'_s v_sᵀ / n
// with Q', K' two more scale/offset heads of Z. Both are projections plus one
// call into autograd's fused gau_attention, in its forms: parallel (T×T masks,
// O(T²)); chunkwise (per chunk, S = Σ k'vᵀ carried across chunks, O(T·C));
// recurrent, as decoding runs: a state Σ k'vᵀ over finished chunks plus the
// current chunk's keys and values, O(C) per token.
#pragma once
#include "autograd/ops.h"
#include "nn/config.h"
#include "nn/linear.h"
#include "nn/mixer.h"

namespace tapelm::nn {

class GatedAttentionUnit : public TokenMixer {
 public:
  GatedAttentionUnit(const ModelConfig& c, Generator& gen, double proj_std);
  Tensor forward(const Tensor& x, const MixerContext& ctx, MixerState* state) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;

  const bool mixed_chunk;  // FLASH
  const int64_t dim, expansion, qk_dim, n;
  int64_t chunk;
  RecurrenceForm form;  // training form (GAU's one chunk makes chunkwise and parallel the same T×T product)
  std::shared_ptr<Linear> to_hidden, to_qk, to_out;
  Tensor gamma, beta;  // qk_offset_scale: [2 or 4, s] (rows: Q, K, then FLASH's Q', K')
};

// The mixer table's sequence_flops for GAU (quadratic) and FLASH (mixed chunk).
int64_t gau_sequence_flops(const ModelConfig& c, int64_t b, int64_t s, std::string* formula);

// Decoding state of GAU (its keys and values: it grows) and FLASH (Σ k'vᵀ over
// finished chunks and the current chunk's keys and values: bounded).
struct GauState : MixerState {
  GauAttentionState core;
  int64_t bytes() const override { return core.bytes(); }
};

}  // namespace tapelm::nn
