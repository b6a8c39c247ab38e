// Incremental decoding speed against context length and batch (no grad): the
// bake-off's generation-speed table and picture, and `tapelm_bench --decode`.
#pragma once
#include <cstdint>
#include <vector>

#include "nn/model.h"

namespace tapelm::train {

struct DecodePoint {
  int64_t context;      // tokens already in the state when timing starts (+1)
  int64_t batch;        // sequences decoded together
  double tokens_per_s;  // batch / the median step time
  int64_t state_bytes;  // KV cache or recurrent state per sequence, after timing
};

// For each context c: prefill c−1 random tokens into a fresh DecodeState of
// `batch` sequences (in pieces of at most 256 tokens, so attention's scores
// stay small), then time `tokens` steps of one new token per sequence, each
// on its own: the median step is the speed (a small model's step at many
// threads is a few hundred microseconds, where one late thread wake-up or page
// fault would swing a mean several-fold). The model's block_size must hold
// c − 1 + tokens positions.
std::vector<DecodePoint> measure_decode_speed(nn::GPT& model, const std::vector<int64_t>& contexts, int64_t tokens,
                                              int64_t batch = 1, uint64_t seed = 1337);

}  // namespace tapelm::train
