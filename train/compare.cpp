#include "train/compare.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "nn/mixers.h"
#include "nn/model.h"
#include "train/decode_speed.h"
#include "train/plot.h"

namespace tapelm::train {

namespace fs = std::filesystem;

namespace {

int64_t non_embedding_params(const nn::ModelConfig& c) {
  Generator gen(0);
  return nn::GPT(c, gen).num_non_embedding_parameters();
}

struct RunResult {
  std::string mixer;
  int64_t width = 0, n = 0;
  Series val_vs_flops;
  double final_val = NAN, flops = 0, train_tokens_per_s = 0;
  std::vector<DecodePoint> decode;
};

}  // namespace

int64_t matched_width(nn::ModelConfig c, int64_t target_n, const std::vector<std::string>& given) {
  int64_t step = 2 * c.n_head;  // an even head dimension (rotary positions in RetNet and RoPE)
  if (const nn::MixerSpec& m = nn::mixer_spec(c.mixer); m.width_multiple) step = std::lcm(step, m.width_multiple(c));
  int64_t best = step, best_err = INT64_MAX;
  for (int64_t d = step; d <= 4096; d += step) {
    c.n_embd = d;
    const int64_t n = non_embedding_params(nn::with_recipe(c, given)), err = std::llabs(n - target_n);
    if (err < best_err) best = d, best_err = err;
    if (n > target_n) break;  // N grows with d
  }
  return best;
}

int run_compare(CompareOptions o) {
  if (o.mixers.empty())
    for (const nn::MixerSpec& m : nn::mixer_table()) o.mixers.push_back(m.name);
  for (const std::string& mixer : o.mixers) {  // every name checked before the first run
    nn::ModelConfig c = o.train.model;
    c.mixer = mixer;
    nn::with_recipe(c, o.given).validate();
  }
  TAPELM_CHECK(!o.decode_contexts.empty() && o.decode_tokens > 0,
               "compare: --decode-contexts and --decode-tokens must be given");
  nn::ModelConfig ref = o.train.model;
  ref.mixer = "attention";
  ref.vocab_size = 256;  // N excludes the embeddings, so the vocabulary does not matter here
  ref.validate();
  const int64_t target = non_embedding_params(ref);
  fs::create_directories(o.train.out);
  const std::string root = o.train.out;
  fmt::print(
      "tapelm compare: {} mixers at N ≈ {} (attention, n_layer {}, n_embd {}), {} steps of batch {} × context {}, "
      "lr {}, seed {}\n",
      o.mixers.size(), target, ref.n_layer, ref.n_embd, o.train.steps, o.train.batch, ref.block_size, o.train.lr,
      o.train.seed);
  std::vector<RunResult> results;
  for (const std::string& mixer : o.mixers) {
    TrainOptions t = o.train;
    t.model.mixer = mixer;
    t.model.n_embd = matched_width(t.model, target, o.given);
    t.model = nn::with_recipe(t.model, o.given);
    t.model.validate();
    t.out = (fs::path(root) / mixer).string();
    t.quiet = true;
    t.resume = false;
    RunResult r;
    r.mixer = mixer;
    r.width = t.model.n_embd;
    {
      nn::ModelConfig probe = t.model;
      probe.vocab_size = 256;
      r.n = non_embedding_params(probe);
    }
    fmt::print("\n=== {}: n_embd {}, N = {} ({:+.1f}% from the target)\n", mixer, r.width, r.n,
               100.0 * (r.n - target) / target);
    std::fflush(stdout);
    const int code = run_training(t, o.given);
    TAPELM_CHECK(code == 0, "compare: training {} stopped with exit code {}", mixer, code);
    std::ifstream log(fs::path(t.out) / "log.jsonl");
    std::string line;
    r.val_vs_flops.name = mixer;
    while (std::getline(log, line)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) continue;
      if (j.contains("val_loss") && j.contains("flops")) {
        r.val_vs_flops.points.push_back({j["flops"].get<double>(), j["val_loss"].get<double>()});
        r.final_val = j["val_loss"].get<double>();
      }
      if (j.contains("summary")) {
        r.flops = j["flops"].get<double>();
        r.train_tokens_per_s = j["tokens_per_s"].get<double>();
      }
    }
    // Decoding speed of the same architecture with room for the longest context.
    nn::ModelConfig dc = t.model;
    dc.vocab_size = 256;
    dc.block_size = std::max(dc.block_size,
                             *std::max_element(o.decode_contexts.begin(), o.decode_contexts.end()) + o.decode_tokens);
    Generator gen(o.train.seed);
    nn::GPT decoder(dc, gen);
    r.decode = measure_decode_speed(decoder, o.decode_contexts, o.decode_tokens);
    results.push_back(std::move(r));
  }

  Chart loss{fmt::format("validation loss vs training FLOPs (N ≈ {}, {} steps)", target, o.train.steps),
             "cumulative training FLOPs C (counted)",
             "validation loss",
             true,
             false,
             {}};
  Chart speed{"decoding speed vs context (batch 1)", "context length (tokens)", "tokens/s", true, false, {}};
  for (auto& r : results) {
    loss.series.push_back(r.val_vs_flops);
    Series s{r.mixer, {}};
    for (auto& p : r.decode) s.points.push_back({(double)p.context, p.tokens_per_s});
    speed.series.push_back(s);
  }
  write_svg_chart((fs::path(root) / "loss_vs_flops.svg").string(), loss);
  write_svg_chart((fs::path(root) / "decode_speed.svg").string(), speed);

  std::string md = fmt::format("| mixer | n_embd | N | final val loss | C (FLOPs) | train tokens/s |");
  for (int64_t c : o.decode_contexts) md += fmt::format(" decode tok/s @{} |", c);
  md += fmt::format(" state bytes/seq @{} |\n|---|---|---|---|---|---|", o.decode_contexts.back());
  for (size_t i = 0; i <= o.decode_contexts.size(); ++i) md += "---|";
  md += "\n";
  for (auto& r : results) {
    md += fmt::format("| {} | {} | {} | {:.4f} | {:.3g} | {:.0f} |", r.mixer, r.width, r.n, r.final_val, r.flops,
                      r.train_tokens_per_s);
    for (auto& p : r.decode) md += fmt::format(" {:.0f} |", p.tokens_per_s);
    md += fmt::format(" {} |\n", r.decode.empty() ? 0 : r.decode.back().state_bytes);
  }
  std::ofstream(fs::path(root) / "results.md") << md;
  fmt::print("\n{}\npictures: {}/loss_vs_flops.svg, {}/decode_speed.svg; table: {}/results.md\n", md, root, root, root);
  return 0;
}

}  // namespace tapelm::train
