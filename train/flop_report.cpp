#include "train/flop_report.h"

#include <fmt/format.h>

#include "autograd/ops.h"
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

// The form the recurrent mixers train in (see ModelConfig::recurrent_form).
std::string training_form(const nn::ModelConfig& c) {
  if (c.recurrent_form != "auto") return c.recurrent_form;
  return c.mixer == "mamba" ? "recurrent" : "chunkwise";
}

// Linear-attention core S_t = diag(decay) S_{t−1} + k_t v_tᵀ, o_t = S_tᵀ q_t over H
// heads of key width K and value width V (nn/linear_attention.h, Mamba-2 SSD).
int64_t gated_core(int64_t b, int64_t s, int64_t H, int64_t K, int64_t V, const std::string& form, int64_t chunk,
                   std::string* f) {
  if (form == "recurrent") {
    *f = fmt::format("4·b·s·H·K·V: read and write of the K×V state per token (H {}, K {}, V {})", H, K, V);
    return 4 * b * s * H * K * V;
  }
  const int64_t C = form == "parallel" ? s : std::min(chunk, s);
  *f = fmt::format(
      "b·s·H·((C+1)·(K+V) + 4·K·V): causal half of QKᵀ and AV inside chunks of C, "
      "state read and update (H {}, K {}, V {}, C {})",
      H, K, V, C);
  return b * s * H * ((C + 1) * (K + V) + 4 * K * V);
}

}  // namespace

int64_t sequence_term(const nn::ModelConfig& c, int64_t b, int64_t s, std::string* f) {
  const int64_t d = c.n_embd, H = c.n_head, hd = d / H, e = 2 * d, qk = c.gau_qk_dim;
  const std::string form = training_form(c);
  if (c.mixer == "attention") {
    *f = "4·b·s²·d: QKᵀ and AV over the full s×s square (the causal mask does not skip work)";
    return 4 * b * s * s * d;
  }
  if (c.mixer == "gau" || (c.mixer == "flash" && form != "chunkwise")) {
    if (c.mixer == "gau") {
      *f = fmt::format("2·b·s²·(qk + e): QKᵀ and AV of one head over the full s×s square (qk {}, e {})", qk, e);
      return 2 * b * s * s * (qk + e);
    }
    *f = fmt::format("2·b·s²·(2·qk + e): quadratic and linear scores and AV over s×s (qk {}, e {})", qk, e);
    return 2 * b * s * s * (2 * qk + e);
  }
  if (c.mixer == "flash") {
    const int64_t C = c.chunk_size, sp = (s + C - 1) / C * C;
    *f = fmt::format(
        "2·b·s·C·(qk + e) + 4·b·s·qk·e: quadratic part inside chunks of C, linear part's "
        "kv and read-out (qk {}, e {}, C {}; s padded to a multiple of C)",
        qk, e, C);
    return 2 * b * sp * C * (qk + e) + 4 * b * sp * qk * e;
  }
  if (c.mixer == "deltanet" || c.mixer == "gated_deltanet") {
    if (form == "recurrent") {
      *f = fmt::format("7·b·s·H·K·V: read (2KV), decay (KV), error and write (4KV) of the state (K = V = {})", hd);
      return 7 * b * s * H * hd * hd;
    }
    const int64_t C = form == "parallel" ? s : std::min(c.chunk_size, s);
    *f = fmt::format(
        "b·s·H·(C·(4K + 3V) + 6·K·V): KKᵀ, QKᵀ, the triangular solve and output inside "
        "chunks of C (WY form), state read and update (K = V = {}, C {})",
        hd, C);
    return b * s * H * (C * (4 * hd + 3 * hd) + 6 * hd * hd);
  }
  if (c.mixer == "mamba") {
    const int64_t Di = 2 * d, N = c.d_state;
    if (form == "recurrent") {
      *f = fmt::format(
          "7·b·s·d_inner·N: discretisation (ΔA, ΔB·u), state update and read-out C·h of the "
          "selective scan (d_inner {}, N {})",
          Di, N);
      return 7 * b * s * Di * N;
    }
    return gated_core(b, s, Di, N, 1, form, c.chunk_size, f);
  }
  if (c.mixer == "mamba2") {
    const int64_t Di = 2 * d, P = c.ssm_headdim;
    return gated_core(b, s, Di / P, c.d_state, P, form, c.chunk_size, f);
  }
  // linear, retnet, gated_retention, gla: H heads of width d/H.
  return gated_core(b, s, H, hd, hd, form, c.chunk_size, f);
}

FlopReport flop_report(const nn::ModelConfig& config, int64_t batch) {
  FlopReport r;
  r.config = config;
  r.batch = batch;
  r.context = config.block_size;
  Generator gen(1);
  nn::GPT model(config, gen);
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
                           key.second == "selective_scan";
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
  const int64_t seq = sequence_term(config, b, s, &seq_formula) * L;
  add_row("mixer sequence term", seq_formula + " × l", seq, counted("mixer", true));
  if (block.mlp) {
    const int64_t w_ffn = linear_weights(*block.mlp);
    add_row("FFN", fmt::format("2·n·W_ffn·l (W_ffn = {})", w_ffn), 2 * n * w_ffn * L, counted("ffn.proj", true));
  }
  const int64_t V = config.vocab_size, d = config.n_embd;
  add_row("LM head", "2·n·d·V", 2 * n * d * V, counted("lm_head.proj", true));
  for (auto& row : r.rows)
    if (row.name != "mixer sequence term" || config.mixer == "attention" || config.mixer == "gau")
      r.analytic_matmul_train += row.analytic_train;

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
  r.counted_matmul += FlopCounter::of("linear");     // Linear layers' GEMMs
  r.counted_matmul += FlopCounter::of("attention");  // the fused attention op's GEMMs
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
