// The decoder-only language model: token (+ position) embedding, n_layer
// pre-norm blocks  x += mixer(norm(x)); x += ffn(norm(x)),  a final norm and
// the LM head. With the default config it is nanoGPT's GPT, parameter names
// and shapes included (transformer.wte.weight, transformer.h.0.attn.c_attn.weight, ...).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/attention.h"
#include "nn/config.h"
#include "nn/dropout.h"
#include "nn/feedforward.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "nn/position.h"

namespace tapelm::nn {

class Block : public Module {
 public:
  Block(const ModelConfig& c, std::shared_ptr<Rotary> rotary, Generator& gen, Generator* dropout_gen);
  Tensor forward(const Tensor& x, const MixerContext& ctx, MixerState* state);
  std::shared_ptr<Norm> ln_1, ln_2;
  std::shared_ptr<TokenMixer> attn;
  std::shared_ptr<FeedForward> mlp;
};

// Holds `transformer.*` so names match nanoGPT's ModuleDict.
class Transformer : public Module {
 public:
  Transformer(const ModelConfig& c, std::shared_ptr<Rotary> rotary, Generator& gen, Generator* dropout_gen);
  std::shared_ptr<Embedding> wte;
  std::shared_ptr<PositionEmbedding> wpe;  // absolute positions; null for rope and none
  std::shared_ptr<Dropout> drop;
  std::vector<std::shared_ptr<Block>> h;
  std::shared_ptr<Norm> ln_f;
};

// Decoding state for incremental generation: one mixer state per layer and the
// number of real tokens each sequence has consumed.
struct DecodeState {
  std::vector<std::unique_ptr<MixerState>> layers;
  std::vector<int32_t> seen;
  int64_t bytes() const;
};

class GPT : public Module {
 public:
  GPT(const ModelConfig& config, Generator& init_gen);

  // idx: int32 [B, T]; pad_mask: bool [B, T], true at padding (optional).
  // Returns logits [B, T, vocab]. With a state, continues decoding from it.
  Tensor forward(const Tensor& idx, const Tensor& pad_mask = Tensor(), DecodeState* state = nullptr);
  // Mean cross-entropy over targets that are neither padding nor ignore_index (−1).
  Tensor loss(const Tensor& idx, const Tensor& targets, const Tensor& pad_mask = Tensor());
  // True when decoding can run past block_size in constant memory: no
  // position embedding, and a recurrent mixer (its state is bounded).
  bool decodes_past_context() const;
  DecodeState init_decode(int64_t batch) const;

  // Non-embedding parameters (N in C ≈ 6ND): all but token and position embeddings
  // (a tied head counts as the embedding).
  int64_t num_non_embedding_parameters() const;
  // Parameter counts per module, with the 12·l·d² check.
  std::string describe() const;

  const ModelConfig config;
  std::shared_ptr<Transformer> transformer;
  // No bias (GPT-2's and every reference's): loss() takes the classifier and
  // its cross-entropy as one op (linear_cross_entropy).
  std::shared_ptr<Linear> lm_head;
  Generator dropout_gen;  // draws every dropout mask; part of a checkpoint's RNG state

 private:
  // The final normalized hidden states [B, T, n_embd]: forward() before the classifier.
  Tensor hidden(const Tensor& idx, const Tensor& pad_mask, DecodeState* state);
  std::shared_ptr<Rotary> rotary_;  // position rope: the table every attention layer rotates q and k by
};

}  // namespace tapelm::nn
