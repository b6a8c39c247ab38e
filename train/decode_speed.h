// Incremental decoding speed against context length (batch 1, no grad): the
// bake-off's generation-speed picture and `tapelm_bench --decode`.
#pragma once
#include <cstdint>
#include <vector>

#include "nn/model.h"

namespace tapelm::train {

struct DecodePoint {
  int64_t context;  // tokens already in the state when timing starts (+1)
  double tokens_per_s;
  int64_t state_bytes;  // KV cache or recurrent state of the one sequence, after timing
};

// For each context c: prefill c−1 random tokens into a fresh DecodeState with
// one forward, then time `tokens` single-token forwards. The model's
// block_size must hold c − 1 + tokens positions.
std::vector<DecodePoint> measure_decode_speed(nn::GPT& model, const std::vector<int64_t>& contexts, int64_t tokens,
                                              uint64_t seed = 1337);

}  // namespace tapelm::train
