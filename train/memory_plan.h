// What a training run will hold, worked out before it allocates: the
// parameters (counted exactly), their gradients and the optimizer's state,
// then the activations of one step at the batch and context asked for
// (measured on one short sequence and extrapolated). A run whose figure
// exceeds the cap on tapelm's tensors (train/memory.h) is refused at once
// with the figure and what to lower. The estimate is a floor (memory that
// grows faster than the context is extrapolated linearly), so the cap also
// holds as the step allocates: a step that would pass it is refused the
// same way.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "nn/config.h"

namespace tapelm::nn {
class GPT;
}

namespace tapelm::train {

struct TrainingMemory {
  int64_t parameters = 0;       // exact count, tied weights once
  int64_t weight_bytes = 0;     // f32
  int64_t gradient_bytes = 0;   // one f32 gradient per parameter
  int64_t optimizer_bytes = 0;  // AdamW: m and v; SGD: the momentum buffer
  int64_t total() const { return weight_bytes + gradient_bytes + optimizer_bytes; }
};

// The parameters of the model of `c`, exactly, from a one-layer model: every
// block holds the same parameters, so N = N(1 layer) + (n_layer − 1)·N(block).
int64_t count_parameters(const nn::ModelConfig& c);

// `optimizer`: "adamw" or "sgd". Of a config (counting its parameters) or of a built model.
TrainingMemory training_memory(const nn::ModelConfig& c, const std::string& optimizer);
TrainingMemory training_memory_of(const nn::GPT& model, const std::string& optimizer);

// Throws Error with the figures and what to lower when the run's weights,
// gradients and optimizer state exceed the tensor memory limit (none set:
// never throws).
void check_training_fits(const nn::ModelConfig& c, const std::string& optimizer);

// One training step of `rows` sequences of `context` tokens: the activations
// it holds at its peak, estimated from the peak live tensor bytes of a
// forward and backward of `model` on one random sequence, at the context
// itself when it is short, else at t, 2t and 4t tokens (t = 64 or a chunk)
// through which a + b·T + c·T² is fitted and taken at the context; scaled by
// the rows. Leaves the model as it was: no gradients, the dropout stream
// untouched.
struct ActivationEstimate {
  int64_t bytes = 0;             // for the whole step
  std::vector<int64_t> lengths;  // the sequence lengths measured
};
ActivationEstimate estimate_activations(nn::GPT& model, int64_t rows, int64_t context);

// One step's memory, as planned before the first step runs.
struct StepMemory {
  int64_t rows = 0, context = 0;
  double held = 0;  // bytes live now, plus the gradients and optimizer state still to come
  ActivationEstimate activations;
  int64_t limit = 0;  // the tensor memory limit (0: none)
  double total() const { return held + (double)activations.bytes; }
};

// The memory of one step of `rows` sequences of the model's context: what is
// live now, the gradients and the optimizer state still to be allocated, and
// the activations. Throws Error with the figures and what to lower when it
// would take the live tensors past the limit.
StepMemory check_step_fits(nn::GPT& model, int64_t rows, int64_t optimizer_bytes_to_come);

}  // namespace tapelm::train
