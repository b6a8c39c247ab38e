// Text generation from a trained model, as Hugging Face's generate() samples:
// a repetition penalty on the tokens already in the text (CTRL, Keskar et al.
// 2019: a positive logit divided by it, a negative one multiplied), then the
// temperature (0 = greedy argmax), top-k and top-p (nucleus, Holtzman et al.
// 2020: the fewest most likely tokens whose probabilities reach p), then a
// draw. Generation continues from the model's decoding state (attention's KV
// cache), so each new token costs one position of work.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "autograd/fields.h"
#include "data/tokenizer.h"
#include "nn/model.h"

namespace tapelm::train {

struct SampleOptions {
  int64_t tokens = 200;
  double temperature = 0.8;
  int64_t top_k = 0;                // 0 = all
  double top_p = 1.0;               // 1 = all
  double repetition_penalty = 1.0;  // 1 = none
  int64_t num_samples = 1;          // sample i draws from seed + i
  std::string stop;                 // end a sample where its text first contains this ("" = never)
  int64_t seed = 1337;
};
// Their schema (autograd/fields.h): `tapelm sample`'s flags and their domains.
using SampleField = Field<SampleOptions>;
const std::vector<SampleField>& sample_fields();

// Generates after `prompt` (token ids, at least one); calls on_token for each
// new id as it is produced, and stops early when it returns false. A model that decodes past its context
// (GPT::decodes_past_context: a recurrent mixer, no position embedding) goes
// on from its state for any number of tokens, in constant memory. Any other
// model, when its context fills, restarts from the last half-context of
// tokens: one recompute of block_size/2 tokens every block_size/2 tokens
// (nanoGPT instead recomputes the full last window for every token).
std::vector<int32_t> generate(nn::GPT& model, std::vector<int32_t> prompt, const SampleOptions& opt,
                              const std::function<bool(int32_t)>& on_token = nullptr);

// Picks a token from logits [V] after the ids of the text so far (for the
// repetition penalty); exposed for tests.
int32_t pick_token(const float* logits, int64_t V, const SampleOptions& opt, const std::vector<int32_t>& text,
                   Generator& gen);

}  // namespace tapelm::train
