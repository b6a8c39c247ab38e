#include "train/memory_plan.h"

#include <fmt/ranges.h>

#include <algorithm>

#include "autograd/autograd.h"
#include "nn/model.h"

namespace tapelm::train {

int64_t count_parameters(const nn::ModelConfig& c) {
  nn::ModelConfig one = c;
  one.n_layer = 1;
  Generator probe_gen(0);  // its own stream: the run's initialisation is untouched
  try {
    nn::GPT probe(one, probe_gen);
    int64_t block = 0;
    for (const nn::NamedParameter& p : probe.named_parameters())
      if (p.name.rfind("transformer.h.0.", 0) == 0) block += p.tensor.numel();
    return probe.num_parameters() + (c.n_layer - 1) * block;
  } catch (const MemoryLimitError& e) {
    throw Error(fmt::format("train: one block of this model (n_embd {}, {} mixer) does not fit: {}; lower --n-embd",
                            c.n_embd, c.mixer, e.what()));
  }
}

namespace {
TrainingMemory memory_of(int64_t parameters, const std::string& optimizer) {
  TrainingMemory m;
  m.parameters = parameters;
  const int64_t bytes = parameters * (int64_t)sizeof(float);
  m.weight_bytes = bytes;
  m.gradient_bytes = bytes;
  m.optimizer_bytes = (optimizer == "adamw" ? 2 : 1) * bytes;
  return m;
}
}  // namespace

TrainingMemory training_memory(const nn::ModelConfig& c, const std::string& optimizer) {
  return memory_of(count_parameters(c), optimizer);
}

TrainingMemory training_memory_of(const nn::GPT& model, const std::string& optimizer) {
  return memory_of(model.num_parameters(), optimizer);
}

void check_training_fits(const nn::ModelConfig& c, const std::string& optimizer) {
  const int64_t limit = tensor_memory_limit();
  if (limit <= 0) return;
  const TrainingMemory m = training_memory(c, optimizer);
  // In double: a config at the edge of every range overflows int64 bytes.
  const double need = (double)m.parameters * sizeof(float) * (optimizer == "adamw" ? 4 : 3);
  TAPELM_CHECK(need <= (double)limit,
               "train: the model has {} parameters (n_layer {}, n_embd {}); its weights, gradients and {} take {} "
               "before any activation, but tapelm may use {} ({}); lower --n-layer or --n-embd",
               m.parameters, c.n_layer, c.n_embd, optimizer == "adamw" ? "AdamW's two moments" : "SGD's momentum",
               format_bytes(need), format_bytes((double)limit), tensor_memory_limit_reason());
}

namespace {

// The tensor bytes a forward pass of one random sequence of t tokens leaves
// live for the backward (the activations the tape saves, and the loss); the
// tape is then cleared.
int64_t saved_by_forward(nn::GPT& model, int64_t t) {
  Generator gen(t);
  const int64_t vocab = model.config.vocab_size;
  const Tensor x = randint({1, t}, vocab, gen), y = randint({1, t}, vocab, gen);
  const int64_t before = Storage::live_bytes();
  int64_t saved = 0;
  {
    const Tensor loss = model.loss(x, y);
    saved = Storage::live_bytes() - before;
  }
  clear_tape();
  return saved;
}

}  // namespace

ActivationEstimate estimate_activations(nn::GPT& model, int64_t rows, int64_t context) {
  const nn::ModelConfig& c = model.config;
  const auto dropout_state = model.dropout_gen.state();
  auto activations = [&](int64_t t) { return (double)saved_by_forward(model, t); };
  ActivationEstimate e;
  // Lengths that hold whole chunks, so a chunkwise form is measured as it runs.
  const int64_t t = std::max<int64_t>(64, c.chunk_size);
  double per_row;
  if (context <= 4 * t) {  // short enough to measure as it is
    e.lengths = {context};
    per_row = activations(context);
  } else {
    // a + b·T + c·T² through t, 2t and 4t: attention's scores grow with T².
    e.lengths = {t, 2 * t, 4 * t};
    const double y1 = activations(t), y2 = activations(2 * t), y4 = activations(4 * t);
    const double quad = std::max((y4 - 3 * y2 + 2 * y1) / (6.0 * t * t), 0.0);  // ≥ 0: a floor, never a guess above
    const double lin = std::max((y2 - y1) / t - 3 * quad * t, 0.0);
    const double T = (double)context;
    per_row = y1 + lin * (T - t) + quad * (T * T - (double)t * t);
  }
  model.dropout_gen.set_state(dropout_state);
  e.bytes = (int64_t)std::min(per_row * (double)rows, 9e18);
  return e;
}

StepMemory check_step_fits(nn::GPT& model, int64_t rows, int64_t optimizer_bytes_to_come) {
  StepMemory m;
  m.limit = tensor_memory_limit();
  m.context = model.config.block_size;
  m.rows = rows;
  m.held = (double)Storage::live_bytes() + 4.0 * (double)model.num_parameters() + (double)optimizer_bytes_to_come;
  m.activations = estimate_activations(model, rows, m.context);
  TAPELM_CHECK(m.limit <= 0 || m.total() <= (double)m.limit,
               "train: a step of {} × {} tokens needs about {}: {} of weights, gradients and optimizer state and {} "
               "of activations (measured on one sequence of {} tokens), but tapelm may use {} ({}); lower --batch (a "
               "larger --grad-accum keeps the tokens per step), --context or the model",
               rows, m.context, format_bytes(m.total()), format_bytes(m.held),
               format_bytes((double)m.activations.bytes), fmt::join(m.activations.lengths, ", "),
               format_bytes((double)m.limit), tensor_memory_limit_reason());
  return m;
}

}  // namespace tapelm::train
