// Multi-head scaled dot-product attention (Vaswani et al. 2017):
//   Attention(Q, K, V) = softmax(QKᵀ/√d_k + M) V   per head, then c_proj.
// Q, K, V come from one fused projection c_attn (nanoGPT's layout). The mask M
// is −∞ where a key is in the future (causal) or is padding; a query whose keys
// are all masked gets zeros. With an AttentionCache, keys and values of earlier
// tokens are reused (KV cache) and outputs equal the full forward.
#pragma once
#include <memory>

#include "nn/config.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "nn/mixer.h"
#include "nn/position.h"

namespace tapelm::nn {

// Keys and values of the tokens seen so far, in buffers [B, capacity, ...]
// (time on axis 1) that grow by doubling, so a decoding step writes only its
// own rows instead of copying the whole cache. Slots past `length` are
// marked as padding in key_pad, so attention over the whole buffer ignores them.
struct AttentionCache : MixerState {
  Tensor k, v;                     // [B, capacity, ...]
  Tensor key_pad;                  // [B, capacity] bool: padding tokens and unused slots are true
  int64_t length = 0;              // time steps filled
  int64_t bytes() const override;  // of the filled part: length steps of k, v and key_pad
  // Writes new keys [B, T, ...], values and key padding [B, T] at `length`.
  void append(const Tensor& new_k, const Tensor& new_v, const Tensor& new_pad);
};

class MultiHeadAttention : public TokenMixer {
 public:
  // rotary may be null (no RoPE). proj_std: init std of c_proj.weight.
  MultiHeadAttention(int64_t dim, int64_t n_head, bool bias, double dropout, std::shared_ptr<Rotary> rotary,
                     Generator& init_gen, Generator* dropout_gen, double proj_std = 0.02);
  Tensor forward(const Tensor& x, const MixerContext& ctx, MixerState* state) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;

  int64_t dim, n_head, head_dim;
  std::shared_ptr<Linear> c_attn, c_proj;
  std::shared_ptr<Dropout> attn_dropout, resid_dropout;  // nanoGPT's names

 private:
  // softmax(scale·QKᵀ masked) V through separate ops, for attention dropout.
  Tensor composed_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double scale) const;
  std::shared_ptr<Rotary> rotary_;
};

// Forward FLOPs of attention's sequence term (QKᵀ and AV) for b sequences of
// length s, with the formula in words (the mixer table's sequence_flops).
int64_t attention_sequence_flops(const ModelConfig& c, RecurrenceForm form, int64_t b, int64_t s, std::string* formula);

}  // namespace tapelm::nn
