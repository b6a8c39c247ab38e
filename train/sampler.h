// Text generation from a trained model: temperature and top-k sampling
// (temperature 0 = greedy argmax), continuing from the model's decoding state
// (attention's KV cache) so each new token costs one position of work.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "nn/model.h"

namespace tapelm::train {

struct SampleOptions {
  int64_t tokens = 200;
  double temperature = 0.8;
  int64_t top_k = 0;  // 0 = all
  uint64_t seed = 1337;
};

// Generates after `prompt` (token ids, at least one); calls on_token for each
// new id as it is produced. When the context fills, decoding restarts from the
// last half-context of tokens.
std::vector<int32_t> generate(nn::GPT& model, std::vector<int32_t> prompt, const SampleOptions& opt,
                              const std::function<void(int32_t)>& on_token = nullptr);

// Picks a token from logits [V] (exposed for tests).
int32_t pick_token(const float* logits, int64_t V, double temperature, int64_t top_k, Generator& gen);

}  // namespace tapelm::train
