// The training run behind `tapelm train`: options, the loop, evaluation,
// logging (progress line, log.jsonl, loss.svg), checkpoints, and a clean stop
// on NaN/Inf loss or Ctrl-C.
#pragma once
#include <string>
#include <vector>

#include "nn/config.h"

namespace tapelm::train {

struct TrainOptions {
  std::vector<std::string> data;
  std::string out = "runs/default";
  nn::ModelConfig model;
  std::string tokenizer = "char";
  int64_t vocab_size = 512;  // bpe only
  std::string batch_mode = "windows";
  std::string doc_sep;
  double val_fraction = 0.1;
  int64_t batch = 12;
  int64_t grad_accum = 1;
  int64_t steps = 2000;
  std::string optimizer = "adamw";
  double lr = 1e-3;
  double min_lr = 1e-4;
  std::string schedule = "cosine";
  int64_t warmup = 100;
  int64_t lr_decay_steps = 0;  // where the cosine reaches min_lr; 0 = steps
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.99;
  double grad_clip = 1.0;
  int64_t eval_interval = 250;
  int64_t eval_batches = 20;
  int64_t log_interval = 10;
  int64_t checkpoint_interval = 0;  // 0 = at every evaluation
  uint64_t seed = 1337;
  int threads = 0;  // 0 = all cores
  bool resume = false;
  bool quiet = false;

  std::string to_json() const;  // the run's options, stored in checkpoints
};

// Sets the OpenMP and Eigen thread count (n <= 0: leave the default, all cores).
void set_threads(int n);

// Returns the process exit code: 0 done, 3 stopped on a non-finite loss,
// 130 interrupted (checkpoint saved).
int run_training(TrainOptions opt, const std::vector<std::string>& explicit_model_flags);

// Draws train and validation loss against steps into an SVG file.
void write_loss_svg(const std::string& path, const std::vector<std::pair<int64_t, double>>& train,
                    const std::vector<std::pair<int64_t, double>>& val, const std::string& title);

}  // namespace tapelm::train
