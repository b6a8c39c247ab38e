#include "train/run_options.h"

#include <limits>
#include <nlohmann/json.hpp>

namespace tapelm::train {

// Bounds keep every count derived from them (tokens, steps × batch) far from
// int64 overflow; a double's range is half-open, so ∞ and NaN are refused.
const std::vector<RunField>& run_fields() {
  using O = TrainOptions;
  constexpr double count = double(int64_t(1) << 40), inf = std::numeric_limits<double>::infinity();
  static const std::vector<RunField> fields{
      {.key = "data", .flag = "--data", .member = &O::data, .help = "Corpus: text file(s) or folder(s) of text files"},
      {.key = "tokenizer",
       .flag = "--tokenizer",
       .member = &O::tokenizer,
       .choices = {"char", "byte", "bpe"},
       .help = "Tokenizer"},
      {.key = "vocab_size",
       .flag = "--vocab-size",
       .member = &O::vocab_size,
       .lo = 256,
       .hi = double(1 << 24),
       .help = "BPE vocabulary size"},
      {.key = "batch_mode",
       .flag = "--batch-mode",
       .member = &O::batch_mode,
       .choices = {"windows", "documents"},
       .help = "windows (random contiguous windows) or documents (padded, masked)"},
      {.key = "doc_sep",
       .flag = "--doc-sep",
       .member = &O::doc_sep,
       .help = "Document separator line for --batch-mode documents (empty = blank lines)"},
      {.key = "val_fraction",
       .flag = "--val-fraction",
       .member = &O::val_fraction,
       .lo = 0,
       .hi = 1,
       .help = "Fraction of the corpus held out for validation (the end)"},
      {.key = "batch",
       .flag = "--batch",
       .member = &O::batch,
       .lo = 1,
       .hi = double(1 << 20),
       .help = "Sequences per micro-batch B (with MPI: the global batch)"},
      {.key = "grad_accum",
       .flag = "--grad-accum",
       .member = &O::grad_accum,
       .lo = 1,
       .hi = double(1 << 20),
       .help = "Micro-batches accumulated per optimizer step"},
      {.key = "steps",
       .flag = "--steps",
       .member = &O::steps,
       .lo = 1,
       .hi = count,
       .help = "Optimizer steps (total, including resumed ones)"},
      {.key = "optimizer",
       .flag = "--optimizer",
       .member = &O::optimizer,
       .choices = {"adamw", "sgd"},
       .help = "Optimizer"},
      {.key = "lr", .flag = "--lr", .member = &O::lr, .lo = 0, .hi = inf, .help = "Peak learning rate"},
      {.key = "min_lr",
       .flag = "--min-lr",
       .member = &O::min_lr,
       .lo = 0,
       .hi = inf,
       .help = "Learning rate at the end of the cosine"},
      {.key = "schedule",
       .flag = "--schedule",
       .member = &O::schedule,
       .choices = {"cosine", "constant"},
       .help = "cosine (warm-up, then cosine to --min-lr) or constant"},
      {.key = "warmup", .flag = "--warmup", .member = &O::warmup, .lo = 0, .hi = count, .help = "Linear warm-up steps"},
      {.key = "lr_decay_steps",
       .flag = "--lr-decay-steps",
       .member = &O::lr_decay_steps,
       .lo = 0,
       .hi = count,
       .help = "Step where the cosine reaches --min-lr (0 = --steps); set it to stop early and resume later on the "
               "same schedule"},
      {.key = "weight_decay",
       .flag = "--weight-decay",
       .member = &O::weight_decay,
       .lo = 0,
       .hi = inf,
       .help = "AdamW decay of matrices and embeddings (never of 1-D parameters, nor of a mixer's A_log, D, "
               "dt_bias)"},
      {.key = "beta1", .flag = "--beta1", .member = &O::beta1, .lo = 0, .hi = 1, .help = "AdamW β1 (SGD momentum)"},
      {.key = "beta2", .flag = "--beta2", .member = &O::beta2, .lo = 0, .hi = 1, .help = "AdamW β2"},
      {.key = "grad_clip",
       .flag = "--grad-clip",
       .member = &O::grad_clip,
       .lo = 0,
       .hi = inf,
       .help = "Clip the global gradient norm to this (0 = off)"},
      {.key = "eval_interval",
       .flag = "--eval-interval",
       .member = &O::eval_interval,
       .lo = 1,
       .hi = count,
       .help = "Steps between validation evaluations (and checkpoints)"},
      {.key = "eval_batches",
       .flag = "--eval-batches",
       .member = &O::eval_batches,
       .lo = 1,
       .hi = double(1 << 20),
       .help = "Batches averaged per evaluation"},
      {.key = "log_interval",
       .flag = "--log-interval",
       .member = &O::log_interval,
       .lo = 1,
       .hi = count,
       .help = "Steps between progress lines"},
      {.key = "checkpoint_interval",
       .flag = "--checkpoint-interval",
       .member = &O::checkpoint_interval,
       .lo = 0,
       .hi = count,
       .help = "Steps between checkpoints (0 = at each evaluation)"},
      {.key = "seed",
       .flag = "--seed",
       .member = &O::seed,
       .lo = 0,
       .hi = double(int64_t(1) << 62),
       .help = "Seed for weights, batches and dropout"},
      {.key = "threads",
       .flag = "--threads",
       .member = &O::threads,
       .lo = 0,
       .hi = 1024,
       .help = "OpenMP/Eigen threads (0 = all cores)"},
  };
  return fields;
}

void TrainOptions::validate() const { check_fields(*this, run_fields(), "train"); }

std::string TrainOptions::to_json() const { return fields_to_json(*this, run_fields()).dump(); }

TrainOptions TrainOptions::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(fmt::format("train options: not valid JSON: {}", e.what()));
  }
  TrainOptions o;
  fields_from_json(o, run_fields(), j, "train options");
  return o;
}

}  // namespace tapelm::train
