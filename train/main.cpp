// tapelm: the command-line tool. Subcommands train, sample, eval, flops and
// compare; every one takes --help. Flags are parsed by CLI11 (Debian's libcli11-dev).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/autograd.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "nn/mixers.h"
#include "train/checkpoint.h"
#include "train/compare.h"
#include "train/distributed.h"
#include "train/flop_report.h"
#include "train/memory.h"
#include "train/sampler.h"
#include "train/thread_policy.h"
#include "train/trainer.h"

using namespace tapelm;

namespace {

// --config FILE.json: its keys are flag names ("n_layer" or "n-layer", or a
// model field's config key such as "block_size"); they
// are placed before the command line's own flags, which therefore win.
std::vector<std::string> expand_config(std::vector<std::string> args) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string path;
    size_t n_erase = 0;
    if (args[i] == "--config" && i + 1 < args.size())
      path = args[i + 1], n_erase = 2;
    else if (args[i].rfind("--config=", 0) == 0)
      path = args[i].substr(9), n_erase = 1;
    if (path.empty()) continue;
    std::ifstream in(path);
    TAPELM_CHECK(in.good(), "--config: cannot read {}", path);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      throw Error(fmt::format("--config: {} is not valid JSON: {}", path, e.what()));
    }
    TAPELM_CHECK(j.is_object(), "--config: {} must hold a JSON object of flag names", path);
    std::vector<std::string> from_file;
    for (auto& [key, value] : j.items()) {
      std::string flag = "--" + key;
      std::replace(flag.begin(), flag.end(), '_', '-');
      // A model field may also go by its config key ("block_size" for --context).
      for (const nn::ConfigField& f : nn::config_fields())
        if (!f.flag.empty() && f.key == key) flag = f.flag;
      auto one = [&](const nlohmann::json& v) {
        from_file.push_back(flag + "=" + (v.is_string() ? v.get<std::string>() : v.dump()));
      };
      if (value.is_array())
        for (auto& v : value) one(v);
      else
        one(value);
    }
    args.erase(args.begin() + i, args.begin() + i + n_erase);
    args.insert(args.begin() + 2, from_file.begin(), from_file.end());  // after "tapelm <subcommand>"
    break;
  }
  return args;
}

// The model flags, shared by train, flops and compare (which picks mixers
// with --mixers instead of --mixer): one per field of nn::config_fields().
// Values are checked by ModelConfig::validate, whose messages name the field.
void add_model_options(CLI::App* app, nn::ModelConfig& m, bool with_mixer = true) {
  for (const nn::ConfigField& f : nn::config_fields()) {
    if (f.flag.empty() || (f.flag == "--mixer" && !with_mixer)) continue;
    std::string help = f.help;
    if (!f.choices.empty()) help += ": " + fmt::format("{}", fmt::join(f.choices, ", "));
    std::visit([&](auto member) { app->add_option(f.flag, m.*member, help)->capture_default_str(); }, f.member);
  }
}

// Corpus, batching, optimizer, schedule, evaluation and seed flags, shared by
// train and compare.
void add_run_options(CLI::App* app, train::TrainOptions& t) {
  app->add_option("--tokenizer", t.tokenizer, "char, byte or bpe")
      ->capture_default_str()
      ->check(CLI::IsMember({"char", "byte", "bpe"}));
  app->add_option("--vocab-size", t.vocab_size, "BPE vocabulary size (>= 256)")->capture_default_str();
  app->add_option("--batch-mode", t.batch_mode, "windows (random contiguous windows) or documents (padded, masked)")
      ->capture_default_str()
      ->check(CLI::IsMember({"windows", "documents"}));
  app->add_option("--doc-sep", t.doc_sep, "Document separator line for --batch-mode documents (empty = blank lines)");
  app->add_option("--val-fraction", t.val_fraction, "Fraction of the corpus held out for validation (the end)")
      ->capture_default_str();
  app->add_option("--batch", t.batch, "Sequences per micro-batch B")->capture_default_str();
  app->add_option("--grad-accum", t.grad_accum, "Micro-batches accumulated per optimizer step")->capture_default_str();
  app->add_option("--steps", t.steps, "Optimizer steps (total, including resumed ones)")->capture_default_str();
  app->add_option("--optimizer", t.optimizer, "adamw or sgd")
      ->capture_default_str()
      ->check(CLI::IsMember({"adamw", "sgd"}));
  app->add_option("--lr", t.lr, "Peak learning rate")->capture_default_str();
  app->add_option("--min-lr", t.min_lr, "Learning rate at the end of the cosine")->capture_default_str();
  app->add_option("--schedule", t.schedule, "cosine (warm-up, then cosine to --min-lr) or constant")
      ->capture_default_str()
      ->check(CLI::IsMember({"cosine", "constant"}));
  app->add_option("--warmup", t.warmup, "Linear warm-up steps")->capture_default_str();
  app->add_option("--lr-decay-steps", t.lr_decay_steps,
                  "Step where the cosine reaches --min-lr (0 = --steps); set it to stop early and resume later on the "
                  "same schedule")
      ->capture_default_str();
  app->add_option("--weight-decay", t.weight_decay,
                  "AdamW decay of matrices and embeddings (not of 1-D parameters, nor of Mamba's A_log, D, dt_bias)")
      ->capture_default_str();
  app->add_option("--beta1", t.beta1, "AdamW β1 (SGD momentum)")->capture_default_str();
  app->add_option("--beta2", t.beta2, "AdamW β2")->capture_default_str();
  app->add_option("--grad-clip", t.grad_clip, "Clip the global gradient norm to this (0 = off)")->capture_default_str();
  app->add_option("--eval-interval", t.eval_interval, "Steps between validation evaluations (and checkpoints)")
      ->capture_default_str();
  app->add_option("--eval-batches", t.eval_batches, "Batches averaged per evaluation")->capture_default_str();
  app->add_option("--log-interval", t.log_interval, "Steps between progress lines")->capture_default_str();
  app->add_option("--checkpoint-interval", t.checkpoint_interval, "Steps between checkpoints (0 = at each evaluation)")
      ->capture_default_str();
  app->add_option("--seed", t.seed, "Seed for weights, batches and dropout")->capture_default_str();
  app->add_option("--threads", t.threads, "OpenMP/Eigen threads (0 = all cores)")->capture_default_str();
}

// Names of the model flags given on the command line, as ModelConfig JSON keys
// (train --resume checks them against the checkpoint).
std::vector<std::string> explicit_model_flags(const CLI::App* app) {
  std::vector<std::string> keys;
  for (const nn::ConfigField& f : nn::config_fields())
    if (!f.flag.empty() && app->get_option_no_throw(f.flag) && app->count(f.flag)) keys.push_back(f.key);
  return keys;
}

int run_sample(const std::string& dir, const std::string& prompt, train::SampleOptions so, bool stats) {
  train::Checkpoint ck = train::load_checkpoint(dir);
  std::vector<int32_t> ids;
  if (prompt.empty()) {
    try {
      ids = ck.tokenizer->encode("\n");
    } catch (const Error&) {
      ids = {0};
    }
  } else {
    ids = ck.tokenizer->encode(prompt);
  }
  fmt::print("{}", prompt);
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  auto t_first = t0;
  double rss_first = 0;
  int64_t produced = 0;
  train::generate(*ck.model, ids, so, [&](int32_t id) {
    fmt::print("{}", ck.tokenizer->decode({id}));
    if (++produced == 1) t_first = std::chrono::steady_clock::now(), rss_first = train::resident_mb();
    std::fflush(stdout);
  });
  fmt::print("\n");
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

int run_eval(const std::string& dir, const std::vector<std::string>& paths, int64_t batch) {
  train::Checkpoint ck = train::load_checkpoint(dir);
  auto opts = nlohmann::json::parse(ck.train_options_json);
  const std::string mode = opts.value("batch_mode", "windows"), sep = opts.value("doc_sep", "");
  const double val_fraction = opts.value("val_fraction", 0.1);
  data::Dataset ds(data::read_corpus(paths), *ck.tokenizer, ck.config.block_size, val_fraction, mode, sep);
  NoGradGuard no_grad;
  ck.model->eval();
  double total = 0;
  int64_t tokens = 0;
  for (auto& b : ds.sequential_batches(data::Split::val, batch)) {
    const int64_t n = b.tokens();
    total += ck.model->loss(b.x, b.y, b.pad_mask).item() * n;
    tokens += n;
  }
  TAPELM_CHECK(tokens > 0, "eval: the validation split has no complete window");
  fmt::print("val loss {:.4f} (perplexity {:.2f}) over {} tokens of {} (model at step {})\n", total / tokens,
             std::exp(total / tokens), tokens, fmt::join(paths, ", "), ck.step);
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

}  // namespace

int main(int argc, char** argv) {
  train::choose_wait_policy(argc, argv);  // see train/thread_policy.h
  // Past a file-size limit (ulimit -f) a write then fails with EFBIG and a
  // clear message instead of the signal killing the process mid-checkpoint.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"tapelm: train, evaluate and sample small language models on a CPU"};
  app.require_subcommand(1);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  // ---- train ----
  train::TrainOptions t;
  auto* tr = app.add_subcommand("train", "Train a model on a text corpus and write checkpoints to --out");
  tr->add_option("--config", "JSON file of flag values (keys are flag names); flags given here override it");
  tr->add_option("--data", t.data, "Corpus: text file(s) or folder(s) of text files")
      ->required()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  tr->add_option("--out", t.out, "Output directory: checkpoint, log.jsonl, loss.svg")->capture_default_str();
  add_model_options(tr, t.model);
  add_run_options(tr, t);
  tr->add_flag("--resume", t.resume, "Continue the run in --out from its checkpoint, exactly");
  tr->add_flag("--quiet", t.quiet, "No progress lines (evaluations still print)");

  // ---- sample ----
  std::string ck_dir, prompt;
  train::SampleOptions so;
  int threads = 0;
  auto* sa = app.add_subcommand("sample", "Generate text from a checkpoint");
  sa->add_option("--checkpoint", ck_dir, "Checkpoint directory (the --out of train)")->required();
  sa->add_option("--prompt", prompt, "Text to continue (default: a newline)");
  sa->add_option("--tokens", so.tokens, "Tokens to generate")->capture_default_str();
  sa->add_option("--temperature", so.temperature, "Softmax temperature; 0 = greedy argmax")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sa->add_option("--top-k", so.top_k, "Sample among the k most likely tokens (0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sa->add_option("--seed", so.seed, "Sampling seed")->capture_default_str();
  bool sample_stats = false;
  sa->add_flag("--stats", sample_stats,
               "After the text, print to stderr the decoding speed and the resident memory after the first token and "
               "at the end");
  sa->add_option("--threads", threads, "Threads (0 = all cores)")->capture_default_str();

  // ---- eval ----
  std::vector<std::string> eval_data;
  int64_t eval_batch = 16;
  auto* ev = app.add_subcommand("eval", "Mean loss of a checkpoint over a corpus's validation split");
  ev->add_option("--checkpoint", ck_dir, "Checkpoint directory")->required();
  ev->add_option("--data", eval_data, "Corpus (file(s) or folder(s))")
      ->required()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  ev->add_option("--batch", eval_batch, "Windows per forward pass")->capture_default_str();
  ev->add_option("--threads", threads, "Threads (0 = all cores)")->capture_default_str();

  // ---- compare ----
  train::CompareOptions cmp;
  cmp.train.out = "runs/compare";
  cmp.train.steps = 600;
  cmp.train.eval_interval = 100;
  cmp.train.log_interval = 50;
  auto* co = app.add_subcommand("compare",
                                "Bake-off as a scaling study: train every mixer at the attention model's non-embedding "
                                "N at each of --sizes; fit loss vs FLOPs; measure decoding speed");
  co->add_option("--config", "JSON file of flag values (keys are flag names)");
  co->add_option("--data", cmp.train.data, "Corpus: text file(s) or folder(s) of text files")
      ->required()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  co->add_option("--out", cmp.train.out,
                 "Output directory: one run per mixer, loss_vs_flops.svg, decode_speed.svg, results.md")
      ->capture_default_str();
  co->add_option("--mixers", cmp.mixers, "Mixers to train (default: all)")
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  add_model_options(co, cmp.train.model, false);
  add_run_options(co, cmp.train);
  co->add_option("--sizes", cmp.sizes,
                 "Widths of the attention reference, one model size each (default: --n-embd); every mixer is "
                 "matched to each size's non-embedding N")
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  co->add_option("--tokens-per-param", cmp.tokens_per_param,
                 "Train every size on this many tokens per reference parameter N (sets the steps; 0 = --steps)")
      ->capture_default_str();
  co->add_option("--seeds", cmp.seeds, "Seeds at the smallest size (--seed, --seed + 1, ...)")->capture_default_str();
  co->add_option("--jobs", cmp.jobs,
                 "Runs at once, each a `tapelm train` process with --threads (default 1 when jobs > 1); 0 = one per "
                 "core")
      ->capture_default_str();
  co->add_option("--baseline", cmp.baseline, "Mixer whose final loss at the largest size the compute table reaches")
      ->capture_default_str();
  co->add_option("--decode-contexts", cmp.decode_contexts, "Context lengths of the decoding-speed table")
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  co->add_option("--decode-batches", cmp.decode_batches, "Batch sizes of the decoding-speed table")
      ->delimiter(',')
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  co->add_option("--decode-tokens", cmp.decode_tokens, "Tokens timed per context length")->capture_default_str();

  // ---- flops ----
  nn::ModelConfig flops_model;
  int64_t flops_batch = 12;
  auto* fl = app.add_subcommand(
      "flops", "Analytic FLOP accounting beside the tape's count for one training step, per component");
  fl->add_option("--config", "JSON file of flag values (keys are flag names)");
  add_model_options(fl, flops_model);
  fl->add_option("--vocab-size", flops_model.vocab_size, "Vocabulary size V")->capture_default_str();
  fl->add_option("--batch", flops_batch, "Sequences per step b")->capture_default_str();
  fl->add_option("--threads", threads, "Threads (0 = all cores)")->capture_default_str();

  try {
    std::vector<std::string> args = expand_config(std::vector<std::string>(argv, argv + argc));
    std::vector<char*> cargs;
    for (auto& a : args) cargs.push_back(a.data());
    try {
      app.parse((int)cargs.size(), cargs.data());
    } catch (const CLI::ParseError& e) {
      if (train::launched_rank() != 0) return e.get_exit_code();  // mpirun: rank 0 prints it
      return app.exit(e);
    }
    if (*tr) {
      const int code = train::run_training(t, explicit_model_flags(tr));
      train::Communicator::finalize();
      return code;
    }
    TAPELM_CHECK(train::launched_world_size() == 1,
                 "tapelm {}: runs in one process; of the subcommands only train runs under mpirun",
                 app.get_subcommands()[0]->get_name());
    if (*co) {
      cmp.given = explicit_model_flags(co);
      return train::run_compare(cmp);
    }

    train::set_threads(threads);
    if (*sa) return run_sample(ck_dir, prompt, so, sample_stats);
    if (*ev) return run_eval(ck_dir, eval_data, eval_batch);
    if (*fl) {
      TAPELM_CHECK(flops_batch > 0, "flops: --batch must be positive");
      fmt::print("{}", train::format_flop_report(
                           train::flop_report(nn::with_recipe(flops_model, explicit_model_flags(fl)), flops_batch)));
      return 0;
    }
  } catch (const train::StoppedByAnotherRank& stopped) {  // that rank printed why
    train::Communicator::finalize();
    return stopped.code;
  } catch (const std::exception& e) {
    return report_error(e.what());
  }
  return 0;
}
