#include "train/sampler.h"

#include <algorithm>
#include <cmath>

#include "autograd/ops.h"

namespace tapelm::train {

int32_t pick_token(const float* logits, int64_t V, double temperature, int64_t top_k, Generator& gen) {
  if (temperature <= 0) return (int32_t)(std::max_element(logits, logits + V) - logits);
  std::vector<double> z(logits, logits + V);
  if (top_k > 0 && top_k < V) {
    std::vector<double> sorted = z;
    std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<>());
    const double kth = sorted[top_k - 1];
    for (auto& v : z)
      if (v < kth) v = -INFINITY;
  }
  const double m = *std::max_element(z.begin(), z.end());
  double total = 0;
  for (auto& v : z) total += (v = std::exp((v - m) / temperature));
  double u = gen.uniform() * total;
  for (int64_t i = 0; i < V; ++i) {
    u -= z[i];
    if (u < 0) return (int32_t)i;
  }
  return (int32_t)(V - 1);
}

const std::vector<SampleField>& sample_fields() {
  using O = SampleOptions;
  static const std::vector<SampleField> fields{
      {.key = "tokens",
       .flag = "--tokens",
       .member = &O::tokens,
       .lo = 0,
       .hi = double(int64_t(1) << 40),
       .help = "Tokens to generate"},
      {.key = "temperature",
       .flag = "--temperature",
       .member = &O::temperature,
       .lo = 0,
       .hi = 1e6,
       .help = "Softmax temperature; 0 = greedy argmax"},
      {.key = "top_k",
       .flag = "--top-k",
       .member = &O::top_k,
       .lo = 0,
       .hi = double(int64_t(1) << 24),
       .help = "Sample among the k most likely tokens (0 = all)"},
      {.key = "seed",
       .flag = "--seed",
       .member = &O::seed,
       .lo = 0,
       .hi = double(int64_t(1) << 62),
       .help = "Sampling seed"},
  };
  return fields;
}

std::vector<int32_t> generate(nn::GPT& model, std::vector<int32_t> ids, const SampleOptions& opt,
                              const std::function<void(int32_t)>& on_token) {
  TAPELM_CHECK(!ids.empty(), "sample: the prompt must contain at least one token");
  NoGradGuard no_grad;
  model.eval();
  Generator gen(opt.seed);
  const int64_t ctx = model.config.block_size, V = model.config.vocab_size;
  // A recurrent model without positions carries its state on for ever; any
  // other one sees at most its context.
  const bool unbounded = model.decodes_past_context();
  if (!unbounded && (int64_t)ids.size() > ctx) ids.erase(ids.begin(), ids.end() - ctx);
  nn::DecodeState state = model.init_decode(1);
  auto feed = [&](const std::vector<int32_t>& toks) {
    Tensor logits = model.forward(from_ints(toks, {1, (int64_t)toks.size()}), Tensor(), &state);
    Tensor last = slice(logits, 1, -1, logits.size(1));
    return (last.is_cuda() ? last.to(Device::cpu) : last).to(DType::f32);  // the pick runs on the host
  };
  Tensor last = feed(ids);
  for (int64_t n = 0; n < opt.tokens; ++n) {
    int32_t next = pick_token(last.data<float>(), V, opt.temperature, opt.top_k, gen);
    ids.push_back(next);
    if (on_token) on_token(next);
    if (n + 1 == opt.tokens) break;
    if (!unbounded && state.seen[0] >= ctx) {  // context full: restart from the last half-context
      state = model.init_decode(1);
      last = feed(std::vector<int32_t>(ids.end() - ctx / 2, ids.end()));
    } else {
      last = feed({next});
    }
  }
  return ids;
}

}  // namespace tapelm::train
