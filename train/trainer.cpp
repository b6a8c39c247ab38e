#include "train/trainer.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/runtime.h"
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "data/batch_prefetcher.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "data/token_data.h"
#include "data/tokenizers.h"
#include "nn/mixers.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/gemm_peak.h"
#include "train/hugging_face.h"
#include "train/memory_plan.h"
#include "train/plot.h"
#include "train/run_lock.h"
#include "train/thread_policy.h"

namespace tapelm::train {

namespace fs = std::filesystem;

namespace {

volatile std::sig_atomic_t g_interrupted = 0;  // Ctrl-C, or SIGUSR1 (which mpirun passes on to every rank)
void on_sigint(int) { g_interrupted = 1; }

std::string hms(double seconds) {
  int64_t s = (int64_t)seconds;
  return s >= 3600 ? fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
                   : fmt::format("{}:{:02}", s / 60, s % 60);
}

// Mean loss over `batches` random batches of a split, drawn from a generator
// seeded by (seed, step) so evaluation never disturbs the training stream.
// Data parallel: every rank draws every batch (the same ones) and evaluates
// every R-th, and the sums are added up.
double estimate_loss(nn::GPT& model, const data::Dataset& ds, data::Split split, int64_t B, int64_t batches,
                     uint64_t seed, const Communicator& comm) {
  NoGradGuard no_grad;
  const bool was_training = model.training();
  model.eval();
  Generator gen(seed);
  double total = 0;
  for (int64_t i = 0; i < batches; ++i) {
    data::Batch b = ds.batch(split, B, gen);
    if (i % comm.size() == comm.rank()) total += model.loss(b.x, b.y, b.pad_mask).item();
  }
  comm.sum(&total, 1);
  model.train(was_training);
  return total / batches;
}

// Each rank's dropout masks come from a stream of its own (rank 0 keeps the
// single-process stream), derived from rank 0's state.
Generator::State dropout_stream_of_rank(const Generator::State& rank0, int rank) {
  Generator gen;
  gen.set_state(rank0);
  if (rank > 0) gen.manual_seed(gen.next_u64() + 0x9E3779B97F4A7C15ULL * (uint64_t)rank);
  return gen.state();
}

// Every rank's generator state, gathered (for rank 0's checkpoint).
std::vector<Generator::State> gather_states(const Communicator& comm, const Generator::State& mine) {
  const auto words = mine.words();
  const std::vector<uint64_t> all = comm.all_gather({words.begin(), words.end()});
  std::vector<Generator::State> states;
  for (int r = 0; r < comm.size(); ++r) states.push_back(Generator::State::from_words(all.data() + words.size() * r));
  return states;
}

// False if any parameter holds a NaN or ±Inf (after an update blew up).
bool parameters_finite(const nn::Module& model) {
  std::vector<cuda::Span> on_gpu;
  for (auto& p : model.named_parameters()) {
    if (p.tensor.is_cuda()) {
      on_gpu.push_back({p.tensor.cuda_data<float>(), p.tensor.numel()});
      continue;
    }
    bool ok = true;
    dispatch_float("train", p.tensor.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* d = p.tensor.data<T>();
      for (int64_t i = 0; i < p.tensor.numel() && ok; ++i) ok = std::isfinite(d[i]);
    });
    if (!ok) return false;
  }
  // A NaN or an infinity anywhere makes Σ x² (in double) non-finite.
  for (double s : on_gpu.empty() ? std::vector<double>{} : cuda::sum_of_squares(on_gpu))
    if (!std::isfinite(s)) return false;
  return true;
}

// Everything a run trains with, made fresh or read back from a checkpoint.
struct Run {
  optim::Schedule schedule;
  std::unique_ptr<data::Tokenizer> tok;
  std::unique_ptr<nn::GPT> model;
  std::unique_ptr<data::Dataset> ds;
  std::vector<optim::ParamGroup> groups;
  std::unique_ptr<optim::Optimizer> opt;
  std::unique_ptr<data::BatchPrefetcher> batches;  // the training batches, drawn ahead from ds
  int64_t start_step = 0;
  StepMemory memory;  // planned before the first step
  RunLock lock;       // on --out, held by rank 0 while the run trains
};

// A new run refuses an --out that holds one (a checkpoint or a log), unless
// --overwrite says to replace it: running the same command twice must not
// lose the first run.
void check_out_is_free(const TrainOptions& o) {
  if (o.resume || o.overwrite) return;
  for (const char* file : {"model.safetensors", "log.jsonl"})
    TAPELM_CHECK(!fs::exists(fs::path(o.out) / file),
                 "train: {} holds a run ({} is there); continue it with --resume, start it over with --overwrite, or "
                 "give this run another --out",
                 o.out, file);
}

// The set-up of a fresh or resumed run, in one place. Every rank does the
// same work on the same inputs; the caller agrees on any error (comm.agree).
Run set_up(TrainOptions& o, const std::vector<std::string>& given_model_keys,
           const std::vector<std::string>& given_run_keys, const Communicator& comm) {
  const int ranks = comm.size();
  o.validate();
  TAPELM_CHECK(o.batch % ranks == 0,
               "train: --batch {} is the global batch and must divide evenly among the {} ranks (each takes "
               "--batch / {} sequences); use a multiple of {}",
               o.batch, ranks, ranks, ranks);
  TAPELM_CHECK(o.lr > 0 && std::isfinite(o.lr), "train: --lr must be a positive number, got {}", o.lr);
  TAPELM_CHECK(!o.out.empty(), "train: --out must name a directory");
  check_out_is_free(o);
  auto given = [&](const char* key) {  // a run field set by a flag or --config
    return std::find(given_run_keys.begin(), given_run_keys.end(), key) != given_run_keys.end();
  };
  Checkpoint ck;
  if (o.resume) {  // a run goes on where it ran (exact resume needs the same device and precision) unless told
    ck = load_checkpoint(o.out);
    if (!given("device")) o.device = ck.train_options.device;
    if (!given("precision")) o.precision = ck.train_options.precision;
  }
  if (o.device == "cuda") require_cuda("train --device cuda");  // one line, before the corpus is read
  TAPELM_CHECK(o.precision == "fp32" || o.device == "cuda",
               "train: --precision {} runs on --device cuda; the CPU trains in fp32", o.precision);
  if (o.device == "cuda") set_gpu_precision(parse_precision(o.precision));
  Run run;
  run.schedule = {o.schedule, o.lr, std::min(o.min_lr, o.lr), o.warmup,
                  o.lr_decay_steps > 0 ? o.lr_decay_steps : o.steps};
  run.schedule.at(0);                          // validates the kind
  std::optional<HuggingFaceModel> pretrained;  // --init-from: the model, config and tokenizer are the folder's
  TAPELM_CHECK(!o.resume || o.init_from.empty(),
               "train: --init-from starts a new run from {}; --resume continues the one in {}: give one of them",
               o.init_from, o.out);
  if (!o.resume && !o.init_from.empty()) {
    for (const std::string& key : given_model_keys)
      TAPELM_CHECK(key == "dropout", "train --init-from: the model is {}'s, so {} cannot be set (only --dropout)",
                   o.init_from, key);
    for (const char* key : {"tokenizer", "vocab_size"})
      TAPELM_CHECK(!given(key), "train --init-from: the tokenizer is {}'s, so {} cannot be set", o.init_from, key);
    pretrained = import_hugging_face(o.init_from, o.model.dropout, o.seed);
    o.model = pretrained->config;
    o.tokenizer = pretrained->tokenizer->kind();
  } else if (!o.resume) {  // the mixer's reference recipe where no flag says otherwise; errors before the corpus is
                           // read
    o.model = nn::with_recipe(o.model, given_model_keys);
    nn::check_config(o.model);
  }

  // A folder of token files (tapelm's, nanoGPT's or llm.c's) is read mapped; anything else is text.
  std::optional<data::TokenData> tokens = o.data.size() == 1 ? data::find_token_data(o.data[0]) : std::nullopt;
  if (tokens) {
    for (const char* key : {"tokenizer", "vocab_size", "val_fraction", "doc_sep"})
      TAPELM_CHECK(!given(key),
                   "train: {} holds token files: their tokenizer, train/val split and documents are fixed when they "
                   "are made, so {} cannot be set",
                   o.data[0], key);
    o.tokenizer = tokens->tokenizer->kind();
  }
  const std::string text = tokens ? std::string() : data::read_corpus(o.data);
  if (o.resume) {
    check_training_fits(ck.config, o.optimizer);
    // Flags given explicitly must agree with the checkpoint's model.
    auto want = nlohmann::json::parse(o.model.to_json()), have = nlohmann::json::parse(ck.config.to_json());
    for (const std::string& key : given_model_keys)
      TAPELM_CHECK(want[key] == have[key], "train --resume: the checkpoint in {} has {} = {}, but {} was given", o.out,
                   key, have[key].dump(), want[key].dump());
    run.tok = std::move(ck.tokenizer);
    if (tokens) data::check_made_with(*tokens, *run.tok, "train --resume");
    run.model = std::move(ck.model);
    run.start_step = ck.step;
  } else if (pretrained) {
    run.tok = std::move(pretrained->tokenizer);
    if (tokens) data::check_made_with(*tokens, *run.tok, "train --init-from");
    check_training_fits(o.model, o.optimizer);
    run.model = std::move(pretrained->model);  // built with the run's dropout and seed, holding the folder's weights
    run.model->dropout_gen.set_state(dropout_stream_of_rank(run.model->dropout_gen.state(), comm.rank()));
  } else {
    run.tok = tokens ? std::move(tokens->tokenizer) : data::make_tokenizer(o.tokenizer, text, o.vocab_size);
    o.model.vocab_size = run.tok->vocab_size();
    check_training_fits(o.model, o.optimizer);  // refused before it is allocated when it cannot fit
    Generator init(o.seed);
    run.model = std::make_unique<nn::GPT>(o.model, init);
    run.model->dropout_gen.set_state(dropout_stream_of_rank(run.model->dropout_gen.state(), comm.rank()));
  }
  if (o.device == "cuda") run.model->to(Device::cuda);  // before the optimizer makes its state beside them
  run.ds = tokens ? std::make_unique<data::Dataset>(*tokens, run.model->config.block_size, run.tok->vocab_size(),
                                                    o.batch_mode)
                  : std::make_unique<data::Dataset>(text, *run.tok, run.model->config.block_size, o.val_fraction,
                                                    o.batch_mode, o.doc_sep);
  run.groups = optim::decay_groups(*run.model, o.weight_decay);
  if (o.optimizer == "adamw")
    run.opt = std::make_unique<optim::AdamW>(run.groups, o.beta1, o.beta2);
  else
    run.opt = std::make_unique<optim::SGD>(run.groups, o.beta1);
  Generator batch_gen(o.seed * 2654435761ULL + 1);
  if (o.resume) {
    RngStates rng;
    load_training_state(ck, *run.opt, rng);
    batch_gen.set_state(rng.batches);
    // The global batches do not depend on the number of ranks, so a run
    // resumes on any number of them; only the dropout masks (drawn per
    // rank) differ from those of a run on the checkpoint's ranks.
    const int saved_ranks = std::max<int>(1, (int)rng.dropout_of_rank.size());
    run.model->dropout_gen.set_state(comm.rank() < (int)rng.dropout_of_rank.size()
                                         ? rng.dropout_of_rank[comm.rank()]
                                         : dropout_stream_of_rank(rng.dropout, comm.rank()));
    if (saved_ranks != ranks)
      fmt::print("resuming on {} rank(s) a run saved on {}: the same global batches follow{}\n", ranks, saved_ranks,
                 run.model->config.dropout > 0 ? "; dropout masks are drawn per rank, so they differ" : "");
  }
  TAPELM_CHECK(run.start_step < o.steps, "train --resume: the checkpoint is already at step {} (--steps {})",
               run.start_step, o.steps);
  // A step's activations (and the state still to come), before the first step allocates them.
  const int64_t optimizer_to_come = o.resume ? 0 : training_memory_of(*run.model, o.optimizer).optimizer_bytes;
  if (o.device == "cpu") run.memory = check_step_fits(*run.model, o.batch / ranks, optimizer_to_come);
  if (comm.root()) {
    fs::create_directories(o.out);
    run.lock = RunLock(o.out);
  }
  // Last: its thread allocates batches, which check_step_fits's measurement of a step's tensors must not see.
  run.batches = std::make_unique<data::BatchPrefetcher>(*run.ds, data::Split::train, o.batch, batch_gen);
  return run;
}

// log.jsonl (rank 0 writes it) and the curves loss.svg draws, kept in memory.
// On --resume the cumulative D and C and the curves continue from the lines
// at or before the checkpoint's step (steps logged after it are redone).
class RunLog {
 public:
  RunLog(const std::string& out, bool resume, int64_t start_step, bool root)
      : path_((fs::path(out) / "log.jsonl").string()), root_(root) {
    if (!root) return;
    if (resume) {
      std::ifstream in(path_);
      for (std::string line; std::getline(in, line);) {
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded() || j.value("step", (int64_t)0) > start_step) continue;
        if (j.contains("tokens") && j.contains("flops"))
          tokens = j["tokens"].get<int64_t>(), flops = j["flops"].get<int64_t>();
        keep_curves(j);
      }
    }
    file_.open(path_, resume ? std::ios::app : std::ios::trunc);
  }
  bool good() const { return !root_ || file_.good(); }
  const std::string& path() const { return path_; }
  // One line, flushed: `tail -f log.jsonl` (and the tests) see each as it is written.
  void write(const nlohmann::json& line) {
    if (!root_) return;
    file_ << line.dump() << std::endl;
    keep_curves(line);
  }
  void draw(const std::string& svg, const std::string& title) const { write_loss_svg(svg, train_, val_, title); }

  int64_t tokens = 0, flops = 0;  // cumulative D and C, over every rank

 private:
  void keep_curves(const nlohmann::json& j) {
    if (!j.contains("step")) return;
    if (j.contains("loss") && j["loss"].is_number())
      train_.push_back({j["step"].get<int64_t>(), j["loss"].get<double>()});
    if (j.contains("val_loss") && j["val_loss"].is_number())
      val_.push_back({j["step"].get<int64_t>(), j["val_loss"].get<double>()});
  }
  std::string path_;
  bool root_;
  std::ofstream file_;
  std::vector<std::pair<int64_t, double>> train_, val_;
};

struct StepResult {
  double loss = NAN, grad_norm = 0;
  int64_t tokens = 0, flops = 0;  // the global batch's target tokens; every rank's FLOPs
  std::string failure;            // non-empty: the loss or the weights are no longer finite
};

// One optimizer step of the global batch: each rank's rows, their gradients
// summed over the ranks, clipping and the update.
StepResult train_step(Run& run, const TrainOptions& o, const Communicator& comm, GradientAllReduce& all_reduce,
                      int64_t step) {
  const int ranks = comm.size();
  const int64_t rows = o.batch / ranks;  // this rank's rows of each global batch
  StepResult r;
  run.opt->set_lr(run.schedule.at(step));
  double loss_sum = 0;
  FlopCounter::reset();
  for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
    const data::Batch global = run.batches->next();
    const data::Batch b = ranks == 1 ? global : global.rows(comm.rank() * rows, (comm.rank() + 1) * rows);
    const int64_t batch_tokens = global.tokens();
    // This rank's share of the batch's mean loss (its target tokens over the
    // batch's): the ranks' weighted losses and gradients add up to the
    // batch's, in windows mode 1/R each.
    const double share = ranks == 1 ? 1.0 : double(b.tokens()) / batch_tokens;
    Tensor loss = run.model->loss(b.x, b.y, b.pad_mask);
    loss_sum += loss.item() * share;
    const double weight = share / o.grad_accum;
    backward(weight != 1.0 ? mul_scalar(loss, weight) : loss);
    r.tokens += batch_tokens;
  }
  // The batch's loss and the ranks' forward and backward FLOPs, summed.
  double sums[2] = {loss_sum, (double)FlopCounter::total().total()};
  const double local_forward_backward_flops = sums[1];
  comm.sum(sums, 2);
  all_reduce.run();
  r.loss = sums[0] / o.grad_accum;
  if (!std::isfinite(r.loss)) {
    r.failure = fmt::format("the training loss became {} at step {}", std::isnan(r.loss) ? "NaN" : "infinite", step);
    return r;
  }
  r.grad_norm = o.grad_clip > 0 ? optim::clip_grad_norm(run.groups, o.grad_clip) : 0.0;
  run.opt->step();
  if (!parameters_finite(*run.model))
    r.failure =
        fmt::format("the parameters became NaN or infinite in the update of step {} (loss {:.4f})", step, r.loss);
  // Every rank runs the same optimizer step, so its FLOPs count once per rank.
  r.flops = (int64_t)sums[1] + ranks * (FlopCounter::total().total() - (int64_t)local_forward_backward_flops);
  return r;
}

// What the run is: data, model, optimizer, and the data-parallel layout.
void print_run(const Run& run, const TrainOptions& o, int ranks, int threads) {
  const nn::GPT& model = *run.model;
  const nn::ModelConfig& cfg = model.config;
  fmt::print("tapelm train: {} | {} tokenizer, vocab {} | train {} tokens, val {} tokens ({} batches)\n",
             fmt::join(o.data, ", "), run.tok->kind(), run.tok->vocab_size(), run.ds->tokens(data::Split::train),
             run.ds->tokens(data::Split::val), o.batch_mode);
  fmt::print("model: {} mixer, n_layer {}, n_head {}, n_embd {}, context {}, {} ffn, {}, {} positions\n{}", cfg.mixer,
             cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.ffn, cfg.norm, cfg.position, model.describe());
  fmt::print("optimizer: {} ({}), lr {} {} (warm-up {}, floor {}), batch {} × {} accumulation, {} threads, seed {}\n",
             o.optimizer, optim::describe_groups(run.groups), o.lr, o.schedule, o.warmup, run.schedule.min_lr, o.batch,
             o.grad_accum, threads, o.seed);
  const StepMemory& m = run.memory;
  if (o.device == "cuda")
    fmt::print("device: cuda, {} ({}; ops without a CUDA kernel run on the CPU, counted in the summary)\n",
               cuda::describe(),
               o.precision == "bf16" ? "bf16 products with float32 accumulation, float32 elsewhere" : "float32");
  else
    fmt::print(
        "memory: about {} of tensors at a step's peak ({} weights, gradients and optimizer state, {} activations){}\n",
        format_bytes(m.total()), format_bytes(m.held), format_bytes((double)m.activations.bytes),
        m.limit > 0 ? fmt::format(" of the {} tapelm may use", format_bytes((double)m.limit)) : "");
  if (ranks > 1) {
    fmt::print(
        "data parallel: {} ranks × {} threads, each {} sequences of the global batch of {}; gradients "
        "summed by MPI_Allreduce in 25 MB buckets\n",
        ranks, threads, o.batch / ranks, o.batch);
    if (std::string warning = binding_warning(); !warning.empty()) fmt::print("warning: {}\n", warning);
  }
}

// What the steps this process ran add up to, for the summary.
struct Progress {
  std::chrono::steady_clock::time_point t0;  // the start of the loop
  int64_t tokens = 0, flops = 0;             // in this process's run (not the resumed part)
  double step_seconds = 0;                   // inside training steps only: MFU's denominator
  int64_t steps = 0;                         // steps run
  double gemm_peak = 0;                      // FLOP/s, summed over ranks
  double allreduce_seconds = 0;
};

// The end of a run: the weight check, the summary line of log.jsonl (after a
// clean run), the loss chart and the last words. Returns exit_code.
int finish(const Run& run, const TrainOptions& o, const Communicator& comm, RunLog& log, const Progress& p,
           int exit_code) {
  const bool root = comm.root();
  const int ranks = comm.size(), threads = omp_get_max_threads();
  const int64_t N = run.model->num_non_embedding_parameters();
  const double peak = p.gemm_peak;
  const std::vector<uint64_t> hashes = check_identical_weights(comm, *run.model, "at the end");
  const double achieved = p.flops / std::max(p.step_seconds, 1e-9);
  const double c_over_6nd = log.tokens ? log.flops / (6.0 * N * log.tokens) : 0.0;
  const int64_t steps_run = std::max<int64_t>(p.steps, 1);
  if (exit_code == 0) {
    nlohmann::json summary{{"step", o.steps},
                           {"summary", true},
                           {"tokens", log.tokens},
                           {"flops", log.flops},
                           {"N", N},
                           {"C_over_6ND", c_over_6nd},
                           {"gflops_per_s", achieved / 1e9},
                           {"tokens_per_s", p.tokens / std::max(p.step_seconds, 1e-9)},
                           {"gemm_peak_gflops", peak / 1e9},
                           {"mfu", achieved / peak},
                           {"ranks", ranks},
                           {"threads", threads}};
    if (ranks > 1) {
      summary["allreduce_s_per_step"] = p.allreduce_seconds / steps_run;
      summary["allreduce_share"] = p.allreduce_seconds / std::max(p.step_seconds, 1e-9);
      std::vector<std::string> hex;
      for (uint64_t h : hashes) hex.push_back(fmt::format("{:016x}", h));
      summary["weight_hashes"] = hex;
    }
    log.write(summary);
  }
  if (!root) return exit_code;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - p.t0).count();
  log.draw((fs::path(o.out) / "loss.svg").string(),
           fmt::format("tapelm: {} (N = {})", fs::path(o.out).filename().string(), N));
  if (exit_code == 0) {
    fmt::print(
        "done: {} steps in {}; D = {} tokens, C = {:.4g} FLOPs counted (cumulative), C/(6·N·D) = {:.3f} (N = {})\n"
        "speed: {:.0f} tokens/s, {:.1f} GFLOP/s in training steps = MFU {:.1f}% of the {:.1f} GFLOP/s GEMM peak\n",
        o.steps - run.start_step, hms(elapsed), log.tokens, (double)log.flops, c_over_6nd, N,
        p.tokens / std::max(p.step_seconds, 1e-9), achieved / 1e9, 100 * achieved / peak, peak / 1e9);
    if (ranks > 1)
      fmt::print("all-reduce: {:.1f} ms a step, {:.1f}% of the step time; weights identical on all {} ranks\n",
                 1e3 * p.allreduce_seconds / steps_run, 100 * p.allreduce_seconds / std::max(p.step_seconds, 1e-9),
                 ranks);
    if (const auto fallbacks = fallback_counts(); !fallbacks.empty()) {
      std::vector<std::string> parts;
      for (auto& [op, n] : fallbacks) parts.push_back(fmt::format("{} ×{}", op, n));
      fmt::print("ran on the CPU for want of a CUDA kernel (the named fallback): {}\n", fmt::join(parts, ", "));
    }
    fmt::print("checkpoint, log.jsonl, loss.svg in {}\n", o.out);
  }
  return exit_code;
}

}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_sigint);
  std::signal(SIGUSR1, on_sigint);
}

namespace {

// One training run, as steps: start (set-up, agreed by every rank), the
// loop of steps with its logging, evaluations and checkpoints, and the end.
class Trainer {
 public:
  Trainer(TrainOptions o, const std::vector<std::string>& given_model_keys,
          const std::vector<std::string>& given_run_keys)
      : o_(std::move(o)), comm_(Communicator::world()), root_(comm_.root()), ranks_(comm_.size()) {
    // Rank 0 alone prints: the others' standard output goes nowhere (errors
    // still reach standard error).
    if (!root_)
      TAPELM_CHECK(std::freopen("/dev/null", "w", stdout), "train: cannot silence rank {}'s output", comm_.rank());
    set_threads(o_.threads > 0 ? (int)o_.threads : default_threads());
    threads_ = omp_get_max_threads();
    std::string setup_error;
    try {
      run_ = set_up(o_, given_model_keys, given_run_keys, comm_);
    } catch (const Error& e) {
      setup_error = e.what();
    }
    comm_.agree(setup_error);  // one rank says it, all stop
    // Every rank must start from the same weights (a checkpoint copy that
    // differs on another machine is caught here).
    check_identical_weights(comm_, *run_.model, "at the start");
    log_ = std::make_unique<RunLog>(o_.out, o_.resume, run_.start_step, root_);
    comm_.agree(log_->good() ? "" : fmt::format("train: cannot write {}", log_->path()));
    print_run(run_, o_, ranks_, threads_);
    if (o_.resume) fmt::print("resuming from step {} in {}\n", run_.start_step, o_.out);
  }

  // A training step; one whose activations would pass the tensor memory
  // limit is refused with the figures and what to lower.
  StepResult step_within_memory(GradientAllReduce& all_reduce, int64_t step) {
    try {
      return train_step(run_, o_, comm_, all_reduce, step);
    } catch (const MemoryLimitError& e) {
      throw Error(fmt::format(
          "train: a step at --batch {} × --context {} does not fit ({}); lower --batch (a larger --grad-accum keeps "
          "the tokens per step), --context or the model",
          o_.batch, run_.model->config.block_size, e.what()));
    }
  }

  // Returns the process exit code: 0 done, 3 stopped on a non-finite loss, 130 interrupted.
  int train() {
    measure_peak();
    // A stop asked before the loop (even while `tapelm` started: main holds
    // the signals until these handlers are in place) stops it at its first step.
    auto previous_sigint = std::signal(SIGINT, on_sigint);
    auto previous_sigusr1 = std::signal(SIGUSR1, on_sigint);
    std::vector<Tensor> params;
    for (auto& p : run_.model->named_parameters()) params.push_back(p.tensor);
    GradientAllReduce all_reduce(comm_, params);
    progress_.t0 = last_log_ = std::chrono::steady_clock::now();
    int exit_code = 0;
    int64_t step = run_.start_step;
    bool interrupted = false;
    for (; step < o_.steps; ++step) {
      if ((interrupted = stop_asked())) break;
      const auto step_t0 = std::chrono::steady_clock::now();
      const StepResult r = step_within_memory(all_reduce, step);
      if (!r.failure.empty()) {
        stop_on(r.failure);
        exit_code = 3;
        break;
      }
      run_.model->zero_grad();
      progress_.step_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - step_t0).count();
      progress_.tokens += r.tokens, log_->tokens += r.tokens, tokens_since_log_ += r.tokens;
      progress_.flops += r.flops, log_->flops += r.flops;
      const int64_t done = step + 1;
      if (done % o_.log_interval == 0 || done == o_.steps) log_progress(done, r);
      if ((done % o_.eval_interval == 0 || done == o_.steps) && !evaluate(done)) {
        stop_on(fmt::format("the evaluation after step {} gave a non-finite loss", done));
        exit_code = 3;
        break;
      }
      const int64_t ck_every = o_.checkpoint_interval > 0 ? o_.checkpoint_interval : o_.eval_interval;
      if (done % ck_every == 0 || done == o_.steps) save(done);
    }
    std::signal(SIGINT, previous_sigint);
    std::signal(SIGUSR1, previous_sigusr1);
    if (interrupted && exit_code == 0) {
      save(step);
      fmt::print("\ninterrupted: checkpoint at step {} saved in {}; continue with --resume\n", step, o_.out);
      exit_code = 130;
    }
    progress_.steps = step - run_.start_step;
    progress_.allreduce_seconds = all_reduce.seconds();
    return finish(run_, o_, comm_, *log_, progress_, exit_code);
  }

 private:
  // Measured on every rank at once (they share the machine's cores and
  // memory), then added up: the peak of the whole job.
  void measure_peak() {
    if (o_.device == "cuda") {  // the card's product peak at the run's precision
      constexpr int64_t n = 8192;
      double peak = cuda::measure_product_peak(n, 5);
      comm_.sum(&peak, 1);
      progress_.gemm_peak = peak;
      fmt::print(
          "GEMM peak of the GPU{}: {:.1f} GFLOP/s (best of 5 {} {}³ cuBLAS products; MFU is measured against it)\n",
          ranks_ > 1 ? fmt::format(" × {} ranks, summed", ranks_) : "", peak / 1e9, o_.precision, n);
      return;
    }
    double peak = measure_gemm_peak();
    comm_.sum(&peak, 1);
    progress_.gemm_peak = peak;
    fmt::print(
        "GEMM peak on {} threads{}: {:.1f} GFLOP/s (best of 5 float32 1024³ GEMMs of the ops' kernel; MFU is "
        "measured against it)\n",
        threads_, ranks_ > 1 ? fmt::format(" × {} ranks, summed", ranks_) : "", peak / 1e9);
  }

  // A stop asked of any rank (Ctrl-C, SIGUSR1) stops all of them at the same step.
  bool stop_asked() const {
    double asked = g_interrupted ? 1 : 0;
    comm_.sum(&asked, 1);
    return asked > 0;
  }

  // The progress line and its log.jsonl record.
  void log_progress(int64_t done, const StepResult& r) {
    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - last_log_).count();
    const double elapsed = std::chrono::duration<double>(now - progress_.t0).count();
    const double tps = tokens_since_log_ / std::max(dt, 1e-9);
    const double eta = elapsed / (done - run_.start_step) * (o_.steps - done);
    const double lr = run_.schedule.at(done - 1);
    if (!o_.quiet)
      fmt::print("{}step {:>6}/{} | loss {:.4f} | lr {:.2e} | {:>8.0f} tok/s | {} elapsed, ETA {}{}", tty_ ? "\r" : "",
                 done, o_.steps, r.loss, lr, tps, hms(elapsed), hms(eta), tty_ ? "   " : "\n");
    std::fflush(stdout);
    log_->write({{"step", done},
                 {"loss", r.loss},
                 {"lr", lr},
                 {"grad_norm", r.grad_norm},
                 {"tokens_per_s", tps},
                 {"tokens", log_->tokens},
                 {"flops", log_->flops},
                 {"elapsed_s", elapsed}});
    last_log_ = now;
    tokens_since_log_ = 0;
  }

  // Train and validation loss; false if either is not finite (the weights then are not worth saving).
  bool evaluate(int64_t step) {
    const uint64_t seed = (uint64_t)o_.seed + 1000003 * (uint64_t)step;
    const double tr = estimate_loss(*run_.model, *run_.ds, data::Split::train, o_.batch, o_.eval_batches, seed, comm_);
    const double va =
        estimate_loss(*run_.model, *run_.ds, data::Split::val, o_.batch, o_.eval_batches, seed + 1, comm_);
    if (tty_ && !o_.quiet) fmt::print("\n");
    fmt::print("step {}: train loss {:.4f}, val loss {:.4f}\n", step, tr, va);
    log_->write(
        {{"step", step}, {"train_loss", tr}, {"val_loss", va}, {"tokens", log_->tokens}, {"flops", log_->flops}});
    return std::isfinite(tr) && std::isfinite(va);
  }

  // What a failed run leaves on disk, for its error message.
  std::string checkpoint_left() const {
    return fs::exists(fs::path(o_.out) / "model.safetensors") ? "the last good checkpoint in " + o_.out + " is kept"
                                                              : "no checkpoint had been written yet";
  }

  // A failed write (full disk, a file-size limit) leaves the previous
  // checkpoint as it was (save_safetensors writes a temp file and renames).
  // Rank 0 writes; every rank learns whether it worked.
  void save(int64_t step) {
    nn::GPT& model = *run_.model;
    check_identical_weights(comm_, model, fmt::format("after step {}", step));
    RngStates rng{run_.batches->state(), model.dropout_gen.state(), {}};
    if (ranks_ > 1) rng.dropout_of_rank = gather_states(comm_, model.dropout_gen.state());
    std::string error;
    if (root_) try {
        save_checkpoint(o_.out, model, *run_.tok, *run_.opt, rng, step, o_.to_json());
      } catch (const Error& e) {
        error = fmt::format("cannot save the checkpoint of step {}: {}; {}", step, e.what(), checkpoint_left());
      }
    comm_.agree(error);
  }

  // Stops the run without saving: the checkpoint on disk stays the last one
  // written from finite weights with finite losses. Every rank sees the same
  // (summed) loss and weights, so all stop here together; rank 0 says why.
  void stop_on(const std::string& failure) {
    run_.model->zero_grad();
    std::fflush(stdout);
    std::string left = checkpoint_left();
    left[0] = char(std::toupper((unsigned char)left[0]));  // a sentence of its own here
    if (root_) fmt::print(stderr, "\ntapelm: error: {}; stopping. {}.\n", failure, left);
  }

  TrainOptions o_;
  const Communicator& comm_;
  const bool root_;
  const int ranks_;
  int threads_ = 1;
  const bool tty_ = isatty(1);
  Run run_;
  std::unique_ptr<RunLog> log_;
  Progress progress_;
  std::chrono::steady_clock::time_point last_log_;
  int64_t tokens_since_log_ = 0;
};

}  // namespace

int run_training(TrainOptions o, const std::vector<std::string>& given_model_keys,
                 const std::vector<std::string>& given_run_keys) {
  return Trainer(std::move(o), given_model_keys, given_run_keys).train();
}

}  // namespace tapelm::train
