// tapelm_bench: training speed of one configuration, the figures bench/run.sh
// puts beside PyTorch's (bench/torch_reference.py trains the same model).
//
//   build/tapelm_bench --n-layer 4 --n-head 4 --n-embd 128 --context 64 --batch 12 --threads 1
//   build/tapelm_bench ... --profile        time per op kind, forward and backward (on the GPU: CUDA events)
//   build/tapelm_bench --mixer retnet --decode 64,256,1024,4096   decoding tokens/s against context
//   build/tapelm_bench ... --decode 1024,8192 --decode-batch 1,16,64   … at several batch sizes
//   build/tapelm_bench --loader tokens/ --context 1024 --batch 16   batches/s of the token-file loader, one core
//   build/tapelm_bench ... --device cuda --precision bf16   on the GPU: steps timed with CUDA events,
//                                                         peak GPU memory from the memory pool
//
// The model flags are the tool's (train/cli.h), and a mixer gets its
// reference recipe for every field no flag sets, as `tapelm train` builds it.
// Each step is what `tapelm train` does: forward, loss, backward, gradient
// clipping, AdamW (nanoGPT decay groups), zero_grad, on random tokens of the
// given vocabulary. Prints one JSON line (--json) or a readable summary.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>

#include "autograd/autograd.h"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/runtime.h"
#include "autograd/device_dispatch.h"
#include "data/dataset.h"
#include "data/token_data.h"
#include "nn/mixers.h"
#include "nn/model.h"
#include "optim/optimizer.h"
#include "train/cli.h"
#include "train/decode_speed.h"
#include "train/gemm_peak.h"
#include "train/memory.h"
#include "train/thread_policy.h"
#include "train/trainer.h"

using namespace tapelm;

namespace {

void print_profile(int64_t steps, bool gpu) {
  struct Row {
    std::string op;
    TimeTally t;
  };
  std::vector<Row> rows;
  double total = 0, host_total = 0;
  for (auto& [op, t] : Profiler::tallies()) {
    rows.push_back({op, t});
    total += t.forward_s + t.backward_s;
    host_total += t.host_s;
  }
  std::sort(rows.begin(), rows.end(),
            [](const Row& a, const Row& b) { return a.t.forward_s + a.t.backward_s > b.t.forward_s + b.t.backward_s; });
  fmt::print("\nprofile: {} time per op kind, ms per step (mean over {} steps){}\n", gpu ? "GPU (CUDA events)" : "wall",
             steps, gpu ? "; host = the host's time launching it" : "");
  fmt::print("{:<30} {:>10} {:>10} {:>10} {:>7} {:>9}{}\n", "op", "forward", "backward", "total", "share", "calls",
             gpu ? fmt::format(" {:>10}", "host") : "");
  for (auto& r : rows)
    fmt::print("{:<30} {:>10.3f} {:>10.3f} {:>10.3f} {:>6.1f}% {:>9}{}\n", r.op, 1e3 * r.t.forward_s / steps,
               1e3 * r.t.backward_s / steps, 1e3 * (r.t.forward_s + r.t.backward_s) / steps,
               100 * (r.t.forward_s + r.t.backward_s) / total, (r.t.forward_calls + r.t.backward_calls) / steps,
               gpu ? fmt::format(" {:>10.3f}", 1e3 * r.t.host_s / steps) : "");
  fmt::print("{:<30} {:>32.3f}{}\n", "sum", 1e3 * total / steps,
             gpu ? fmt::format(" {:>18.3f}", 1e3 * host_total / steps) : "");
}

void decode_bench(const nn::ModelConfig& c, const std::vector<int64_t>& contexts, const std::vector<int64_t>& batches,
                  int64_t tokens, bool json, const std::string& label, Device device) {
  Generator gen(1337);
  nn::GPT model(c, gen);
  model.to(device);  // each token's logits come back to the host, so the host's clock times the GPU too
  for (const int64_t batch : batches) {
    if (!json)
      fmt::print("decoding, {} mixer, L{} D{}, batch {}, {} threads, {}\n{:>8} {:>12} {:>16}\n", c.mixer, c.n_layer,
                 c.n_embd, batch, omp_get_max_threads(), device_name(device), "context", "tokens/s", "state bytes/seq");
    for (auto& p : train::measure_decode_speed(model, contexts, tokens, batch)) {
      if (json)
        fmt::print("{}\n", nlohmann::json{{"label", label},
                                          {"mixer", c.mixer},
                                          {"device", device_name(device)},
                                          {"batch", p.batch},
                                          {"context", p.context},
                                          {"tokens_per_s", p.tokens_per_s},
                                          {"state_bytes", p.state_bytes},
                                          {"threads", omp_get_max_threads()}}
                               .dump());
      else
        fmt::print("{:>8} {:>12.0f} {:>16}\n", p.context, p.tokens_per_s, p.state_bytes);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  train::choose_wait_policy(argc, argv);  // the tool's policy (train/thread_policy.h)
  CLI::App app{"tapelm_bench: median training step time of one model configuration"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  nn::ModelConfig flags;
  flags.vocab_size = 65;
  int64_t batch = 12, steps = 30, warmup = 5;
  int threads = 1;
  bool profile = false, json = false;
  std::string label;
  app.add_option("--config", "JSON file of flag values (keys are flag names); flags given here override it");
  train::add_model_flags(&app, flags);
  app.add_option("--vocab-size", flags.vocab_size, "Vocabulary size V")->capture_default_str();
  app.add_option("--batch", batch)->capture_default_str();
  app.add_option("--steps", steps, "Timed steps (the median is reported)")->capture_default_str();
  app.add_option("--warmup", warmup, "Untimed steps first")->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--label", label, "Name of the configuration in the output");
  app.add_flag("--profile", profile, "Print the time per op kind (forward, backward)");
  app.add_flag("--json", json, "One JSON line instead of the summary");
  std::string device_name = "cpu", precision_name = "fp32";
  app.add_option("--device", device_name, "cpu, or cuda (one NVIDIA GPU)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--precision", precision_name, "The GPU's products: fp32 or bf16 (autograd/device.h)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  std::string loader_dir;
  app.add_option("--loader", loader_dir, "Time the batches drawn from this token folder (tapelm tokenize's) instead");
  std::vector<int64_t> decode_contexts;
  int64_t decode_tokens = 64;
  app.add_option("--decode", decode_contexts, "Measure decoding tokens/s at these context lengths instead of training")
      ->delimiter(',');
  app.add_option("--decode-tokens", decode_tokens, "Tokens timed per context length")->capture_default_str();
  std::vector<int64_t> decode_batches{1};
  app.add_option("--decode-batch", decode_batches, "Sequences decoded together, one run each (with --decode)")
      ->delimiter(',')
      ->capture_default_str();
  try {
    std::vector<std::string> args = train::expand_config(std::vector<std::string>(argv, argv + argc), 1);
    std::vector<char*> cargs;
    for (auto& a : args) cargs.push_back(a.data());
    try {
      app.parse((int)cargs.size(), cargs.data());
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    nn::ModelConfig c = train::model_from_flags(&app, flags);
    c.dropout = 0;
    train::set_threads(threads);
    const Device device = parse_device(device_name);
    const Precision precision = parse_precision(precision_name);
    if (device == Device::cuda) {
      require_cuda("tapelm_bench --device cuda");
      set_gpu_precision(precision);
    } else {
      TAPELM_CHECK(precision == Precision::fp32, "tapelm_bench: --precision bf16 runs on --device cuda");
    }
    if (!loader_dir.empty()) {  // the data path alone: random windows from the mapped shards
      std::optional<data::TokenData> d = data::find_token_data(loader_dir);
      TAPELM_CHECK(d, "tapelm_bench --loader: {} holds no token files", loader_dir);
      data::Dataset ds(d->train, d->val, c.block_size, d->tokenizer->vocab_size());
      Generator gen(1);
      for (int64_t i = 0; i < warmup; ++i) ds.batch(data::Split::train, batch, gen);
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < steps; ++i) ds.batch(data::Split::train, batch, gen);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      fmt::print("loader: {} batches of {}×{} from {} ({} training tokens): {:.1f} M tokens/s, {:.3f} ms a batch\n",
                 steps, batch, c.block_size, loader_dir, d->train->size(), steps * batch * c.block_size / s / 1e6,
                 1e3 * s / steps);
      return 0;
    }
    if (!decode_contexts.empty()) {
      c.block_size =
          std::max(c.block_size, *std::max_element(decode_contexts.begin(), decode_contexts.end()) + decode_tokens);
      nn::check_config(c);
      decode_bench(c, decode_contexts, decode_batches, decode_tokens, json, label, device);
      return 0;
    }
    const bool gpu = device == Device::cuda;
    const double peak = gpu ? cuda::measure_product_peak(8192, 5) : train::measure_gemm_peak();
    Generator gen(1337);
    nn::GPT model(c, gen);
    model.to(device);
    auto groups = optim::decay_groups(model, 0.1);
    optim::AdamW opt(groups, 0.9, 0.99);
    opt.set_lr(1e-3);
    std::vector<double> times;
    std::unique_ptr<cuda::StreamTimer> timer = gpu ? std::make_unique<cuda::StreamTimer>() : nullptr;
    int64_t flops = 0;
    double rss_first = 0;
    for (int64_t step = 0; step < warmup + steps; ++step) {
      Tensor x = randint({batch, c.block_size}, c.vocab_size, gen),
             y = randint({batch, c.block_size}, c.vocab_size, gen);
      const bool timed = step >= warmup;
      if (timed && profile) Profiler::enable(true, device);
      FlopCounter::reset();
      if (gpu && step == warmup) cuda::reset_peak_memory();
      if (gpu) timer->start();
      const auto t0 = std::chrono::steady_clock::now();
      Profiler::mark();
      backward(model.loss(x, y));
      Profiler::Span span = Profiler::begin();
      optim::clip_grad_norm(groups, 1.0);
      Profiler::book_other("(clip_grad_norm)", span);
      span = Profiler::begin();
      opt.step();
      Profiler::book_other("(AdamW step)", span);
      span = Profiler::begin();
      model.zero_grad();
      Profiler::book_other("(zero_grad)", span);
      const auto t2 = std::chrono::steady_clock::now();
      const double seconds = gpu ? timer->stop() : std::chrono::duration<double>(t2 - t0).count();
      Profiler::settle();
      Profiler::enable(false);
      if (timed) times.push_back(seconds);
      if (step == warmup) rss_first = train::resident_mb();
      flops = FlopCounter::total().total();
    }
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    const double tps = batch * c.block_size / median, gflops = flops / median / 1e9;
    nlohmann::json j{{"label", label},
                     {"mixer", c.mixer},
                     {"n_layer", c.n_layer},
                     {"n_head", c.n_head},
                     {"n_embd", c.n_embd},
                     {"context", c.block_size},
                     {"batch", batch},
                     {"vocab", c.vocab_size},
                     {"threads", omp_get_max_threads()},
                     {"ms_per_step", median * 1e3},
                     {"tokens_per_s", tps},
                     {"flops_per_step", flops},
                     {"gflops_per_s", gflops},
                     {"gemm_peak_gflops", peak / 1e9},
                     {"mfu", gflops * 1e9 / peak},
                     {"peak_rss_mb", train::peak_resident_mb()},
                     {"rss_first_mb", rss_first},
                     {"rss_last_mb", train::resident_mb()},
                     {"steps", steps},
                     {"device", device_name},
                     {"precision", precision_name},
                     {"gpu_peak_allocated_mb", gpu ? cuda::peak_memory().allocated / 1048576.0 : 0.0},
                     {"gpu_peak_reserved_mb", gpu ? cuda::peak_memory().reserved / 1048576.0 : 0.0},
                     {"fallbacks", fallback_counts()},
                     {"N", model.num_non_embedding_parameters()}};
    if (json) {
      fmt::print("{}\n", j.dump());
    } else {
      fmt::print("{} mixer, L{} H{} D{} T{} B{} V{}, {}, N = {}\n", c.mixer, c.n_layer, c.n_head, c.n_embd,
                 c.block_size, batch, c.vocab_size,
                 gpu ? fmt::format("cuda {} ({})", precision_name, cuda::describe())
                     : fmt::format("{} threads", omp_get_max_threads()),
                 model.num_non_embedding_parameters());
      if (gpu)
        fmt::print("GPU memory: peak {:.0f} MiB allocated, {:.0f} MiB reserved by the pool (after warm-up)\n",
                   cuda::peak_memory().allocated / 1048576.0, cuda::peak_memory().reserved / 1048576.0);
      fmt::print(
          "median {:.2f} ms/step over {} steps | {:.0f} tokens/s | {:.1f} GFLOP/s ({:.3g} FLOPs/step counted) | "
          "MFU {:.1f}% of {:.1f} GFLOP/s GEMM peak | RSS {:.0f} MB after warm-up, {:.0f} MB at the end, peak {:.0f} "
          "MB\n",
          median * 1e3, steps, tps, gflops, (double)flops, 100 * gflops * 1e9 / peak, peak / 1e9, rss_first,
          train::resident_mb(), train::peak_resident_mb());
    }
    if (profile) print_profile(steps, gpu);
  } catch (const std::exception& e) {
    fmt::print(stderr, "tapelm_bench: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
