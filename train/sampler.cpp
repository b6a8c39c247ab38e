#include "train/sampler.h"

#include <algorithm>
#include <cmath>

#include "autograd/ops.h"

namespace tapelm::train {

int32_t pick_token(const float* logits, int64_t V, const SampleOptions& opt, const std::vector<int32_t>& text,
                   Generator& gen) {
  std::vector<double> z(logits, logits + V);
  if (opt.repetition_penalty != 1.0) {
    std::vector<bool> seen(V, false);
    for (int32_t id : text)
      if (id >= 0 && id < V && !seen[id]) {
        seen[id] = true;
        z[id] = z[id] > 0 ? z[id] / opt.repetition_penalty : z[id] * opt.repetition_penalty;
      }
  }
  if (opt.temperature <= 0) return (int32_t)(std::max_element(z.begin(), z.end()) - z.begin());
  const int64_t top_k = opt.top_k > 0 && opt.top_k < V ? opt.top_k : V;
  if (top_k < V) {
    std::vector<double> sorted = z;
    std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<>());
    const double kth = sorted[top_k - 1];
    for (auto& v : z)
      if (v < kth) v = -INFINITY;
  }
  const double m = *std::max_element(z.begin(), z.end());
  double total = 0;
  for (auto& v : z) total += (v = std::exp((v - m) / opt.temperature));
  if (opt.top_p < 1.0) {  // keep the most likely tokens until their share reaches top_p (at least one)
    std::vector<int32_t> order(V);
    for (int32_t i = 0; i < V; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return z[a] > z[b]; });
    double kept = 0;
    int64_t n = 0;
    while (n < V && (n == 0 || kept < opt.top_p * total)) kept += z[order[n++]];
    for (int64_t i = n; i < V; ++i) z[order[i]] = 0;
    total = kept;
  }
  double u = gen.uniform() * total;
  for (int64_t i = 0; i < V; ++i) {
    u -= z[i];
    if (u < 0 && z[i] > 0) return (int32_t)i;
  }
  for (int64_t i = V - 1; i >= 0; --i)  // rounding left u ≥ 0: the last token still in the running
    if (z[i] > 0) return (int32_t)i;
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
      {.key = "top_p",
       .flag = "--top-p",
       .member = &O::top_p,
       .lo = 0,
       .hi = 1.000001,
       .help = "Sample among the fewest most likely tokens whose probabilities add up to p, in (0, 1] (1 = all)"},
      {.key = "repetition_penalty",
       .flag = "--repetition-penalty",
       .member = &O::repetition_penalty,
       .lo = 1e-3,
       .hi = 1e3,
       .help = "Divide the positive logits of tokens already in the text by this, multiply the negative ones (1 = "
               "none; Hugging Face's repetition_penalty)"},
      {.key = "num_samples",
       .flag = "--num-samples",
       .member = &O::num_samples,
       .lo = 1,
       .hi = 1e6,
       .help = "Independent samples, each from the prompt (sample i draws from seed + i)"},
      {.key = "stop",
       .flag = "--stop",
       .member = &O::stop,
       .help = "End a sample where its generated text first contains this string (left out of the output)"},
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
                              const std::function<bool(int32_t)>& on_token) {
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
    int32_t next = pick_token(last.data<float>(), V, opt, ids, gen);
    ids.push_back(next);
    if (on_token && !on_token(next)) break;
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
