#include "train/flop_report.h"

#include <fmt/format.h>

#include "autograd/ops.h"
#include "nn/mixers.h"
#include "nn/model.h"

namespace tapelm::train {

namespace {

// Parameters of the Linear layers (weights only: their bias adds are not
// matmul FLOPs) inside a module.
int64_t linear_weights(const nn::Module& m) {
  int64_t n = 0;
  for (auto& [name, sub] : m.named_modules())
    if (auto* lin = dynamic_cast<const nn::Linear*>(sub)) n += lin->weight.numel();
  return n;
}

}  // namespace

FlopReport flop_report(const nn::ModelConfig& config, int64_t batch, Device device) {
  FlopReport r;
  r.config = config;
  r.batch = batch;
  r.context = config.block_size;
  Generator gen(1);
  nn::GPT model(config, gen);
  model.to(device);
  const int64_t b = batch, s = config.block_size, n = b * s, L = config.n_layer;
  r.n_params = model.num_parameters();
  r.n_non_embedding = model.num_non_embedding_parameters();

  Tensor x = randint({b, s}, config.vocab_size, gen), y = randint({b, s}, config.vocab_size, gen);
  FlopCounter::reset();
  backward(model.loss(x, y));
  model.zero_grad();

  // Counted FLOPs of one component, matmuls (and fused sequence cores) vs the rest.
  const auto& tallies = FlopCounter::tallies();
  auto counted = [&](const std::string& component, bool matmul_like) {
    FlopTally t;
    for (auto& [key, v] : tallies) {
      if (key.first != component) continue;
      const bool is_core = key.second == "matmul" || key.second == "linear" || key.second == "attention" ||
                           key.second == "gated_recurrence" || key.second == "delta_rule" ||
                           key.second == "selective_scan" || key.second == "gau_attention";
      if (is_core == matmul_like) t += v;
    }
    return t;
  };
  const nn::Block& block = *model.transformer->h[0];
  auto add_row = [&](std::string name, std::string formula, int64_t fwd, FlopTally c) {
    r.rows.push_back({std::move(name), std::move(formula), fwd, 3 * fwd, c});
    r.analytic_train += 3 * fwd;
  };
  const int64_t w_mixer = linear_weights(*block.attn);
  add_row("mixer projections", fmt::format("2·n·W_mixer·l (W_mixer = {} Linear weights per layer)", w_mixer),
          2 * n * w_mixer * L, counted("mixer.proj", true));
  std::string seq_formula;
  const nn::MixerSpec& mixer = nn::mixer_spec(config.mixer);
  const int64_t seq = mixer.sequence_flops(config, nn::training_form(config), b, s, &seq_formula) * L;
  add_row("mixer sequence term", seq_formula + " × l", seq, counted("mixer", true));
  if (block.mlp) {
    const int64_t w_ffn = linear_weights(*block.mlp);
    add_row("FFN", fmt::format("2·n·W_ffn·l (W_ffn = {})", w_ffn), 2 * n * w_ffn * L, counted("ffn.proj", true));
  }
  const int64_t V = config.vocab_size, d = config.n_embd;
  add_row("LM head", "2·n·d·V", 2 * n * d * V, counted("lm_head.proj", true));
  for (auto& row : r.rows)
    if (row.name != "mixer sequence term" || mixer.sequence_is_gemm) r.analytic_matmul_train += row.analytic_train;

  // Everything else the counter saw, by component.
  auto other = [&](const std::string& name, std::vector<std::string> components, std::string what) {
    FlopTally t;
    for (auto& comp : components) t += counted(comp, false);
    r.rows.push_back({name, what, -1, -1, t});
  };
  other("mixer elementwise", {"mixer", "mixer.proj"}, "softmax, masks, scaling, activations, gates, biases");
  if (block.mlp) other("FFN elementwise", {"ffn", "ffn.proj"}, "activation, biases");
  other("norms", {"norm"}, "LayerNorm/RMSNorm/DyT");
  other("residual adds", {"residual"}, "x + f(x)");
  other("embedding", {"embedding"}, "token + position");
  other("loss", {"loss", "lm_head.proj", "lm_head"}, "log-softmax and NLL over V");
  r.counted = FlopCounter::total();
  r.counted_matmul = FlopCounter::of("matmul");
  r.counted_matmul += FlopCounter::of("linear");         // Linear layers' GEMMs
  r.counted_matmul += FlopCounter::of("attention");      // the fused attention op's GEMMs
  r.counted_matmul += FlopCounter::of("gau_attention");  // GAU/FLASH's, likewise
  FlopCounter::reset();
  return r;
}

std::string format_flop_report(const FlopReport& r) {
  const nn::ModelConfig& c = r.config;
  const int64_t l = c.n_layer, d = c.n_embd, s = r.context, n = r.batch * s, V = c.vocab_size;
  std::string out;
  out += fmt::format(
      "FLOPs of one training step: {} mixer, n_layer {}, n_embd {}, n_head {}, vocab {}, batch b = {}, "
      "context s = {} (n = b·s = {} tokens)\n",
      c.mixer, l, d, c.n_head, V, r.batch, s, n);
  out +=
      fmt::format("parameters: total {}, non-embedding N = {}; 12·l·d² = {} ({:+.2f}% from N: {})\n\n", r.n_params,
                  r.n_non_embedding, 12 * l * d * d, 100.0 * (r.n_non_embedding - 12 * l * d * d) / (12.0 * l * d * d),
                  c.mixer == "attention" ? "biases and norm gains" : "the 12·l·d² rule is the attention+FFN block's");
  out += fmt::format("{:<21} {:>15} {:>15} {:>15} {:>15} {:>9}  {}\n", "component", "analytic fwd", "analytic train",
                     "counted fwd", "counted train", "cnt/ana", "formula (forward)");
  for (auto& row : r.rows) {
    const bool a = row.analytic_train >= 0;
    out += fmt::format(
        "{:<21} {:>15} {:>15} {:>15} {:>15} {:>9}  {}\n", row.name, a ? fmt::format("{}", row.analytic_forward) : "-",
        a ? fmt::format("{}", row.analytic_train) : "-", row.counted.forward, row.counted.total(),
        a && row.analytic_train > 0 ? fmt::format("{:.4f}", (double)row.counted.total() / row.analytic_train) : "",
        row.formula);
  }
  out += fmt::format("{:<21} {:>15} {:>15} {:>15} {:>15} {:>9}\n", "total", r.analytic_train / 3, r.analytic_train,
                     r.counted.forward, r.counted.total(),
                     fmt::format("{:.4f}", (double)r.counted.total() / r.analytic_train));
  out +=
      fmt::format("\ncounted backward / forward = {:.3f} (GEMMs: 2)\n", (double)r.counted.backward / r.counted.forward);
  const double N = (double)r.n_non_embedding;
  out += fmt::format(
      "6N per token = {:.0f}; 6N·(1 + s/(6d)) = {:.0f}; + LM head 6·d·V = {}; analytic per token = {:.0f}; "
      "counted per token = {:.0f}\n",
      6 * N, 6 * N * (1 + (double)s / (6.0 * d)), 6 * d * V, (double)r.analytic_train / n,
      (double)r.counted.total() / n);
  if (c.mixer == "attention")
    out += fmt::format("per layer: 72·b·s·d² + 12·b·s²·d = {} (training, attention + FFN GEMMs of a 4d-wide FFN)\n",
                       72 * r.batch * s * d * d + 12 * r.batch * s * s * d);
  out +=
      fmt::format("counted / (6·N·n) = {:.4f}; the step's FLOPs outside the analytic rows: {:.2f}%\n",
                  r.counted.total() / (6 * N * n), 100.0 * (r.counted.total() - r.analytic_train) / r.counted.total());
  return out;
}

}  // namespace tapelm::train
