// Checkpoints: a directory holding
//   model.safetensors            float32 weights under PyTorch names; its
//                                __metadata__ carries everything needed to
//                                rebuild and decode (see README, Checkpoint format)
//   optimizer-<step>.safetensors optimizer moments, RNG states
// Writing is crash-safe: the optimizer file is written first (temp + rename),
// then model.safetensors is replaced atomically — the commit point, naming its
// optimizer file — and only then are older optimizer files removed. Whatever
// instant a crash hits, the directory holds a complete old or new checkpoint.
//
// model.safetensors metadata keys:
//   format        "tapelm-checkpoint-1"
//   config        the model config (JSON, nn::ModelConfig)
//   tokenizer     the tokenizer (JSON, data::Tokenizer)
//   step          optimizer steps taken
//   train         the training options of the run (JSON)
//   optimizer     file name of the matching optimizer state
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autograd/safetensors.h"
#include "data/tokenizer.h"
#include "nn/model.h"
#include "optim/optimizer.h"
#include "train/run_options.h"

namespace tapelm::train {

struct Checkpoint {
  nn::ModelConfig config;
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::unique_ptr<nn::GPT> model;
  int64_t step = 0;
  std::string train_options_json;  // the run's options (metadata 'train') as stored
  TrainOptions train_options;      // the same, read and checked
  std::string optimizer_file;      // path, empty if none
};

// Loads model.safetensors from dir (weights, config, tokenizer). Throws Error
// with a clear message for a missing, truncated, corrupt or mismatched file.
Checkpoint load_checkpoint(const std::string& dir);

struct RngStates {
  Generator::State batches, dropout;
  // Data parallel: every rank's dropout generator (rank 0's is `dropout`);
  // empty for a single process.
  std::vector<Generator::State> dropout_of_rank;
};

void save_checkpoint(const std::string& dir, const nn::GPT& model, const data::Tokenizer& tok,
                     const optim::Optimizer& opt, const RngStates& rng, int64_t step,
                     const std::string& train_options_json);

// Restores optimizer moments and RNG states saved beside a checkpoint.
void load_training_state(const Checkpoint& ck, optim::Optimizer& opt, RngStates& rng);

std::string encode_rng(const Generator::State& s);
Generator::State decode_rng(const std::string& text);

}  // namespace tapelm::train
