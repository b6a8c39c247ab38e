// The token-mixer slot of a block: softmax attention, the linear-attention
// family, GAU/FLASH, Mamba and Mamba-2. A mixer maps [B, T, C] -> [B, T, C] and can either run
// over a whole sequence (training) or continue from a decoding state.
#pragma once
#include <memory>
#include <string>

#include "nn/module.h"

namespace tapelm::nn {

struct MixerContext {
  Tensor pad_mask;   // [B, T] bool, true at padding; undefined = no padding
  Tensor positions;  // [B, T] int32 position ids (see position_ids)
  // Self-attention's causal and key-padding mask [B, 1, T, T] over this input,
  // the same for every layer: made by the first layer that asks, reused by the rest.
  mutable Tensor self_attention_mask;
};

// Per-sequence decoding state of one layer (a KV cache, a recurrent state...).
struct MixerState {
  virtual ~MixerState() = default;
  virtual int64_t bytes() const = 0;  // memory held, for the generation-speed report
};

// A mixer's own decoding state: nullptr for the whole-sequence form, the state
// cast to S otherwise (an Error naming the mixer if it is another kind).
template <class S>
S* state_as(MixerState* state, const std::string& mixer) {
  if (!state) return nullptr;
  S* s = dynamic_cast<S*>(state);
  TAPELM_CHECK(s, "{}: the decoding state belongs to another mixer", mixer);
  return s;
}

class TokenMixer : public Module {
 public:
  // With state == nullptr: the whole-sequence (training) form. With a state:
  // continue from it and update it; outputs equal the whole-sequence form's.
  virtual Tensor forward(const Tensor& x, const MixerContext& ctx, MixerState* state) = 0;
  virtual std::unique_ptr<MixerState> init_state(int64_t batch) const = 0;
};

}  // namespace tapelm::nn
