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
//
// FLASH (mixer "flash", §3 of the paper): the mixed-chunk form, linear in T.
// Positions are grouped into chunks of C (chunk id = position id / C, so
// padding never shifts them); within a chunk the quadratic relu² attention
// above (causal), across chunks linear attention over all earlier chunks:
//   Ô_t = Σ_{s ≤ t, same chunk} relu²(q_t·k_s/√s)/n v_s + q'_tᵀ Σ_{chunks before} k'_s v_sᵀ / n
// with Q', K' two more scale/offset heads of Z. Forms: parallel (the masks
// above, O(T²)); chunkwise (per chunk, an exclusive cumulative sum of K'ᵀV over
// chunks, O(T·C)); recurrent decoding: a state Σ k'vᵀ over finished chunks plus
// the current chunk's keys and values, O(C) per token.
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

  const bool mixed_chunk;  // FLASH
  const int64_t dim, expansion, qk_dim, n;
  int64_t chunk;
  RecurrenceForm form;  // flash's training form (recurrent trains as parallel: only decoding is token by token)
  std::shared_ptr<Linear> to_hidden, to_qk, to_out;
  Tensor gamma, beta;  // qk_offset_scale: [2 or 4, s] (rows: Q, K, then FLASH's Q', K')

 private:
  Tensor flash_masked(const Tensor& u, const Tensor& v, const std::vector<Tensor>& qk, const Tensor& pad,
                      const Tensor& positions) const;
  Tensor flash_chunked(const Tensor& u, const Tensor& v, const std::vector<Tensor>& qk, const Tensor& pad) const;
  Tensor flash_decode(const Tensor& u, const Tensor& v, const std::vector<Tensor>& qk, const Tensor& pad,
                      const Tensor& positions, MixerState* state) const;
};

// The mixer table's sequence_flops for GAU (quadratic) and FLASH (mixed chunk).
int64_t gau_sequence_flops(const ModelConfig& c, int64_t b, int64_t s, std::string* formula);

// FLASH's decoding state: per sequence, Σ k'vᵀ over finished chunks and the
// keys/values of the current chunk.
struct FlashState : MixerState {
  std::vector<Tensor> S;                       // per row [s, e]
  std::vector<std::vector<Tensor>> kq, kl, v;  // per row, per cached token [s] / [e]
  std::vector<int64_t> chunk_id;               // per row, −1 before the first token
  int64_t bytes() const override;
};

}  // namespace tapelm::nn
