#include "train/compare.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <omp.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <thread>

#include "nn/mixers.h"
#include "nn/model.h"
#include "train/decode_speed.h"
#include "train/plot.h"
#include "train/thread_policy.h"

namespace tapelm::train {

namespace fs = std::filesystem;

namespace {

// N excludes the embeddings, so the vocabulary does not matter: a small one keeps the probe cheap.
int64_t non_embedding_params(nn::ModelConfig c) {
  c.vocab_size = 256;
  Generator gen(0);
  return nn::GPT(c, gen).num_non_embedding_parameters();
}

// One training run of the study and what it measured.
struct Run {
  std::string mixer;
  int size = 0;  // index into the sorted sizes
  int64_t ref_width = 0, target = 0, width = 0, n = 0, tokens = 0;
  TrainOptions t;
  Series curve;  // validation loss against cumulative training FLOPs
  double final_val = NAN, flops = 0, tokens_per_s = 0;
};

// The `--config` JSON of a `tapelm train` that runs exactly t: every run
// option and every model field (so no recipe fills anything in).
nlohmann::json train_flags(const TrainOptions& t) {
  nlohmann::json j = nlohmann::json::parse(t.to_json());
  const nlohmann::json m = nlohmann::json::parse(t.model.to_json());
  for (const nn::ConfigField& f : nn::config_fields())
    if (!f.flag.empty()) j[f.key] = m[f.key];
  return j;
}

// Runs every run as a `tapelm train` process, `jobs` at once, the costliest
// (N × tokens) first; each writes train.log beside its checkpoint.
void run_as_processes(std::vector<Run>& runs, int jobs) {
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  std::vector<size_t> order(runs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return (double)runs[a].n * runs[a].tokens > (double)runs[b].n * runs[b].tokens;
  });
  std::map<pid_t, size_t> running;
  std::vector<std::string> failed;
  size_t next = 0, done = 0;
  auto start = [&](size_t i) {
    const Run& r = runs[i];
    fs::create_directories(r.t.out);
    const std::string config = (fs::path(r.t.out) / "run.json").string(),
                      log = (fs::path(r.t.out) / "train.log").string();
    std::ofstream(config) << train_flags(r.t).dump(1) << "\n";
    std::vector<std::string> args{self, "train", "--config", config, "--out", r.t.out, "--quiet"};
    if (r.t.overwrite) args.push_back("--overwrite");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&files, 1, 2);
    pid_t pid = 0;
    const int err = posix_spawn(&pid, self.c_str(), &files, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&files);
    TAPELM_CHECK(err == 0, "compare: cannot start {}: {}", self, std::strerror(err));
    running[pid] = i;
  };
  while (next < order.size() || !running.empty()) {
    while ((int)running.size() < jobs && next < order.size()) start(order[next++]);
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    TAPELM_CHECK(pid > 0, "compare: waiting for the runs failed: {}", std::strerror(errno));
    const Run& r = runs[running.at(pid)];
    running.erase(pid);
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) failed.push_back(fmt::format("{} ({}/train.log)", r.t.out, r.t.out));
    fmt::print("  [{}/{}] {} d{} seed {}: {}\n", ++done, runs.size(), r.mixer, r.ref_width, r.t.seed,
               ok ? "done" : "FAILED");
    std::fflush(stdout);
  }
  TAPELM_CHECK(failed.empty(), "compare: {} run(s) failed: {}", failed.size(), fmt::join(failed, ", "));
}

// Reads a finished run's log.jsonl: its validation curve, final loss, FLOPs and speed.
void read_log(Run& r) {
  std::ifstream log(fs::path(r.t.out) / "log.jsonl");
  TAPELM_CHECK(log.good(), "compare: {} has no log.jsonl", r.t.out);
  std::string line;
  while (std::getline(log, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    if (j.contains("val_loss") && j.contains("flops")) {
      r.curve.points.push_back({j["flops"].get<double>(), j["val_loss"].get<double>()});
      r.final_val = j["val_loss"].get<double>();
    }
    if (j.contains("summary")) r.flops = j["flops"].get<double>(), r.tokens_per_s = j["tokens_per_s"].get<double>();
  }
  TAPELM_CHECK(std::isfinite(r.final_val), "compare: {} logged no validation loss", r.t.out);
}

double mean(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / v.size(); }

double sample_std(const std::vector<double>& v) {
  if (v.size() < 2) return NAN;
  const double m = mean(v);
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / (v.size() - 1));
}

std::string fixed(double v, int digits) { return std::isfinite(v) ? fmt::format("{:.{}f}", v, digits) : "—"; }
std::string sci(double v) { return std::isfinite(v) ? fmt::format("{:.3g}", v) : "—"; }

}  // namespace

double PowerFit::loss_at(double flops) const { return std::exp(intercept + slope * std::log(flops)); }
double PowerFit::flops_for(double loss) const { return std::exp((std::log(loss) - intercept) / slope); }

PowerFit fit_power_law(const std::vector<std::pair<double, double>>& pts) {
  PowerFit f;
  if (pts.size() < 2) return f;
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (auto [c, l] : pts) {
    const double x = std::log(c), y = std::log(l);
    sx += x, sy += y, sxx += x * x, sxy += x * y;
  }
  const double n = pts.size(), den = n * sxx - sx * sx;
  if (std::fabs(den) < 1e-300) return f;
  f.slope = (n * sxy - sx * sy) / den;
  f.intercept = (sy - f.slope * sx) / n;
  return f;
}

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

namespace {

// Fills the defaults (every mixer, one job per core, the sizes) and checks
// every option and every mixer's config before the first run.
void check_options(CompareOptions& o) {
  if (o.mixers.empty())
    for (const nn::MixerSpec& m : nn::mixer_table()) o.mixers.push_back(m.name);
  for (const std::string& mixer : o.mixers) {
    nn::ModelConfig c = o.train.model;
    c.mixer = mixer;
    nn::check_config(nn::with_recipe(c, o.given));
  }
  TAPELM_CHECK(!o.decode_contexts.empty() && !o.decode_batches.empty() && o.decode_tokens > 0,
               "compare: --decode-contexts, --decode-batches and --decode-tokens must be given");
  TAPELM_CHECK(o.seeds >= 1 && o.jobs >= 0 && o.tokens_per_param >= 0,
               "compare: --seeds must be >= 1, --jobs >= 0 and --tokens-per-param >= 0");
  if (o.jobs == 0) o.jobs = (int)std::max(1u, std::thread::hardware_concurrency());
  if (o.jobs > 1 && o.train.threads == 0) o.train.threads = 1;  // one core per run
  if (o.sizes.empty()) o.sizes = {o.train.model.n_embd};
  std::sort(o.sizes.begin(), o.sizes.end());
  o.sizes.erase(std::unique(o.sizes.begin(), o.sizes.end()), o.sizes.end());
}

// Every run: each size's reference N, each mixer matched to it, seeds at the smallest.
std::vector<Run> plan_runs(const CompareOptions& o) {
  std::vector<Run> runs;
  for (size_t si = 0; si < o.sizes.size(); ++si) {
    nn::ModelConfig ref = o.train.model;
    ref.mixer = "attention", ref.n_embd = o.sizes[si];
    nn::check_config(ref);
    const int64_t target = non_embedding_params(ref);
    const int64_t per_step = o.train.batch * o.train.grad_accum * o.train.model.block_size;
    const int64_t steps = o.tokens_per_param > 0
                              ? std::max<int64_t>(1, (int64_t)std::ceil(o.tokens_per_param * target / per_step))
                              : o.train.steps;
    for (const std::string& mixer : o.mixers) {  // the width and N of a mixer at this size, once for all seeds
      nn::ModelConfig model = o.train.model;
      model.mixer = mixer;
      model.n_embd = matched_width(model, target, o.given);
      model = nn::with_recipe(model, o.given);
      nn::check_config(model);
      const int64_t n = non_embedding_params(model);
      for (int k = 0; k < (si == 0 ? o.seeds : 1); ++k) {
        Run r;
        r.mixer = mixer, r.size = (int)si, r.ref_width = o.sizes[si], r.target = target;
        r.t = o.train;
        r.t.model = model;
        r.t.steps = steps;
        r.t.seed = o.train.seed + k;
        r.t.out = (fs::path(o.train.out) / mixer / fmt::format("d{}-seed{}", r.ref_width, r.t.seed)).string();
        r.t.quiet = true, r.t.resume = false;
        r.width = model.n_embd, r.n = n;
        r.tokens = steps * per_step;
        r.curve.name = mixer;
        runs.push_back(std::move(r));
      }
    }
  }
  return runs;
}

void print_plan(const CompareOptions& o, const std::vector<Run>& runs) {
  fmt::print(
      "tapelm compare: {} mixers × {} sizes (reference widths {}; N {} … {}), {} seed(s) at the smallest; {} "
      "runs, {} at a time\n",
      o.mixers.size(), o.sizes.size(), fmt::join(o.sizes, ", "), runs.front().target, runs.back().target, o.seeds,
      runs.size(), o.jobs);
  for (const Run& r : runs)
    fmt::print("  {:<16} d{:<4} seed {:<5} n_embd {:<4} N {:<9} ({:+.1f}%)  {} steps, {} tokens\n", r.mixer,
               r.ref_width, r.t.seed, r.width, r.n, 100.0 * (r.n - r.target) / r.target, r.t.steps, r.tokens);
  std::fflush(stdout);
}

// Each run, as processes (jobs > 1) or one after the other here; then their logs.
void train_runs(const CompareOptions& o, std::vector<Run>& runs) {
  if (o.jobs > 1) {
    run_as_processes(runs, o.jobs);
  } else {
    for (Run& r : runs) {
      fmt::print("\n=== {} d{} seed {}\n", r.mixer, r.ref_width, r.t.seed);
      std::fflush(stdout);
      const int code = run_training(r.t, o.given);
      TAPELM_CHECK(code == 0, "compare: training {} stopped with exit code {}", r.t.out, code);
    }
  }
  for (Run& r : runs) read_log(r);
}

// Per mixer: the seed-averaged final point of each size, the fit, the noise.
struct MixerSummary {
  std::vector<std::pair<double, double>> points;  // (C, L) per size
  PowerFit fit;
  double seed_std = NAN;
  int seeds = 0;
};
struct Summary {
  std::map<std::string, MixerSummary> mixers;
  std::string equal;  // whose compute at the largest size is C* (transformer++ if trained)
  double c_star = NAN, base_loss = NAN, base_flops = NAN;
};

Summary summarise(const CompareOptions& o, const std::vector<Run>& runs) {
  Summary sum;
  for (const std::string& m : o.mixers) {
    MixerSummary& s = sum.mixers[m];
    for (size_t si = 0; si < o.sizes.size(); ++si) {
      std::vector<double> c, l;
      for (const Run& r : runs)
        if (r.mixer == m && r.size == (int)si) c.push_back(r.flops), l.push_back(r.final_val);
      s.points.push_back({mean(c), mean(l)});
      if (si == 0) s.seed_std = sample_std(l), s.seeds = (int)l.size();
    }
    s.fit = fit_power_law(s.points);
  }
  sum.equal = sum.mixers.count("transformer++") ? "transformer++" : o.mixers.front();
  sum.c_star = sum.mixers[sum.equal].points.back().first;
  if (sum.mixers.count(o.baseline))
    sum.base_loss = sum.mixers[o.baseline].points.back().second,
    sum.base_flops = sum.mixers[o.baseline].points.back().first;
  return sum;
}

// loss_vs_flops.svg (every run, a colour per family) and scaling_fits.svg.
void draw_training_charts(const CompareOptions& o, const std::vector<Run>& runs, Summary& sum) {
  std::vector<std::string> families;
  for (const std::string& m : o.mixers)
    if (std::find(families.begin(), families.end(), nn::mixer_spec(m).family) == families.end())
      families.push_back(nn::mixer_spec(m).family);
  auto family_of = [&](const std::string& m) {
    return (int)(std::find(families.begin(), families.end(), nn::mixer_spec(m).family) - families.begin());
  };
  Chart loss{.title = fmt::format("validation loss vs training FLOPs, every run ({} sizes)", o.sizes.size()),
             .x_label = "cumulative training FLOPs C (counted)",
             .y_label = "validation loss",
             .log_x = true,
             .log_y = true};
  std::vector<bool> named(families.size(), false);
  for (const Run& r : runs) {
    Series s = r.curve;
    s.color = family_of(r.mixer), s.name = families[s.color], s.in_legend = !named[s.color];
    named[s.color] = true;
    loss.series.push_back(s);
  }
  Chart fits{.title = "final validation loss vs FLOPs: points and fitted L = a·C^b",
             .x_label = "training FLOPs C",
             .y_label = "validation loss",
             .log_x = true,
             .log_y = true};
  for (size_t i = 0; i < o.mixers.size(); ++i) {
    const MixerSummary& s = sum.mixers[o.mixers[i]];
    fits.series.push_back(Series{.name = o.mixers[i], .points = s.points, .color = (int)i, .markers = true});
    if (!std::isfinite(s.fit.slope)) continue;
    const double c0 = s.points.front().first, c1 = s.points.back().first;
    fits.series.push_back(Series{.name = o.mixers[i] + " fit",
                                 .points = {{c0, s.fit.loss_at(c0)}, {c1, s.fit.loss_at(c1)}},
                                 .color = (int)i,
                                 .in_legend = false,
                                 .dashed = true});
  }
  write_svg_chart((fs::path(o.train.out) / "loss_vs_flops.svg").string(), loss);
  write_svg_chart((fs::path(o.train.out) / "scaling_fits.svg").string(), fits);
}

// results.md's training part: every run, then the fits.
std::string training_tables(const CompareOptions& o, const std::vector<Run>& runs, Summary& sum) {
  std::string md =
      "### Every run\n\n| mixer | reference width | seed | n_embd | N | tokens | C (FLOPs) | final val loss "
      "| train tokens/s |\n|---|---|---|---|---|---|---|---|---|\n";
  for (const Run& r : runs)
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {:.4f} | {:.0f} |\n", r.mixer, r.ref_width, r.t.seed,
                      r.width, r.n, r.tokens, sci(r.flops), r.final_val, r.tokens_per_s);
  md += fmt::format(
      "\n### Scaling fits\n\nL = exp(a)·C^b through each size's final loss (seeds averaged at the smallest). "
      "C* = {}'s compute at the largest size ({}). Seed std: the sample standard deviation of the final loss over "
      "the smallest size's seeds. To reach {}: the compute at which the fit reaches {}'s final loss at the largest "
      "size ({}), and that over {}'s own compute ({}).\n\n"
      "| mixer | family | b | a | loss at C* (fit) | Δ vs {} at C* | seed std (n) | C to reach {} | × {} |\n"
      "|---|---|---|---|---|---|---|---|---|\n",
      sum.equal, sci(sum.c_star), o.baseline, o.baseline, fixed(sum.base_loss, 4), o.baseline, sci(sum.base_flops),
      sum.equal, o.baseline, o.baseline);
  const double equal_at_star = sum.mixers[sum.equal].fit.loss_at(sum.c_star);
  for (const std::string& m : o.mixers) {
    const MixerSummary& s = sum.mixers[m];
    const double at_star = s.fit.loss_at(sum.c_star), reach = s.fit.flops_for(sum.base_loss);
    md += fmt::format("| {} | {} | {} | {} | {} | {}{} | {} ({}) | {} | {} |\n", m, nn::mixer_spec(m).family,
                      fixed(s.fit.slope, 4), fixed(s.fit.intercept, 3), fixed(at_star, 4),
                      at_star - equal_at_star >= 0 ? "+" : "", fixed(at_star - equal_at_star, 4), fixed(s.seed_std, 4),
                      s.seeds, sci(reach), fixed(reach / sum.base_flops, 2));
  }
  return md;
}

// Decoding speed of each mixer at the largest size's shape (random weights:
// speed does not depend on them), with the machine to itself.
std::map<std::string, std::vector<DecodePoint>> measure_decoding(const CompareOptions& o,
                                                                 const std::vector<Run>& runs) {
  const int64_t max_ctx = *std::max_element(o.decode_contexts.begin(), o.decode_contexts.end());
  std::map<std::string, std::vector<DecodePoint>> decode;
  // One thread per run trained; decoding gets all cores (or --threads with one job).
  set_threads(o.jobs > 1 ? 0 : (int)o.train.threads);
  for (const std::string& m : o.mixers) {
    nn::ModelConfig dc;
    for (const Run& r : runs)
      if (r.mixer == m && r.size == (int)o.sizes.size() - 1) dc = r.t.model;
    dc.vocab_size = 256;
    dc.block_size = std::max(dc.block_size, max_ctx + o.decode_tokens);
    Generator gen(o.train.seed);
    nn::GPT decoder(dc, gen);
    for (int64_t b : o.decode_batches)
      for (auto& p : measure_decode_speed(decoder, o.decode_contexts, o.decode_tokens, b)) decode[m].push_back(p);
    fmt::print("  decoding measured: {}\n", m);
    std::fflush(stdout);
  }
  return decode;
}

// decode_speed.svg (batch 1, or the first batch) and results.md's decoding table.
std::string decoding_results(const CompareOptions& o, const std::map<std::string, std::vector<DecodePoint>>& decode) {
  Chart speed{.title = "decoding speed vs context (batch 1)",
              .x_label = "context length (tokens)",
              .y_label = "tokens/s",
              .log_x = true,
              .log_y = true};
  for (const std::string& m : o.mixers) {
    Series s{.name = m};
    for (auto& p : decode.at(m))
      if (p.batch == o.decode_batches.front()) s.points.push_back({(double)p.context, p.tokens_per_s});
    speed.series.push_back(s);
  }
  write_svg_chart((fs::path(o.train.out) / "decode_speed.svg").string(), speed);

  std::string md = fmt::format(
      "\n### Decoding ({} threads; tokens/s = batch / the median of {} timed steps after a prefill)\n\n| mixer | "
      "batch |",
      omp_get_max_threads(), o.decode_tokens);
  for (int64_t c : o.decode_contexts) md += fmt::format(" tok/s @{} |", c);
  md += fmt::format(" state bytes/seq @{} |\n|---|---|", o.decode_contexts.back());
  for (size_t i = 0; i <= o.decode_contexts.size(); ++i) md += "---|";
  md += "\n";
  for (const std::string& m : o.mixers)
    for (int64_t b : o.decode_batches) {
      md += fmt::format("| {} | {} |", m, b);
      int64_t bytes = 0;
      for (auto& p : decode.at(m))
        if (p.batch == b) md += fmt::format(" {:.0f} |", p.tokens_per_s), bytes = p.state_bytes;
      md += fmt::format(" {} |\n", bytes);
    }
  return md;
}

}  // namespace

int run_compare(CompareOptions o) {
  check_options(o);
  fs::create_directories(o.train.out);
  std::vector<Run> runs = plan_runs(o);
  print_plan(o, runs);
  train_runs(o, runs);
  Summary summary = summarise(o, runs);
  draw_training_charts(o, runs, summary);
  const std::string training = training_tables(o, runs, summary);
  // The training results are on disk before decoding starts (decoding the
  // largest models at long contexts is the slow part; a stop there loses nothing).
  const fs::path results = fs::path(o.train.out) / "results.md";
  std::ofstream(results) << training << "\n### Decoding\n\n(not measured yet)\n";
  fmt::print("\n{}", training);
  std::fflush(stdout);
  const std::string decoding = decoding_results(o, measure_decoding(o, runs));
  std::ofstream(results) << training << decoding;
  fmt::print("{}\npictures: {}/loss_vs_flops.svg, scaling_fits.svg, decode_speed.svg; tables: results.md\n", decoding,
             o.train.out);
  return 0;
}

}  // namespace tapelm::train
