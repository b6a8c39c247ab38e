// tapelm: the command-line tool. Subcommands train, sample, eval, flops,
// compare and tokenize; every one takes --help. Flags are parsed by CLI11 (Debian's libcli11-dev).
#include <pthread.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <functional>
#include <memory>

#include "autograd/autograd.h"
#include "autograd/json_int.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "data/token_data.h"
#include "data/tokenize.h"
#include "train/checkpoint.h"
#include "train/cli.h"
#include "train/compare.h"
#include "train/distributed.h"
#include "train/flop_report.h"
#include "train/gguf.h"
#include "train/hugging_face.h"
#include "train/memory.h"
#include "train/sampler.h"
#include "train/thread_policy.h"
#include "train/trainer.h"

using namespace tapelm;

namespace {

// Caps tapelm's tensors at the memory the machine has available (or at
// TAPELM_MEMORY_LIMIT bytes), so that a size it cannot hold is one clear
// error rather than a process the kernel kills.
void limit_memory_from_environment() {
  int64_t limit = 0;
  if (const char* env = std::getenv("TAPELM_MEMORY_LIMIT"); env && *env) {
    const std::optional<int64_t> bytes = json_int64(std::string(env));
    TAPELM_CHECK(bytes && *bytes > 0, "TAPELM_MEMORY_LIMIT: expects a number of bytes > 0, got '{}'", env);
    limit = *bytes;
  }
  train::limit_tensor_memory(limit);
}

int run_sample(const std::string& dir, const std::string& prompt, train::SampleOptions so, bool stats, Device device) {
  train::Checkpoint ck = train::load_checkpoint(dir);
  ck.model->to(device);
  std::vector<int32_t> ids;
  if (prompt.empty()) {
    try {
      ids = ck.tokenizer->encode("\n");
    } catch (const Error&) {
      ids = {0};
    }
  } else {
    try {
      ids = ck.tokenizer->encode(prompt);
    } catch (const Error& e) {
      throw Error(fmt::format("sample --prompt: {}", e.what()));
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto t_first = t0;
  double rss_first = 0;
  int64_t produced = 0;
  for (int64_t i = 0; i < so.num_samples; ++i) {
    if (i > 0) fmt::print("---------------\n");  // between samples, as nanoGPT's sample.py
    train::SampleOptions one = so;
    one.seed = so.seed + i;
    fmt::print("{}", prompt);
    std::fflush(stdout);
    // Generated text not yet printed: with a stop string, its last stop.size() − 1 bytes wait until they cannot
    // begin it (an occurrence must then start inside this tail, so only the tail is searched).
    std::string pending;
    bool stopped = false;
    auto print = [&](size_t n) {
      fmt::print("{}", pending.substr(0, n));
      std::fflush(stdout);
      pending.erase(0, n);
    };
    train::generate(*ck.model, ids, one, [&](int32_t id) {
      if (++produced == 1) t_first = std::chrono::steady_clock::now(), rss_first = train::resident_mb();
      pending += ck.tokenizer->decode({id});
      if (const size_t at = so.stop.empty() ? std::string::npos : pending.find(so.stop); at != std::string::npos) {
        print(at);
        stopped = true;
        return false;  // generate() stops
      }
      const size_t held = so.stop.empty() ? 0 : std::min(pending.size(), so.stop.size() - 1);
      print(pending.size() - held);
      return true;
    });
    if (!stopped) print(pending.size());
    fmt::print("\n");
  }
  if (stats) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_first).count();
    fmt::print(stderr,
               "sample: {} tokens, {:.0f} tokens/s after the first (context {}, {}); resident memory {:.1f} MiB "
               "after the first token, {:.1f} MiB at the end\n",
               produced, (produced - 1) / std::max(s, 1e-9), ck.model->config.block_size,
               ck.model->decodes_past_context() ? "a recurrent state carried past it"
                                                : "restarting from the last half-context when full",
               rss_first, train::resident_mb());
  }
  return 0;
}

// --device and --precision of the commands that are not `train` (whose flags are run fields): checked, and
// the GPU's precision set.
void use_device(const std::string& command, Device device, Precision precision) {
  if (device == Device::cuda) require_cuda(command + " --device cuda");
  TAPELM_CHECK(device == Device::cuda || precision == Precision::fp32,
               "{}: --precision {} runs on --device cuda; the CPU computes in fp32", command,
               precision_name(precision));
  set_gpu_precision(precision);
}

int run_eval(const std::string& dir, const std::vector<std::string>& paths, int64_t batch, Device device) {
  train::Checkpoint ck = train::load_checkpoint(dir);
  ck.model->to(device);
  // The split the run trained with: its batch mode, document separator and validation fraction.
  const train::TrainOptions& run = ck.train_options;
  std::optional<data::TokenData> files = paths.size() == 1 ? data::find_token_data(paths[0]) : std::nullopt;
  if (files) data::check_made_with(*files, *ck.tokenizer, "eval");
  data::Dataset ds = files ? data::Dataset(*files, ck.config.block_size, ck.config.vocab_size, run.batch_mode)
                           : data::Dataset(data::read_corpus(paths), *ck.tokenizer, ck.config.block_size,
                                           run.val_fraction, run.batch_mode, run.doc_sep);
  NoGradGuard no_grad;
  ck.model->eval();
  // Each token's text in bytes, for bits per byte (loss in bits over the bytes the tokens stand for: a figure
  // that compares across tokenizers).
  const std::vector<int64_t> bytes_of = data::token_byte_lengths(*ck.tokenizer);
  double total = 0;
  int64_t tokens = 0, bytes = 0;
  for (auto& b : ds.sequential_batches(data::Split::val, batch)) {
    const int64_t n = b.tokens();
    total += ck.model->loss(b.x, b.y, b.pad_mask).item() * n;
    tokens += n;
    const int32_t* y = b.y.data<int32_t>();
    for (int64_t i = 0; i < b.y.numel(); ++i)
      if (y[i] >= 0) bytes += bytes_of[y[i]];
  }
  TAPELM_CHECK(tokens > 0, "eval: the validation split has no complete window");
  fmt::print(
      "val loss {:.4f} (perplexity {:.2f}, {:.4f} bits per byte) over {} tokens ({} bytes) of {} (model at step "
      "{})\n",
      total / tokens, std::exp(total / tokens), total / std::log(2.0) / std::max<int64_t>(bytes, 1), tokens, bytes,
      fmt::join(paths, ", "), ck.step);
  return 0;
}

// Prints an error once per job and ends the process (every rank of an mpirun
// job, where needed).
int report_error(const std::string& what) {
  using train::Communicator;
  if (Communicator::running() && !Communicator::failure_agreed()) {
    // One rank's own failure while the others may wait for it in a collective.
    fmt::print(stderr, "tapelm: error on rank {} of {}: {}\n", Communicator::world().rank(),
               Communicator::world().size(), what);
    std::fflush(stderr);
    Communicator::abort(1);
  }
  // Before MPI starts every rank parses the same flags and fails alike: rank 0 says it.
  if (Communicator::running() || train::launched_rank() == 0) fmt::print(stderr, "tapelm: error: {}\n", what);
  Communicator::finalize();
  return 1;
}

// --threads of the commands that do not train, in the run option's domain (train::run_fields).
// --device and --precision for the commands that are not `train` (whose flags are run fields).
struct DeviceFlags {
  std::string device = "cpu", precision = "fp32";
};
void add_device_flags(CLI::App* app, DeviceFlags& d) {
  app->add_option("--device", d.device, "Where the model runs: cpu, or cuda (one NVIDIA GPU)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app->add_option("--precision", d.precision,
                  "The GPU's products: fp32 (exact), or bf16 (bfloat16 operands, float32 accumulation)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
}

void add_threads_flag(CLI::App* app, int& threads) {
  app->add_option("--threads", threads, "Threads (0 = all cores)")
      ->capture_default_str()
      ->check(CLI::Range(0, train::kMaxThreads));
}

// Each subcommand: its flags, added to the tool's parser, and what it runs
// once they are parsed. Options live in the closure.
struct Command {
  CLI::App* app;
  std::function<int()> run;
};

Command train_command(CLI::App& tool) {
  auto t = std::make_shared<train::TrainOptions>();
  auto* app = tool.add_subcommand("train", "Train a model on a text corpus and write checkpoints to --out");
  app->add_option("--config", "JSON file of flag values (keys are flag names); flags given here override it");
  app->add_option("--out", t->out, "Output directory: checkpoint, log.jsonl, loss.svg")->capture_default_str();
  train::add_model_flags(app, t->model);
  train::add_run_flags(app, *t);
  app->add_flag("--resume", t->resume, "Continue the run in --out from its checkpoint, exactly");
  app->add_option("--init-from", t->init_from,
                  "Start from a Hugging Face model folder (GPT-2, Llama, Mamba or Mamba-2: its config, weights and "
                  "tokenizer)");
  app->add_flag("--overwrite", t->overwrite,
                "Start a new run in an --out that holds one (its checkpoint and log are replaced)");
  app->add_flag("--quiet", t->quiet, "No progress lines (evaluations still print)");
  return {app, [t, app] {
            const int code = train::run_training(*t, train::given_model_keys(app), train::given_run_keys(app));
            train::Communicator::finalize();
            return code;
          }};
}

Command sample_command(CLI::App& tool) {
  struct Options {
    std::string checkpoint, prompt;
    train::SampleOptions sample;
    bool stats = false;
    int threads = 0;
    DeviceFlags device;
  };
  auto o = std::make_shared<Options>();
  auto* app = tool.add_subcommand("sample", "Generate text from a checkpoint");
  add_device_flags(app, o->device);
  app->add_option("--checkpoint", o->checkpoint, "Checkpoint directory (the --out of train)")->required();
  app->add_option("--prompt", o->prompt, "Text to continue (default: a newline)");
  train::add_sample_flags(app, o->sample);
  app->add_flag("--stats", o->stats,
                "After the text, print to stderr the decoding speed and the resident memory after the first token "
                "and at the end");
  add_threads_flag(app, o->threads);
  return {app, [o] {
            train::set_threads(o->threads);
            const Device device = parse_device(o->device.device);
            use_device("sample", device, parse_precision(o->device.precision));
            return run_sample(o->checkpoint, o->prompt, o->sample, o->stats, device);
          }};
}

Command eval_command(CLI::App& tool) {
  struct Options {
    std::string checkpoint;
    std::vector<std::string> data;
    int64_t batch = 16;
    int threads = 0;
    DeviceFlags device;
  };
  auto o = std::make_shared<Options>();
  auto* app = tool.add_subcommand("eval", "Mean loss of a checkpoint over a corpus's validation split");
  add_device_flags(app, o->device);
  app->add_option("--checkpoint", o->checkpoint, "Checkpoint directory")->required();
  app->add_option("--data", o->data, "Corpus (file(s) or folder(s))")
      ->required()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--batch", o->batch, "Windows per forward pass")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  add_threads_flag(app, o->threads);
  return {app, [o] {
            train::set_threads(o->threads);
            const Device device = parse_device(o->device.device);
            use_device("eval", device, parse_precision(o->device.precision));
            return run_eval(o->checkpoint, o->data, o->batch, device);
          }};
}

Command tokenize_command(CLI::App& tool) {
  auto o = std::make_shared<data::TokenizeOptions>();
  auto* app = tool.add_subcommand(
      "tokenize",
      "Tokenize a corpus once into token shards that train and eval --data DIR read mapped (streamed, in parallel)");
  app->add_option("--data", o->inputs, "Text file(s) or folder(s)")
      ->required()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--out", o->out, "Folder for the shards, tokenizer.json and index.json")->required();
  app->add_option("--tokenizer", o->tokenizer, "char, byte, bpe (learned on a sample) or gpt2")
      ->capture_default_str()
      ->check(CLI::IsMember({"char", "byte", "bpe", "gpt2"}));
  app->add_option("--vocab-size", o->vocab_size, "BPE vocabulary size")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(256), int64_t(1) << 24));
  app->add_option("--val-fraction", o->val_fraction, "The last fraction of the text held out for validation")
      ->capture_default_str()
      ->check(CLI::Range(1e-6, 1 - 1e-6));
  app->add_option("--doc-sep", o->doc_sep,
                  "Document separator line, recorded for --batch-mode documents (empty = blank lines)");
  app->add_option("--threads", o->threads, "Threads (0: every core)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  auto quiet = std::make_shared<bool>(false);
  app->add_flag("--quiet", *quiet, "No progress line");
  return {app, [o, quiet] {
            auto bar = [quiet](const data::TokenizeProgress& p) {
              if (*quiet) return;
              const double rate = p.seconds > 0 ? p.bytes_done / p.seconds : 0;
              const double eta = rate > 0 ? (p.bytes_total - p.bytes_done) / rate : 0;
              fmt::print(stderr, "\rtokenize: {:5.1f}% of {:.1f} MB | {:.1f} MB/s | ETA {:.0f} s   ",
                         100.0 * p.bytes_done / p.bytes_total, p.bytes_total / 1e6, rate / 1e6, eta);
            };
            const data::TokenizeReport r = data::tokenize_corpus(*o, bar);
            if (!*quiet && !r.unchanged) fmt::print(stderr, "\n");
            if (r.unchanged)
              fmt::print("{}: unchanged input, already tokenized ({} training and {} validation tokens)\n", o->out,
                         r.train_tokens, r.val_tokens);
            else
              fmt::print(
                  "{}: {:.1f} MB in {:.1f} s ({:.1f} MB/s): {} training and {} validation tokens in {} shards, "
                  "peak RSS {:.0f} MB\n",
                  o->out, r.bytes / 1e6, r.seconds, r.bytes / 1e6 / std::max(r.seconds, 1e-9), r.train_tokens,
                  r.val_tokens, r.shards, train::peak_resident_mb());
            return 0;
          }};
}

Command export_command(CLI::App& tool) {
  struct Options {
    std::string checkpoint, format = "hf", out, gguf_type = "f32";
  };
  auto o = std::make_shared<Options>();
  auto* app = tool.add_subcommand(
      "export",
      "Write a checkpoint as a Hugging Face transformers folder (AutoModelForCausalLM loads it) or a GGUF file "
      "(llama.cpp runs it)");
  app->add_option("--checkpoint", o->checkpoint, "Checkpoint directory")->required();
  app->add_option("--format", o->format,
                  "hf: a folder of config.json, model.safetensors and the tokenizer's files; gguf: one file")
      ->capture_default_str()
      ->check(CLI::IsMember({"hf", "gguf"}));
  app->add_option("--gguf-type", o->gguf_type, "GGUF weights: f32, or f16 / bf16 for the large matrices")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  app->add_option("--out", o->out, "Folder (hf) or file (gguf) to write")->required();
  return {app, [o] {
            const train::Checkpoint ck = train::load_checkpoint(o->checkpoint);
            if (o->format == "gguf")
              train::export_gguf(*ck.model, *ck.tokenizer, o->out, o->gguf_type);
            else
              train::export_hugging_face(*ck.model, *ck.tokenizer, o->out);
            fmt::print("{}: {} (step {}) as {}\n", o->out, o->checkpoint, ck.step,
                       o->format == "gguf" ? "a GGUF file (" + o->gguf_type + ")" : "a Hugging Face folder");
            return 0;
          }};
}

Command compare_command(CLI::App& tool) {
  auto cmp = std::make_shared<train::CompareOptions>();
  cmp->train.out = "runs/compare";
  cmp->train.steps = 600;
  cmp->train.eval_interval = 100;
  cmp->train.log_interval = 50;
  auto* app = tool.add_subcommand("compare",
                                  "Bake-off as a scaling study: train every mixer at the attention model's "
                                  "non-embedding N at each of --sizes; fit loss vs FLOPs; measure decoding speed");
  app->add_option("--config", "JSON file of flag values (keys are flag names)");
  app->add_option("--out", cmp->train.out,
                  "Output directory: one run per mixer, loss_vs_flops.svg, decode_speed.svg, results.md")
      ->capture_default_str();
  app->add_flag("--overwrite", cmp->train.overwrite, "Train again runs whose directories hold one");
  app->add_option("--mixers", cmp->mixers, "Mixers to train (default: all)")
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  train::add_model_flags(app, cmp->train.model, /*with_mixer=*/false);
  train::add_run_flags(app, cmp->train);
  app->add_option("--sizes", cmp->sizes,
                  "Widths of the attention reference, one model size each (default: --n-embd); every mixer is "
                  "matched to each size's non-embedding N")
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--tokens-per-param", cmp->tokens_per_param,
                  "Train every size on this many tokens per reference parameter N (sets the steps; 0 = --steps)")
      ->capture_default_str();
  app->add_option("--seeds", cmp->seeds, "Seeds at the smallest size (--seed, --seed + 1, ...)")->capture_default_str();
  app->add_option("--jobs", cmp->jobs,
                  "Runs at once, each a `tapelm train` process with --threads (default 1 when jobs > 1); 0 = one "
                  "per core")
      ->capture_default_str();
  app->add_option("--baseline", cmp->baseline, "Mixer whose final loss at the largest size the compute table reaches")
      ->capture_default_str();
  app->add_option("--decode-contexts", cmp->decode_contexts, "Context lengths of the decoding-speed table")
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--decode-batches", cmp->decode_batches, "Batch sizes of the decoding-speed table")
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--decode-tokens", cmp->decode_tokens, "Tokens timed per context length")->capture_default_str();
  return {app, [cmp, app] {
            cmp->given = train::given_model_keys(app);
            return train::run_compare(*cmp);
          }};
}

Command flops_command(CLI::App& tool) {
  struct Options {
    nn::ModelConfig model;
    int64_t batch = 12;
    int threads = 0;
    DeviceFlags device;
  };
  auto o = std::make_shared<Options>();
  auto* app = tool.add_subcommand(
      "flops", "Analytic FLOP accounting beside the tape's count for one training step, per component");
  app->add_option("--config", "JSON file of flag values (keys are flag names)");
  train::add_model_flags(app, o->model);
  app->add_option("--vocab-size", o->model.vocab_size, "Vocabulary size V")->capture_default_str();
  app->add_option("--batch", o->batch, "Sequences per step b")->capture_default_str();
  add_threads_flag(app, o->threads);
  add_device_flags(app, o->device);
  return {app, [o, app] {
            TAPELM_CHECK(o->batch > 0, "flops: --batch must be positive");
            train::set_threads(o->threads);
            const Device device = parse_device(o->device.device);
            use_device("flops", device, parse_precision(o->device.precision));
            const nn::ModelConfig model = train::model_from_flags(app, o->model);
            fmt::print("{}", train::format_flop_report(train::flop_report(model, o->batch, device)));
            return 0;
          }};
}

}  // namespace

int main(int argc, char** argv) {
  // Ctrl-C and SIGUSR1 are held (blocked, so pending) until the command has
  // its handlers: mpirun passes SIGUSR1 on to ranks that may still be starting.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  train::choose_wait_policy(argc, argv);  // see train/thread_policy.h
  // Past a file-size limit (ulimit -f) a write then fails with EFBIG and a
  // clear message instead of the signal killing the process mid-checkpoint.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App tool{"tapelm: train, evaluate and sample small language models on a CPU"};
  tool.require_subcommand(1);
  tool.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  const std::vector<Command> commands{train_command(tool),   sample_command(tool), eval_command(tool),
                                      compare_command(tool), flops_command(tool),  tokenize_command(tool),
                                      export_command(tool)};
  try {
    std::vector<std::string> args = train::expand_config(std::vector<std::string>(argv, argv + argc));
    std::vector<char*> cargs;
    for (auto& a : args) cargs.push_back(a.data());
    try {
      tool.parse((int)cargs.size(), cargs.data());
    } catch (const CLI::ParseError& e) {
      if (train::launched_rank() != 0) return e.get_exit_code();              // mpirun: rank 0 prints it
      if (tool.get_subcommands().empty() && !tool.get_help_ptr()->count()) {  // no known subcommand: name them
        std::vector<std::string> names;
        for (const Command& c : commands) names.push_back(c.app->get_name());
        fmt::print(stderr, "tapelm: error: {}; the subcommands are {} (tapelm SUBCOMMAND --help)\n",
                   argc > 1 ? fmt::format("'{}' is not a subcommand", argv[1]) : "a subcommand is required",
                   fmt::join(names, ", "));
        return e.get_exit_code();
      }
      return tool.exit(e);
    }
    const CLI::App* chosen = tool.get_subcommands()[0];
    if (chosen->get_name() == "train") train::install_stop_handlers();  // a held stop now reaches the run
    pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);               // other commands: the default action
    TAPELM_CHECK(chosen->get_name() == "train" || train::launched_world_size() == 1,
                 "tapelm {}: runs in one process; of the subcommands only train runs under mpirun", chosen->get_name());
    limit_memory_from_environment();
    for (const Command& c : commands)
      if (c.app == chosen) return c.run();
  } catch (const train::StoppedByAnotherRank& stopped) {  // that rank printed why
    train::Communicator::finalize();
    return stopped.code;
  } catch (const std::exception& e) {
    return report_error(e.what());
  }
  return 0;
}
