// The options of one training run, and their schema. Beside the model's
// (nn::config_fields), run_fields() declares every run option once: its JSON
// key, flag, domain and help. The flags of `tapelm train` and `compare`, the
// run's JSON (a checkpoint's `train` metadata, compare's child runs) and
// `eval`'s reading of it back all come from that table.
#pragma once
#include <string>
#include <vector>

#include "autograd/fields.h"
#include "nn/config.h"

namespace tapelm::train {

struct TrainOptions {
  // Per invocation, not part of the run's JSON: where it writes, whether it
  // continues, how much it prints.
  std::string out = "runs/default";
  bool resume = false;
  std::string init_from;   // a Hugging Face model folder to start from (train/hugging_face.h)
  bool overwrite = false;  // start a new run in an --out that holds one
  bool quiet = false;
  nn::ModelConfig model;  // its own schema (nn::config_fields)
  // The run (run_fields()).
  std::vector<std::string> data;
  std::string tokenizer = "char";
  int64_t vocab_size = 512;  // bpe only
  std::string batch_mode = "windows";
  std::string doc_sep;
  double val_fraction = 0.1;
  int64_t batch = 12;
  int64_t grad_accum = 1;
  int64_t steps = 2000;
  std::string optimizer = "adamw";
  std::string device = "cpu";      // where the model trains: cpu or cuda
  std::string precision = "fp32";  // the GPU's products: fp32 or bf16 (autograd/device.h)
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
  int64_t seed = 1337;
  int64_t threads = 0;  // 0 = all cores

  // Each run field in its domain (throws Error naming the field).
  void validate() const;
  std::string to_json() const;  // every run field (not out, resume, quiet, model)
  // The run fields of a JSON object (a missing key keeps its default: an older checkpoint), validated.
  static TrainOptions from_json(const std::string& json);
};

// The most --threads any command takes.
inline constexpr int kMaxThreads = 1024;

using RunField = Field<TrainOptions>;
const std::vector<RunField>& run_fields();

}  // namespace tapelm::train
