// `tapelm compare`: the bake-off. Trains every chosen mixer at (nearly) the
// non-embedding parameter count N of the reference softmax-attention model,
// on the same corpus, seed, batches, steps and optimizer, then draws
//   loss_vs_flops.svg  validation loss against cumulative training FLOPs C
//   decode_speed.svg   incremental decoding tokens/s against context length
// and writes results.md (the table behind both pictures). Each mixer's run is
// an ordinary training run in <out>/<mixer> (checkpoint, log.jsonl, loss.svg).
#pragma once
#include <string>
#include <vector>

#include "train/trainer.h"

namespace tapelm::train {

struct CompareOptions {
  TrainOptions train;               // corpus, schedule, batch, seed, threads; model = the attention reference
  std::vector<std::string> mixers;  // empty = every mixer
  std::vector<std::string> given;   // model config keys set on the command line: each mixer's recipe leaves them
  std::vector<int64_t> decode_contexts{64, 256, 1024, 4096};
  int64_t decode_tokens = 32;
};

// The width whose model (with its mixer's recipe for the fields not in
// `given`) has the non-embedding parameter count nearest to `target_n`
// (widths step so heads have an even width and Mamba-2 heads divide 2d).
int64_t matched_width(nn::ModelConfig config, int64_t target_n, const std::vector<std::string>& given = {});

int run_compare(CompareOptions options);

}  // namespace tapelm::train
