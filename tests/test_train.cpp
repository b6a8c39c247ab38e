// The tapelm tool end to end: exact resume, checkpoints, bad input (each a
// clear message and a non-zero exit, never a crash, never a damaged
// checkpoint), Ctrl-C, flags and config files, sample and eval.
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "autograd/safetensors.h"
#include "nn/mixers.h"
#include "tests/changed_config.h"
#include "tests/tool_helpers.h"
#include "train/checkpoint.h"
#include "train/compare.h"
#include "train/sampler.h"

using namespace tapelm;
using namespace tapelm::testing;
namespace fs = std::filesystem;

TEST_F(Tool, ResumeContinuesExactly) {
  Result full = run(tiny(dir + "/full") + " --steps 20 --eval-interval 10");
  ASSERT_EQ(full.code, 0) << full.out;
  // The first leg stops at 10 but follows the 20-step schedule.
  Result first = run(tiny(dir + "/split") + " --steps 10 --lr-decay-steps 20 --eval-interval 10");
  ASSERT_EQ(first.code, 0) << first.out;
  Result second = run(tiny(dir + "/split") + " --steps 20 --eval-interval 10 --resume");
  ASSERT_EQ(second.code, 0) << second.out;
  EXPECT_NE(second.out.find("resuming from step 10"), std::string::npos) << second.out;
  expect_same_run(dir + "/full", dir + "/split", 20, 0.0);  // bit for bit
  TensorFile wb = load_safetensors(dir + "/split/model.safetensors");
  // Exactly one optimizer file, the one model.safetensors names.
  int optimizer_files = 0;
  for (auto& e : fs::directory_iterator(dir + "/split"))
    optimizer_files += e.path().filename().string().rfind("optimizer-", 0) == 0;
  EXPECT_EQ(optimizer_files, 1);
  EXPECT_EQ(wb.metadata.at("optimizer"), "optimizer-20.safetensors");
  EXPECT_TRUE(fs::exists(dir + "/split/loss.svg"));
  // Cumulative D and C continue across the resume: the summaries agree.
  nlohmann::json sa = last_summary(dir + "/full"), sb = last_summary(dir + "/split");
  EXPECT_EQ(sa["tokens"].get<int64_t>(), 20 * 4 * 16);
  EXPECT_EQ(sa["tokens"], sb["tokens"]);
  EXPECT_EQ(sa["flops"], sb["flops"]);
  EXPECT_GT(sa["mfu"].get<double>(), 0.0);
}

// Resume is exact for every entry of the mixer table: 6 steps, then 6 more
// resumed, weight for weight the 12 run at once. The two argument lists
// differ, so the heap is laid out differently in the runs: a kernel whose
// bits follow a buffer's address fails here (Mamba's backward did, by 2.4e-7,
// while its scratch was a plain std::vector that Eigen summed from its first
// aligned element).
class ResumeEveryMixer : public Tool, public ::testing::WithParamInterface<std::string> {};

TEST_P(ResumeEveryMixer, ContinuesBitForBit) {
  const std::string model = "train --data " + corpus + " --mixer " + GetParam() +
                            " --n-layer 2 --n-head 2 --n-embd 64 --context 64 --batch 8 --threads 1 --dropout 0.1"
                            " --warmup 3 --eval-batches 2 --log-interval 1 --eval-interval 6 --quiet --out ";
  Result full = run(model + dir + "/full --steps 12");
  ASSERT_EQ(full.code, 0) << full.out;
  Result first = run(model + dir + "/split --steps 6 --lr-decay-steps 12");
  ASSERT_EQ(first.code, 0) << first.out;
  Result second = run(model + dir + "/split --steps 12 --resume");
  ASSERT_EQ(second.code, 0) << second.out;
  expect_same_run(dir + "/full", dir + "/split", 12, 0.0);
  for (const char* key : {"grad_norm"}) EXPECT_EQ(logged(dir + "/full", key), logged(dir + "/split", key)) << key;
}

INSTANTIATE_TEST_SUITE_P(Tool, ResumeEveryMixer, ::testing::ValuesIn([] {
                           std::vector<std::string> names;
                           for (const nn::MixerSpec& m : nn::mixer_table()) names.push_back(m.name);
                           return names;
                         }()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string id = info.param;  // "transformer++" is not a test name
                           for (char& c : id)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return id;
                         });

TEST_F(Tool, ResumeWithAnotherConfigIsRefused) {
  ASSERT_EQ(run(tiny(dir + "/r") + " --steps 2 --eval-interval 2").code, 0);
  Result r = run(tiny(dir + "/r") + " --steps 4 --eval-interval 2 --resume --n-layer 2");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("has n_layer = 1, but 2 was given"), std::string::npos) << r.out;
}

TEST_F(Tool, BadCorpusInputs) {
  Result missing = run("train --data " + dir + "/nope.txt --out " + dir + "/o");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.out.find("tapelm: error: corpus: " + dir + "/nope.txt does not exist"), std::string::npos)
      << missing.out;
  std::ofstream(dir + "/empty.txt").close();
  Result empty = run("train --data " + dir + "/empty.txt --out " + dir + "/o");
  EXPECT_EQ(empty.code, 1);
  EXPECT_NE(empty.out.find("is empty"), std::string::npos) << empty.out;
  std::ofstream(dir + "/short.txt") << "just a few characters of text";
  Result shortc = run("train --data " + dir + "/short.txt --out " + dir + "/o --context 64");
  EXPECT_EQ(shortc.code, 1);
  EXPECT_NE(shortc.out.find("shorter than one context window"), std::string::npos) << shortc.out;
}

TEST_F(Tool, BadModelConfig) {
  Result heads = run(tiny(dir + "/o") + " --n-embd 10 --n-head 4 --steps 1");
  EXPECT_EQ(heads.code, 1);
  EXPECT_NE(heads.out.find("n_embd 10 is not divisible by n_head 4"), std::string::npos) << heads.out;
  Result mixer = run(tiny(dir + "/o") + " --mixer lstm --steps 1");
  EXPECT_EQ(mixer.code, 1);
  EXPECT_NE(mixer.out.find("unknown mixer 'lstm'"), std::string::npos) << mixer.out;
}

TEST_F(Tool, FlagErrorsNameTheFlag) {
  Result unknown = run("train --data x --bogus 3");
  EXPECT_NE(unknown.code, 0);
  EXPECT_NE(unknown.out.find("--bogus"), std::string::npos) << unknown.out;
  Result bad = run("train --data x --n-layer four");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("--n-layer"), std::string::npos) << bad.out;
  Result tok = run("train --data x --tokenizer words");
  EXPECT_NE(tok.code, 0);
  EXPECT_NE(tok.out.find("--tokenizer"), std::string::npos) << tok.out;
  Result fit = run("fit");  // not a subcommand: the subcommands are named
  EXPECT_NE(fit.code, 0);
  EXPECT_NE(fit.out.find("'fit' is not a subcommand; the subcommands are train, sample, eval, compare, flops"),
            std::string::npos)
      << fit.out;
  Result out = run("train --data " + corpus + " --out ''");  // an empty --out: one line naming it
  EXPECT_NE(out.code, 0);
  EXPECT_NE(out.out.find("train: --out must name a directory"), std::string::npos) << out.out;
  Result precision = run("train --data " + corpus + " --out " + dir + "/p --precision bf16");
  EXPECT_NE(precision.code, 0);
  EXPECT_NE(precision.out.find("--precision bf16 runs on --device cuda"), std::string::npos) << precision.out;
  EXPECT_FALSE(fs::exists(dir + "/p"));
  for (std::string sub : {"train", "sample", "eval"}) {
    Result h = run(sub + " --help");
    EXPECT_EQ(h.code, 0) << sub;
    EXPECT_NE(h.out.find("Usage:"), std::string::npos) << sub;
  }
}

// A value outside its field's domain is one line naming the flag (or the
// --config key) and the domain, before anything runs: the schemas' domains
// are checked as flags parse, for every subcommand. (Issue #34's examples.)
TEST_F(Tool, ValuesOutsideTheirDomainAreOneClearLine) {
  const std::string train = "train --data " + corpus + " --out " + dir + "/d --steps 1 ";
  for (auto [flags, says] : std::vector<std::pair<std::string, std::string>>{
           {"--log-interval 0", "--log-interval: must be in [1, "},
           {"--beta1 1.5", "--beta1: must be in [0, 1), got 1.5"},
           {"--beta2 1", "--beta2: must be in [0, 1), got 1"},
           {"--beta2 -1", "--beta2: must be in [0, 1), got -1"},
           {"--warmup -1", "--warmup: must be in [0, "},
           {"--grad-clip nan", "--grad-clip: must be in [0, inf), got nan"},
           {"--min-lr nan", "--min-lr: must be in [0, inf), got nan"},
           {"--weight-decay nan", "--weight-decay: must be in [0, inf), got nan"},
           {"--steps 18446744073709551615", "--steps"},
           {"--threads 10000", "--threads: must be in [0, 1024], got 10000"},
           {"--norm-eps -1", "--norm-eps: must be in [0, 1), got -1"}}) {
    Result r = run(train + flags);
    EXPECT_NE(r.code, 0) << flags << "\n" << r.out;
    EXPECT_NE(r.out.find(says), std::string::npos) << flags << "\n" << r.out;
    EXPECT_FALSE(fs::exists(dir + "/d")) << flags;
  }
  for (auto [flags, says] : std::vector<std::pair<std::string, std::string>>{
           {"sample --checkpoint x --temperature nan", "--temperature: must be in [0, 1000000), got nan"},
           {"sample --checkpoint x --tokens -5", "--tokens: must be in [0, "},
           {"eval --checkpoint x --data x --batch 0", "--batch: Value 0 not in range"}}) {
    Result r = run(flags);
    EXPECT_NE(r.code, 0) << flags;
    EXPECT_NE(r.out.find(says), std::string::npos) << flags << "\n" << r.out;
  }
  // A config file: its values pass the same checks; a list where a key takes
  // one value, and two keys for one field with different values, are refused.
  auto config = [&](const std::string& json) {
    std::ofstream(dir + "/c.json") << json;
    return run(train + "--config " + dir + "/c.json");
  };
  Result steps = config(R"({"steps": 18446744073709551615})");
  EXPECT_NE(steps.code, 0);
  EXPECT_NE(steps.out.find("--steps"), std::string::npos) << steps.out;
  Result zero = config(R"({"log_interval": 0})");
  EXPECT_NE(zero.out.find("--log-interval: must be in [1, "), std::string::npos) << zero.out;
  Result list = config(R"({"n_layer": [2, 3]})");
  EXPECT_NE(list.out.find("'n_layer' takes one value, got the list [2,3]"), std::string::npos) << list.out;
  Result both = config(R"({"block_size": 32, "context": 64})");
  EXPECT_NE(both.out.find("'block_size' and 'context' both set --context, to 32 and 64"), std::string::npos)
      << both.out;
  EXPECT_EQ(config(R"({"block_size": 16, "context": 16, "n_layer": 1, "quiet": true, "batch": 2})").code, 0);
}

// A corpus or checkpoint that is a FIFO, a device or a directory is refused
// with one line before it is opened: a FIFO with no writer would block the
// open forever and /dev/zero would be read until memory runs out. (#34)
TEST_F(Tool, SpecialFilesAreRefusedBeforeTheyAreRead) {
  ASSERT_EQ(::mkfifo((dir + "/fifo").c_str(), 0600), 0);
  Result fifo = run("train --data " + dir + "/fifo --out " + dir + "/o --steps 1");
  EXPECT_NE(fifo.code, 0);
  EXPECT_NE(fifo.out.find("corpus: " + dir + "/fifo is a FIFO, not a regular file"), std::string::npos) << fifo.out;
  Result zero = run("train --data /dev/zero --out " + dir + "/o --steps 1");
  EXPECT_NE(zero.out.find("corpus: /dev/zero is a character device, not a regular file"), std::string::npos)
      << zero.out;
  fs::create_directories(dir + "/as_dir/model.safetensors");
  fs::create_directories(dir + "/as_fifo");
  ASSERT_EQ(::mkfifo((dir + "/as_fifo/model.safetensors").c_str(), 0600), 0);
  fs::create_directories(dir + "/as_zero");
  fs::create_symlink("/dev/zero", dir + "/as_zero/model.safetensors");
  for (auto [ck, kind] : std::vector<std::pair<std::string, std::string>>{
           {"as_dir", "a directory"}, {"as_fifo", "a FIFO"}, {"as_zero", "a character device"}}) {
    for (const std::string& command : {"eval --checkpoint " + dir + "/" + ck + " --data " + corpus,
                                       "sample --checkpoint " + dir + "/" + ck + " --tokens 1"}) {
      Result r = run(command);
      EXPECT_NE(r.code, 0) << command;
      EXPECT_NE(r.out.find("model.safetensors is " + kind + ", not a regular file"), std::string::npos)
          << command << "\n"
          << r.out;
    }
  }
}

// A run that cannot fit is refused before it allocates, with the figure and
// what to lower: a model whose parameters alone are terabytes, and a context
// whose attention scores are (the estimate of the step's activations sees
// their T² from sequences of 64 to 256 tokens). TAPELM_MEMORY_LIMIT stands in
// for the machine's memory; a bad value of it is one line too.
TEST_F(Tool, RunsThatCannotFitAreRefusedBeforeTheyAllocate) {
  const std::string env = "TAPELM_MEMORY_LIMIT=1000000000";
  Result huge = run_env(env, tiny(dir + "/h") + " --n-layer 1024 --n-embd 4096 --n-head 32 --steps 1");
  EXPECT_EQ(huge.code, 1) << huge.out;
  EXPECT_NE(huge.out.find("tapelm: error: train: the model has 206"), std::string::npos) << huge.out;
  EXPECT_NE(huge.out.find("TiB before any activation, but tapelm may use 954 MiB (the limit TAPELM_MEMORY_LIMIT "
                          "sets); lower --n-layer or --n-embd"),
            std::string::npos)
      << huge.out;
  EXPECT_FALSE(fs::exists(dir + "/h/model.safetensors"));

  const std::string long_corpus = dir + "/long.txt";
  {
    std::ofstream f(long_corpus);
    for (int i = 0; i < 25000; ++i) f << "To be, or not to be, that is the question.\n";
  }
  std::string args = tiny(dir + "/c") + " --context 100000 --steps 1";
  args.replace(args.find(corpus), corpus.size(), long_corpus);
  Result context = run_env(env, args);
  EXPECT_EQ(context.code, 1) << context.out;
  EXPECT_TRUE(std::regex_search(context.out, std::regex("tapelm: error: train: a step of 4 × 100000 tokens needs about "
                                                        "[0-9.]+ TiB: .* of activations \\(measured on one sequence of "
                                                        "64, 128, 256 tokens\\), but tapelm may use 954 MiB")))
      << context.out;
  EXPECT_NE(context.out.find("lower --batch (a larger --grad-accum keeps the tokens per step), --context or the model"),
            std::string::npos)
      << context.out;

  Result fits = run(tiny(dir + "/f") + " --steps 1 --eval-interval 1");
  EXPECT_EQ(fits.code, 0) << fits.out;
  EXPECT_TRUE(std::regex_search(fits.out, std::regex("memory: about .* of tensors at a step's peak .* of the .* tapelm "
                                                     "may use")))
      << fits.out;
  for (const char* bad : {"lots", "-5", "0", "1e30"}) {
    Result r = run_env(std::string("TAPELM_MEMORY_LIMIT=") + bad, tiny(dir + "/b") + " --steps 1");
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_NE(
        r.out.find(fmt::format("tapelm: error: TAPELM_MEMORY_LIMIT: expects a number of bytes > 0, got '{}'", bad)),
        std::string::npos)
        << r.out;
  }
}

// --device cuda where no GPU can run it: one line saying why, before the
// corpus is read or anything is written.
TEST_F(Tool, DeviceCudaWithoutAGpuIsOneClearLine) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is here";
  Result r = run(tiny(dir + "/g") + " --steps 1 --device cuda");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("tapelm: error: train --device cuda: " + why_no_cuda()), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_FALSE(fs::exists(dir + "/g"));
  ASSERT_EQ(run(tiny(dir + "/c") + " --steps 1 --eval-interval 1").code, 0);
  Result eval = run("eval --checkpoint " + dir + "/c --data " + corpus + " --device cuda");
  EXPECT_EQ(eval.code, 1) << eval.out;
  EXPECT_NE(eval.out.find("tapelm: error: eval --device cuda: " + why_no_cuda()), std::string::npos) << eval.out;
  Result bad = run(tiny(dir + "/g") + " --steps 1 --device tpu");
  EXPECT_NE(bad.code, 0) << bad.out;
  EXPECT_NE(bad.out.find("--device: 'tpu' is not one of cpu, cuda"), std::string::npos) << bad.out;
}

// A prompt that is not valid UTF-8 is named as the byte it is.
TEST_F(Tool, AnInvalidUtf8PromptNamesTheByte) {
  ASSERT_EQ(run(tiny(dir + "/p") + " --steps 1 --eval-interval 1").code, 0);
  Result r = run("sample --checkpoint " + dir + "/p --tokens 3 --prompt \"$(printf 'To\\377\\376')\"");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("tapelm: error: sample --prompt: char tokenizer: byte 0xFF at byte 2 of the text is not valid "
                       "UTF-8, and the training corpus had no such stray byte to learn"),
            std::string::npos)
      << r.out;
}

// --threads beyond the CPUs this process may use runs (passively waiting
// threads) but says once that it is slower than the CPU count; up to the CPU
// count it says nothing.
TEST_F(Tool, ThreadsBeyondTheMachineAreWarnedOf) {
  cpu_set_t set;
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  const int cpus = CPU_COUNT(&set);
  std::string args = tiny(dir + "/t") + " --steps 1 --eval-interval 1";
  args.replace(args.find("--threads 1"), 11, "--threads " + std::to_string(cpus + 1));
  Result over = run(args);
  EXPECT_EQ(over.code, 0) << over.out;
  EXPECT_NE(over.out.find(
                fmt::format("warning: --threads {} is more than the {} CPU(s) this process may use", cpus + 1, cpus)),
            std::string::npos)
      << over.out;
  Result within = run(tiny(dir + "/u") + " --steps 1 --eval-interval 1");
  EXPECT_EQ(within.code, 0) << within.out;
  EXPECT_EQ(within.out.find("warning"), std::string::npos) << within.out;
  Result sample = run("sample --checkpoint " + dir + "/t --tokens 4 --threads " + std::to_string(cpus + 1));
  EXPECT_EQ(sample.code, 0) << sample.out;
  EXPECT_NE(sample.out.find("is more than the"), std::string::npos) << sample.out;
}

// Training again into an --out that holds a run is refused unless --resume
// or --overwrite says what to do, and the first run's checkpoint and log are
// untouched; a second process training into the same --out at the same time
// gets one line from the lock instead of a failure mid-run. (#34)
TEST_F(Tool, AnOutThatHoldsARunIsNeverOverwrittenUnasked) {
  auto read_file = slurp;
  ASSERT_EQ(run(tiny(dir + "/r") + " --steps 2 --eval-interval 2").code, 0);
  const std::string model = read_file(dir + "/r/model.safetensors"), log = read_file(dir + "/r/log.jsonl");
  Result again = run(tiny(dir + "/r") + " --steps 2 --eval-interval 2");
  EXPECT_NE(again.code, 0);
  EXPECT_NE(again.out.find("train: " + dir +
                           "/r holds a run (model.safetensors is there); continue it with --resume, "
                           "start it over with --overwrite"),
            std::string::npos)
      << again.out;
  EXPECT_EQ(read_file(dir + "/r/model.safetensors"), model);
  EXPECT_EQ(read_file(dir + "/r/log.jsonl"), log);
  EXPECT_EQ(run(tiny(dir + "/r") + " --steps 2 --eval-interval 2 --overwrite").code, 0);
  EXPECT_EQ(logged(dir + "/r", "loss").size(), 2u);  // a new log, not the old one appended to

  // A long run holds the lock; a second one into the same --out (with --overwrite) is told so.
  const pid_t first = spawn_tool(tiny(dir + "/l") + " --steps 100000 --eval-interval 100000", dir + "/first.log");
  ASSERT_TRUE(wait_until([&] { return fs::exists(dir + "/l/log.jsonl") && line_count(dir + "/l/log.jsonl") > 0; }, 60));
  Result second = run(tiny(dir + "/l") + " --steps 2 --overwrite");
  EXPECT_NE(second.code, 0);
  EXPECT_NE(second.out.find("train: another tapelm is training into " + dir + "/l"), std::string::npos) << second.out;
  ::kill(first, SIGKILL);
  wait_exit(first);
  EXPECT_EQ(run(tiny(dir + "/l") + " --steps 2 --eval-interval 2 --overwrite").code, 0);  // the kernel dropped the lock
}

// A checkpoint that parses but holds what no run writes is refused with the
// tensor's or the key's name: non-finite weights, a tensor of another dtype,
// a step that is not a count, a damaged `train` record, and tensors whose byte
// ranges overlap (the safetensors format forbids it). (#34)
TEST_F(Tool, CheckpointsWithImpossibleContentsAreRefusedByName) {
  ASSERT_EQ(run(tiny(dir + "/good") + " --steps 1 --eval-interval 1").code, 0);
  const TensorFile good = load_safetensors(dir + "/good/model.safetensors");
  auto refused = [&](const std::string& what, const std::function<void(TensorFile&)>& damage, const std::string& says) {
    TensorFile f = good;
    for (auto& [name, t] : f.tensors) t = t.clone();
    damage(f);
    const std::string ck = dir + "/" + what;
    fs::create_directories(ck);
    save_safetensors(ck + "/model.safetensors", f);
    for (const std::string& command :
         {"eval --checkpoint " + ck + " --data " + corpus, "sample --checkpoint " + ck + " --tokens 3"}) {
      Result r = run(command);
      EXPECT_NE(r.code, 0) << what << ": " << command;
      EXPECT_NE(r.out.find(says), std::string::npos) << what << ": " << command << "\n" << r.out;
    }
  };
  const std::string weight = "transformer.h.0.attn.c_attn.weight";
  refused(
      "nan", [&](TensorFile& f) { f.tensors[weight].data<float>()[3] = NAN; },
      "'" + weight + "' holds nan at element 3");
  refused(
      "inf", [&](TensorFile& f) { f.tensors[weight].data<float>()[0] = -INFINITY; }, "holds -inf at element 0");
  refused(
      "int32", [&](TensorFile& f) { f.tensors[weight] = f.tensors[weight].to(DType::i32); },
      "tensor '" + weight + "' is stored as");
  refused(
      "negative_step", [](TensorFile& f) { f.metadata["step"] = "-1"; }, "metadata 'step' is '-1', not a step count");
  refused(
      "word_step", [](TensorFile& f) { f.metadata["step"] = "ten"; }, "metadata 'step' is 'ten', not a step count");
  refused(
      "train", [](TensorFile& f) { f.metadata["train"] = "{\"batch\": "; }, "metadata 'train' is damaged");

  // Two tensors over the same bytes, written by hand.
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = char((header.size() >> (8 * i)) & 0xff);
  std::ofstream(dir + "/overlap.safetensors", std::ios::binary) << bytes << header << std::string(12, '\1');
  EXPECT_ERROR_CONTAINS(load_safetensors(dir + "/overlap.safetensors"),
                        "tensors 'a' (bytes 0..8) and 'b' (bytes 4..12) overlap, which the format forbids");
}

// SIGUSR1 (mpirun passes it on to every rank) sent while the tool is still
// starting is held until the run's handler is in place, then stops the run
// at its first step with a checkpoint: neither lost nor fatal. The signal is
// sent as soon as the process blocks or catches it, before it prints a line.
TEST_F(Tool, AStopAskedWhileStartingIsKeptNotFatal) {
  const std::string log = dir + "/start.log";
  const pid_t pid = spawn_tool(tiny(dir + "/s") + " --steps 50 --eval-interval 50", log);
  auto holds_sigusr1 = [&] { return tool_holds_signal(pid, SIGUSR1); };
  ASSERT_TRUE(wait_until(holds_sigusr1, 30));
  const int64_t printed = line_count(log);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_exit(pid), 130) << slurp(log);
  EXPECT_EQ(printed, 0) << "the signal was sent after start-up, which tests nothing";
  EXPECT_NE(slurp(log).find("interrupted: checkpoint at step 0 saved"), std::string::npos) << slurp(log);
  EXPECT_EQ(run(tiny(dir + "/s") + " --steps 2 --eval-interval 2 --resume").code, 0);
}

// Every model field has a flag, and the flag sets it: a run with each flag
// at a value other than its default stores exactly those values.
TEST_F(Tool, EveryModelFieldHasAWorkingFlag) {
  const nn::ModelConfig want = changed_config();
  std::string flags;
  for (const nn::ConfigField& f : nn::config_fields())
    if (!f.flag.empty()) flags += " " + f.flag + "=" + flag_value(want, f);
  Result r = run("train --data " + corpus + " --out " + dir +
                 "/f --batch 2 --steps 1 --eval-interval 1 "
                 "--eval-batches 1 --threads 1 --quiet" +
                 flags);
  ASSERT_EQ(r.code, 0) << r.out;
  auto have = nlohmann::json::parse(train::load_checkpoint(dir + "/f").config.to_json());
  auto expected = nlohmann::json::parse(want.to_json());
  for (const nn::ConfigField& f : nn::config_fields()) {
    if (!f.flag.empty()) {
      EXPECT_EQ(have[f.key], expected[f.key]) << f.flag;
    }
  }
}

// Every run field has a flag, and the flag sets it: a run with each flag at a
// value other than its default stores exactly those values in its checkpoint,
// and they read back (eval reads the split options from there).
TEST_F(Tool, EveryRunFieldHasAWorkingFlagAndRoundTrips) {
  train::TrainOptions want = changed_run(corpus);
  const bool gpu = cuda_available();
  if (!gpu) want.device = "cpu", want.precision = "fp32";  // moved off their defaults only where a GPU runs them
  std::string flags;
  for (const train::RunField& f : train::run_fields()) flags += " " + f.flag + "=" + flag_value(want, f);
  Result r = run("train --out " + dir + "/r --n-layer 1 --n-embd 16 --n-head 2 --context 16 --quiet" + flags);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto have = nlohmann::json::parse(train::load_checkpoint(dir + "/r").train_options_json);
  const auto expected = nlohmann::json::parse(want.to_json()),
             plain = nlohmann::json::parse(train::TrainOptions().to_json());
  EXPECT_EQ(expected.size(), train::run_fields().size());
  for (const train::RunField& f : train::run_fields()) {
    EXPECT_EQ(have[f.key], expected[f.key]) << f.flag;
    if (gpu || (f.key != "device" && f.key != "precision")) {
      EXPECT_NE(expected[f.key], plain[f.key]) << f.key << " is not moved off its default";
    }
  }
  EXPECT_EQ(train::TrainOptions::from_json(want.to_json()).to_json(), want.to_json());
  EXPECT_ERROR_CONTAINS(train::TrainOptions::from_json(R"({"log_interval": 0})"), "log_interval must be in [1, ");
  EXPECT_ERROR_CONTAINS(train::TrainOptions::from_json(R"({"beta2": 1.0})"), "beta2 must be in [0, 1)");
}

// The README's command contract and checkpoint table list exactly what the
// schemas hold: every train flag, every config key, every mixer.
TEST(Readme, CommandContractMatchesTheSchemas) {
  std::ifstream in(std::string(TAPELM_SOURCE_DIR) + "/README.md");
  std::string train_row, config_row, mixer_line, line;
  while (std::getline(in, line)) {
    if (line.rfind("| `tapelm train` |", 0) == 0) train_row = line;
    if (line.rfind("| `config` |", 0) == 0) config_row = line;
    if (line.rfind("`--mixer` takes", 0) == 0) {
      mixer_line = line;  // and the next line, where the list goes on
      if (std::getline(in, line)) mixer_line += " " + line;
    }
  }
  ASSERT_FALSE(train_row.empty() || config_row.empty() || mixer_line.empty());
  std::set<std::string> listed,
      schema{"--data", "--out", "--config", "--resume", "--overwrite", "--init-from", "--quiet"};
  const std::regex flag("--[a-z0-9-]+");
  for (auto it = std::sregex_iterator(train_row.begin(), train_row.end(), flag); it != std::sregex_iterator(); ++it)
    listed.insert(it->str());
  for (const nn::ConfigField& f : nn::config_fields())
    if (!f.flag.empty()) schema.insert(f.flag);
  for (const train::RunField& f : train::run_fields()) schema.insert(f.flag);
  EXPECT_EQ(listed, schema);
  auto words = [](const std::string& text) {
    std::set<std::string> w;
    const std::regex word("[a-z_0-9+]+");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), word); it != std::sregex_iterator(); ++it)
      w.insert(it->str());
    return w;
  };
  const std::set<std::string> config_words = words(config_row), mixer_words = words(mixer_line);
  for (const nn::ConfigField& f : nn::config_fields())
    EXPECT_TRUE(config_words.count(f.key)) << f.key << " is missing from the checkpoint table";
  for (const nn::MixerSpec& m : nn::mixer_table())
    EXPECT_TRUE(mixer_words.count(m.name)) << m.name << " is missing from the --mixer list";
}

// Keys are flag names, or a model field's config key ("block_size" for --context).
TEST_F(Tool, ConfigFileIsOverriddenByFlags) {
  std::ofstream(dir + "/cfg.json") << R"({"n_layer": 2, "n_embd": 16, "n_head": 2, "block_size": 16, "steps": 1,
                                          "eval_interval": 1, "batch": 2, "threads": 1, "quiet": true})";
  Result r = run("train --config " + dir + "/cfg.json --data " + corpus + " --out " + dir + "/c --n-layer 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("n_layer 1, n_head 2, n_embd 16, context 16"), std::string::npos) << r.out;
  // An empty string is a value like any other: it does not take the next key's flag as its value.
  std::ofstream(dir + "/empty.json") << R"({"doc_sep": "", "dropout": 0.25, "n_layer": 1, "n_embd": 16,
                                            "n_head": 2, "block_size": 16, "steps": 1, "eval_interval": 1, "batch": 2})";
  Result empty = run("train --config " + dir + "/empty.json --data " + corpus + " --out " + dir + "/e --quiet");
  ASSERT_EQ(empty.code, 0) << empty.out;
  const train::Checkpoint ck = train::load_checkpoint(dir + "/e");
  EXPECT_EQ(ck.train_options.doc_sep, "");
  EXPECT_EQ(ck.config.dropout, 0.25);
  std::ofstream(dir + "/bad.json") << R"({"n_layers": 2})";
  Result bad = run("train --config " + dir + "/bad.json --data " + corpus);
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("--n-layers"), std::string::npos) << bad.out;
}

TEST_F(Tool, TruncatedOrCorruptCheckpointIsAClearError) {
  ASSERT_EQ(run(tiny(dir + "/t") + " --steps 2 --eval-interval 2").code, 0);
  const std::string model = dir + "/t/model.safetensors";
  fs::copy_file(model, dir + "/good.safetensors");
  fs::resize_file(model, fs::file_size(model) / 2);
  Result trunc = run("sample --checkpoint " + dir + "/t --tokens 5");
  EXPECT_EQ(trunc.code, 1);
  EXPECT_NE(trunc.out.find("truncated"), std::string::npos) << trunc.out;
  const std::string garbage("\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}", 25);
  std::ofstream(model, std::ios::binary | std::ios::trunc) << garbage;
  Result corrupt = run("sample --checkpoint " + dir + "/t --tokens 5");
  EXPECT_EQ(corrupt.code, 1);
  EXPECT_NE(corrupt.out.find("corrupt header"), std::string::npos) << corrupt.out;
  Result none = run("sample --checkpoint " + dir + "/nothing");
  EXPECT_EQ(none.code, 1);
  EXPECT_NE(none.out.find("not found"), std::string::npos) << none.out;
}

// A resumed run goes on where it ran: the checkpoint's device and precision
// unless a flag says otherwise (exact resume needs both the same). Here a
// run saved as a GPU run is resumed on a machine without a GPU.
TEST_F(Tool, AResumedRunKeepsItsDeviceAndPrecisionUnlessTold) {
  if (cuda_available()) GTEST_SKIP() << "needs a machine without a GPU";
  ASSERT_EQ(run(tiny(dir + "/d") + " --steps 2 --eval-interval 2").code, 0);
  const std::string model = dir + "/d/model.safetensors";
  TensorFile f = load_safetensors(model);
  nlohmann::json options = nlohmann::json::parse(f.metadata.at("train"));
  options["device"] = "cuda", options["precision"] = "bf16";
  f.metadata["train"] = options.dump();
  save_safetensors(model, f);
  Result kept = run(tiny(dir + "/d") + " --steps 4 --eval-interval 2 --resume");
  EXPECT_EQ(kept.code, 1);
  EXPECT_NE(kept.out.find("train --device cuda: "), std::string::npos) << kept.out;
  Result told = run(tiny(dir + "/d") + " --steps 4 --eval-interval 2 --resume --device cpu --precision fp32");
  EXPECT_EQ(told.code, 0) << told.out;
}

// A checkpoint's sizes are the file's word: each is checked before it is
// trusted, and a config that disagrees with the tensors ends in one message,
// quickly (no hang building 10^9 layers, no terabyte allocation).
TEST_F(Tool, CheckpointSizesAreCheckedBeforeUse) {
  ASSERT_EQ(run(tiny(dir + "/c") + " --steps 2 --eval-interval 2").code, 0);
  const std::string model = dir + "/c/model.safetensors";
  const TensorFile good = load_safetensors(model);
  auto with_config = [&](const std::function<void(nlohmann::json&)>& edit) {
    TensorFile f = good;
    nlohmann::json config = nlohmann::json::parse(f.metadata.at("config"));
    edit(config);
    f.metadata["config"] = config.dump();
    save_safetensors(model, f);
    return run("sample --checkpoint " + dir + "/c --tokens 5");
  };
  const auto t0 = std::chrono::steady_clock::now();
  Result deep = with_config([](nlohmann::json& c) { c["n_layer"] = 1000000000; });
  EXPECT_EQ(deep.code, 1);
  EXPECT_NE(deep.out.find("n_layer must be in [1, 1024], got 1000000000"), std::string::npos) << deep.out;
  // In range, but far larger than the file: stopped by the build's budget.
  Result wide = with_config([](nlohmann::json& c) {
    c["n_layer"] = 64;
    c["n_embd"] = 8192;
  });
  EXPECT_EQ(wide.code, 1);
  EXPECT_NE(wide.out.find("the config describes a bigger model (64 layers, width 8192"), std::string::npos) << wide.out;
  Result two = with_config([](nlohmann::json& c) { c["n_layer"] = 2; });
  EXPECT_EQ(two.code, 1);
  EXPECT_NE(two.out.find("does not match its own config"), std::string::npos) << two.out;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);

  // A shape whose element count overflows int64, with offsets that fit the file.
  const std::string header = R"({"x":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,0]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = char((header.size() >> (8 * i)) & 0xff);
  std::ofstream(model, std::ios::binary | std::ios::trunc) << bytes << header;
  Result huge = run("sample --checkpoint " + dir + "/c --tokens 5");
  EXPECT_EQ(huge.code, 1);
  EXPECT_NE(huge.out.find("tensor 'x' has an impossible shape [4611686018427387904,8]"), std::string::npos) << huge.out;
}

// A checkpoint write that fails (here a file-size limit, as a full disk
// would) ends in one message with the OS's reason, and the previous
// checkpoint stays byte for byte, with no temp file left behind.
TEST_F(Tool, FailedCheckpointWriteKeepsThePreviousOne) {
  ASSERT_EQ(run(tiny(dir + "/w") + " --steps 2 --eval-interval 2").code, 0);
  auto read = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const std::string before = read(dir + "/w/model.safetensors");
  ASSERT_GT(before.size(), 16u * 1024);  // bigger than the limit below
  // ulimit -f counts 1024-byte blocks: the optimizer state (written first) cannot fit.
  Result r = run_env("ulimit -f 16;", tiny(dir + "/w") + " --steps 4 --eval-interval 2 --resume");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("cannot save the checkpoint of step 4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("File too large"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("the last good checkpoint in " + dir + "/w is kept"), std::string::npos) << r.out;
  EXPECT_EQ(read(dir + "/w/model.safetensors"), before);
  for (auto& e : fs::directory_iterator(dir + "/w")) EXPECT_NE(e.path().extension(), ".tmp") << e.path();
  EXPECT_EQ(train::load_checkpoint(dir + "/w").step, 2);
  EXPECT_EQ(run(tiny(dir + "/w") + " --steps 4 --eval-interval 2 --resume").code, 0);  // and it resumes
}

TEST_F(Tool, NonFiniteLossStopsAndKeepsTheLastGoodCheckpoint) {
  // A good checkpoint at step 3, then an absurd learning rate blows the
  // weights up on the first resumed update: the run stops, step 3 survives.
  ASSERT_EQ(run(tiny(dir + "/n") + " --steps 3 --eval-interval 3").code, 0);
  TensorFile before = load_safetensors(dir + "/n/model.safetensors");
  Result r = run(tiny(dir + "/n") +
                 " --steps 50 --eval-interval 1 --lr 1e30 --warmup 0 --schedule constant --grad-clip 0 --resume");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("; stopping. The last good checkpoint in"), std::string::npos) << r.out;
  // Intact, loadable, and from finite weights (a checkpoint is only written
  // after a finite loss, finite updated weights and a finite evaluation).
  train::Checkpoint ck = train::load_checkpoint(dir + "/n");
  EXPECT_GE(ck.step, 3);
  EXPECT_LT(ck.step, 50);
  TensorFile after = load_safetensors(dir + "/n/model.safetensors");
  for (auto& [name, t] : after.tensors)
    for (double v : t.to_vector()) ASSERT_TRUE(std::isfinite(v)) << name;
  EXPECT_FALSE(before.tensors.empty());
}

// SIGINT once the first step is logged (not after a fixed time, which a slow
// start, e.g. under sanitizers, would outlast).
TEST_F(Tool, CtrlCSavesACheckpointAndExits130) {
  const pid_t pid = spawn_tool(tiny(dir + "/i") + " --steps 1000000 --eval-interval 1000000", dir + "/i.log");
  ASSERT_GT(pid, 0);
  const bool stepped = wait_until([&] { return line_count(dir + "/i/log.jsonl") >= 1; }, 300);
  kill(pid, SIGINT);
  EXPECT_EQ(wait_exit(pid), 130);
  ASSERT_TRUE(stepped) << "no step logged in 300 s";
  train::Checkpoint ck = train::load_checkpoint(dir + "/i");
  EXPECT_GT(ck.step, 0);
  std::ifstream log(dir + "/i.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("interrupted: checkpoint at step"), std::string::npos) << text;
}

// kill -9 at several moments of a run that checkpoints every step (some
// inside a checkpoint write): each time the checkpoint on disk loads, never
// goes back, and the run resumes from it.
TEST_F(Tool, KillNineAtAnyMomentLeavesALoadableCheckpoint) {
  const std::string run_dir = dir + "/k";
  const std::string args = tiny(run_dir) + " --steps 1000000 --eval-interval 1000000 --checkpoint-interval 1";
  int64_t last_step = 0;
  for (int moment : {0, 1, 2, 3, 5, 8, 13, 21}) {  // ms after a step is logged
    const int64_t lines = line_count(run_dir + "/log.jsonl");
    const pid_t pid = spawn_tool(args + (last_step > 0 ? " --resume" : ""), dir + "/k.log");
    ASSERT_GT(pid, 0);
    const bool stepped = wait_until([&] { return line_count(run_dir + "/log.jsonl") >= lines + 2; }, 300);
    std::this_thread::sleep_for(std::chrono::milliseconds(moment));
    kill(pid, SIGKILL);
    EXPECT_EQ(wait_exit(pid), 128 + SIGKILL);
    ASSERT_TRUE(stepped) << "no step logged in 300 s";
    train::Checkpoint ck = train::load_checkpoint(run_dir);
    EXPECT_GE(ck.step, std::max<int64_t>(last_step, 1)) << "killed " << moment << " ms after a step";
    last_step = ck.step;
  }
  Result r = run(tiny(run_dir) + " --steps " + std::to_string(last_step + 2) +
                 " --eval-interval 1000000 --checkpoint-interval 1 --resume");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(train::load_checkpoint(run_dir).step, last_step + 2);
}

// With OMP_PROC_BIND set, libgomp pins the first thread before main(); the
// re-execution that sets the wait policy (train/thread_policy.h) must not
// inherit that one CPU, or the whole team shares it (4x slower at 4 threads).
TEST_F(Tool, ThreadBindingSurvivesTheWaitPolicyReexec) {
  cpu_set_t set;
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  if (CPU_COUNT(&set) < 2) GTEST_SKIP() << "needs 2 CPUs";
  std::string args = tiny(dir + "/b");
  args.replace(args.find("--threads 1"), 11, "--threads 2");
  // OMP_WAIT_POLICY unset, so that the tool chooses it and re-executes itself.
  Result r = run_env(
      "env -u OMP_WAIT_POLICY OMP_PROC_BIND=close OMP_PLACES=threads OMP_DISPLAY_AFFINITY=true "
      "OMP_AFFINITY_FORMAT='tapelm-affinity %A'",
      args + " --steps 1 --eval-interval 1");
  ASSERT_EQ(r.code, 0) << r.out;
  std::set<std::string> cpus;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("tapelm-affinity ", 0) == 0) cpus.insert(line.substr(16));
  EXPECT_GE(cpus.size(), 2u) << "the team's threads were bound to one CPU:\n" << r.out;
}

TEST_F(Tool, SampleAndEval) {
  ASSERT_EQ(run(tiny(dir + "/s") + " --steps 5 --eval-interval 5").code, 0);
  Result g1 = run("sample --checkpoint " + dir + "/s --prompt 'To be' --tokens 40 --temperature 0");
  Result g2 = run("sample --checkpoint " + dir + "/s --prompt 'To be' --tokens 40 --temperature 0");
  ASSERT_EQ(g1.code, 0) << g1.out;
  EXPECT_EQ(g1.out, g2.out);  // greedy is deterministic
  EXPECT_EQ(g1.out.rfind("To be", 0), 0u);
  Result s = run("sample --checkpoint " + dir + "/s --tokens 30 --top-k 3 --seed 7");
  EXPECT_EQ(s.code, 0) << s.out;
  Result bad = run("sample --checkpoint " + dir + "/s --prompt 'Zebra!'");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("character 'Z'"), std::string::npos) << bad.out;
  Result e = run("eval --checkpoint " + dir + "/s --data " + corpus);
  EXPECT_EQ(e.code, 0) << e.out;
  EXPECT_NE(e.out.find("val loss "), std::string::npos) << e.out;
  // The char tokenizer on ASCII text: a token is a byte, so bits per byte = loss / ln 2.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      e.out, m,
      std::regex(
          R"(val loss ([0-9.]+) \(perplexity [0-9.]+, ([0-9.]+) bits per byte\) over ([0-9]+) tokens \(([0-9]+) bytes\))")))
      << e.out;
  EXPECT_NEAR(std::stod(m[2]), std::stod(m[1]) / std::log(2.0), 2e-4);
  EXPECT_EQ(m[3], m[4]);
}

// Several samples, each from seed + i, between nanoGPT's separator lines; a
// stop string ends a sample where it first appears and is not printed.
TEST_F(Tool, SamplesSeveralAndStopsAtTheStopString) {
  ASSERT_EQ(run(tiny(dir + "/s") + " --steps 5 --eval-interval 5").code, 0);
  Result three = run("sample --checkpoint " + dir + "/s --prompt 'To be' --tokens 30 --num-samples 3 --seed 5");
  ASSERT_EQ(three.code, 0) << three.out;
  std::vector<std::string> samples;
  std::istringstream lines(three.out);
  std::string text, line;
  while (std::getline(lines, line))
    if (line == "---------------")
      samples.push_back(text), text.clear();
    else
      text += line + "\n";
  samples.push_back(text);
  ASSERT_EQ(samples.size(), 3u) << three.out;
  Result second = run("sample --checkpoint " + dir + "/s --prompt 'To be' --tokens 30 --seed 6");
  EXPECT_EQ(second.out, samples[1]);  // sample 1 draws from seed + 1
  // Greedy text, then the same run stopped at a string from its middle.
  Result full = run("sample --checkpoint " + dir + "/s --prompt 'To be' --tokens 60 --temperature 0");
  ASSERT_EQ(full.code, 0) << full.out;
  const std::string generated = full.out.substr(5, full.out.size() - 6);  // between the prompt and the last newline
  ASSERT_GE(generated.size(), 20u);
  const std::string stop = generated.substr(10, 2);
  const size_t at = generated.find(stop);
  std::string quoted = "'";  // for the shell, whatever the two characters are
  for (char c : stop) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  quoted += "'";
  Result stopped =
      run("sample --checkpoint " + dir + "/s --prompt 'To be' --tokens 60 --temperature 0 --stop " + quoted);
  ASSERT_EQ(stopped.code, 0) << stopped.out;
  EXPECT_EQ(stopped.out, "To be" + generated.substr(0, at) + "\n");
}

TEST_F(Tool, DocumentBatchesWithBPE) {
  Result r = run(tiny(dir + "/d") +
                 " --steps 3 --eval-interval 3 --batch-mode documents --doc-sep % --tokenizer bpe --vocab-size 300");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("bpe tokenizer"), std::string::npos) << r.out;
  Result e = run("eval --checkpoint " + dir + "/d --data " + corpus);
  EXPECT_EQ(e.code, 0) << e.out;
}

TEST(Sampler, GreedyAndTopK) {
  float logits[5] = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f};
  Generator g(0);
  auto with = [](double temperature, int64_t top_k) {
    train::SampleOptions o;
    o.temperature = temperature, o.top_k = top_k;
    return o;
  };
  EXPECT_EQ(train::pick_token(logits, 5, with(0.0, 0), {}, g), 1);
  EXPECT_EQ(train::pick_token(logits, 5, with(1.0, 1), {}, g), 1);  // top-1 is greedy
  for (int i = 0; i < 50; ++i) {
    int32_t t = train::pick_token(logits, 5, with(1.0, 2), {}, g);
    EXPECT_TRUE(t == 1 || t == 3);
  }
}

// Top-p keeps the fewest most likely tokens reaching p: with probabilities
// about .47, .43, .06, .03, .01 (logits below), p = 0.5 keeps two, p = 0.4 one,
// and the draws follow the kept tokens' renormalised shares.
TEST(Sampler, TopPKeepsTheNucleus) {
  float logits[5] = {0.1f, 3.0f, -1.0f, 2.9f, 1.0f};
  Generator g(3);
  train::SampleOptions o;
  o.temperature = 1.0, o.top_p = 0.4;
  for (int i = 0; i < 50; ++i) EXPECT_EQ(train::pick_token(logits, 5, o, {}, g), 1);
  o.top_p = 0.5;
  int ones = 0, n = 4000;
  for (int i = 0; i < n; ++i) {
    const int32_t t = train::pick_token(logits, 5, o, {}, g);
    ASSERT_TRUE(t == 1 || t == 3) << t;
    ones += t == 1;
  }
  const double want = 1.0 / (1.0 + std::exp(2.9 - 3.0));  // e^3 / (e^3 + e^2.9)
  EXPECT_NEAR(ones / (double)n, want, 4 * std::sqrt(want * (1 - want) / n));
}

// The repetition penalty (Hugging Face's): a seen token's positive logit is
// divided by it, a negative one multiplied, each token once however often seen.
TEST(Sampler, RepetitionPenaltyLowersTokensAlreadyInTheText) {
  float logits[4] = {2.0f, 1.5f, -0.5f, -1.0f};
  Generator g(0);
  train::SampleOptions o;
  o.temperature = 0;
  EXPECT_EQ(train::pick_token(logits, 4, o, {0, 0, 0}, g), 0);  // no penalty: greedy
  o.repetition_penalty = 1.2;                                   // 2.0 / 1.2 = 1.67 > 1.5: still 0
  EXPECT_EQ(train::pick_token(logits, 4, o, {0, 0, 0}, g), 0);
  o.repetition_penalty = 1.5;  // 2.0 / 1.5 = 1.33 < 1.5
  EXPECT_EQ(train::pick_token(logits, 4, o, {0}, g), 1);
  float negative[2] = {-1.0f, -1.2f};
  EXPECT_EQ(train::pick_token(negative, 2, o, {0}, g), 1);  // −1.0 · 1.5 = −1.5 < −1.2
}

// The bake-off as a scaling study: two sizes, two seeds at the smaller, run
// as two `tapelm train` processes at a time; the same study in this one
// process (one thread) gives the same final losses bit for bit, so a child's
// --config reproduces the run compare planned, flag for flag.
TEST_F(Tool, CompareRunsAScalingStudyInParallelJobs) {
  const std::string common = " --data " + corpus +
                             " --mixers attention,mamba2 --sizes 8,16 --seeds 2 --tokens-per-param 0.5"
                             " --n-layer 1 --n-head 2 --context 16 --batch 4 --warmup 2 --eval-interval 4"
                             " --eval-batches 2 --decode-contexts 4,8 --decode-batches 1,2 --decode-tokens 2";
  Result jobs = run("compare --out " + dir + "/jobs --jobs 2" + common);
  ASSERT_EQ(jobs.code, 0) << jobs.out;
  Result one = run("compare --out " + dir + "/one --jobs 1 --threads 1" + common);
  ASSERT_EQ(one.code, 0) << one.out;
  for (const char* f : {"results.md", "loss_vs_flops.svg", "scaling_fits.svg", "decode_speed.svg"})
    EXPECT_TRUE(fs::exists(dir + "/jobs/" + f)) << f;
  int runs = 0;
  for (const char* mixer : {"attention", "mamba2"})
    for (const char* run : {"d8-seed1337", "d8-seed1338", "d16-seed1337"}) {
      const std::string a = dir + "/jobs/" + mixer + "/" + run, b = dir + "/one/" + mixer + "/" + run;
      EXPECT_TRUE(fs::exists(a + "/run.json")) << a;
      const auto la = logged(a, "val_loss"), lb = logged(b, "val_loss");
      ASSERT_FALSE(la.empty()) << a;
      EXPECT_EQ(la, lb) << a << " and " << b << " should be the same run";
      ++runs;
    }
  EXPECT_EQ(runs, 6);
  std::ifstream md(dir + "/jobs/results.md");
  const std::string table((std::istreambuf_iterator<char>(md)), std::istreambuf_iterator<char>());
  for (const char* want : {"| attention | 8 | 1338 |", "| mamba2 | 16 | 1337 |", "### Scaling fits", "| mamba2 | 2 |"})
    EXPECT_NE(table.find(want), std::string::npos) << want << "\n" << table;
}

TEST(Compare, PowerFitRecoversALineInLogLog) {
  std::vector<std::pair<double, double>> pts;
  for (double c : {1e9, 3e9, 1e10, 4e10}) pts.push_back({c, std::exp(2.5) * std::pow(c, -0.07)});
  train::PowerFit f = train::fit_power_law(pts);
  EXPECT_NEAR(f.slope, -0.07, 1e-12);
  EXPECT_NEAR(f.intercept, 2.5, 1e-9);
  EXPECT_NEAR(f.flops_for(f.loss_at(2e10)), 2e10, 2e10 * 1e-9);
  EXPECT_TRUE(std::isnan(train::fit_power_law({{1e9, 3.0}}).slope));  // one point: no line
}

// A folder of token files trains and evaluates with the files' tokenizer and
// split (GPT-2's for nanoGPT's train.bin/val.bin); the run's own tokenizer
// flags are refused there, not ignored.
TEST_F(Tool, TrainsAndEvaluatesOnANanoGptTokenFolder) {
  const std::string data = dir + "/tokens";
  fs::create_directories(data);
  std::vector<uint16_t> train(4000), val(1000);
  for (size_t i = 0; i < train.size(); ++i) train[i] = (uint16_t)((i * 7919) % 50257);
  for (size_t i = 0; i < val.size(); ++i) val[i] = (uint16_t)((i * 104729) % 50257);
  std::ofstream(data + "/train.bin", std::ios::binary).write(reinterpret_cast<const char*>(train.data()), 8000);
  std::ofstream(data + "/val.bin", std::ios::binary).write(reinterpret_cast<const char*>(val.data()), 2000);
  const std::string flags = " --n-layer 1 --n-head 2 --n-embd 16 --context 16 --batch 4 --threads 1 --quiet";
  Result r =
      run("train --data " + data + " --out " + dir + "/run --steps 3 --eval-interval 3 --eval-batches 2" + flags);
  ASSERT_EQ(r.code, 0) << r.out;
  Result e = run("eval --checkpoint " + dir + "/run --data " + data);
  ASSERT_EQ(e.code, 0) << e.out;
  EXPECT_NE(e.out.find("loss"), std::string::npos) << e.out;
  Result bad = run("train --data " + data + " --out " + dir + "/run2 --steps 3 --tokenizer char" + flags);
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("holds token files"), std::string::npos) << bad.out;
  // Documents: the folder has no index, so the run cuts it at <|endoftext|> and keeps the index beside it.
  Result docs = run("train --data " + data + " --out " + dir + "/run3 --steps 3 --eval-interval 3 --eval-batches 2" +
                    " --batch-mode documents" + flags);
  ASSERT_EQ(docs.code, 0) << docs.out;
  EXPECT_TRUE(fs::exists(data + "/documents_train.idx"));
  Result docs_eval = run("eval --checkpoint " + dir + "/run3 --data " + data);
  EXPECT_EQ(docs_eval.code, 0) << docs_eval.out;
}

// tokenize → train --batch-mode documents → eval on the token folder: the
// documents recorded at tokenize time are the batches' rows; a separator
// given to train is refused there (the documents were fixed when made).
TEST_F(Tool, TrainsOnTheDocumentsOfATokenizedFolder) {
  Result t = run("tokenize --data " + corpus + " --out " + dir + "/tok --tokenizer char --doc-sep % --quiet");
  ASSERT_EQ(t.code, 0) << t.out;
  const std::string flags = " --n-layer 1 --n-head 2 --n-embd 16 --context 16 --batch 4 --threads 1 --quiet";
  Result r = run("train --data " + dir + "/tok --out " + dir +
                 "/run --steps 3 --eval-interval 3 --batch-mode documents" + flags);
  ASSERT_EQ(r.code, 0) << r.out;
  Result e = run("eval --checkpoint " + dir + "/run --data " + dir + "/tok");
  ASSERT_EQ(e.code, 0) << e.out;
  EXPECT_NE(e.out.find("loss"), std::string::npos) << e.out;
  Result bad =
      run("train --data " + dir + "/tok --out " + dir + "/run2 --steps 3 --batch-mode documents --doc-sep %" + flags);
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("doc_sep cannot be set"), std::string::npos) << bad.out;
}

// export (both formats) and train --init-from from the command line: the
// fine-tuned run samples; model flags beside --init-from are refused.
TEST_F(Tool, ExportsAndFineTunesFromAHuggingFaceFolder) {
  ASSERT_EQ(run(tiny(dir + "/base") + " --steps 2 --eval-interval 2").code, 0);
  Result hf = run("export --checkpoint " + dir + "/base --format hf --out " + dir + "/hf");
  ASSERT_EQ(hf.code, 0) << hf.out;
  Result gguf = run("export --checkpoint " + dir + "/base --format gguf --gguf-type f16 --out " + dir + "/m.gguf");
  ASSERT_EQ(gguf.code, 0) << gguf.out;
  std::ifstream g(dir + "/m.gguf", std::ios::binary);
  char magic[4] = {};
  g.read(magic, 4);
  EXPECT_EQ(std::string(magic, 4), "GGUF");
  const std::string tune = "train --init-from " + dir + "/hf --data " + corpus + " --out " + dir +
                           "/tuned --steps 2 --eval-interval 2 --eval-batches 1 --batch 2 --quiet";
  Result r = run(tune);
  ASSERT_EQ(r.code, 0) << r.out;
  Result s = run("sample --checkpoint " + dir + "/tuned --tokens 10 --temperature 0");
  EXPECT_EQ(s.code, 0) << s.out;
  Result both = run(tune + " --resume");
  EXPECT_NE(both.code, 0);
  EXPECT_NE(both.out.find("--init-from starts a new run"), std::string::npos) << both.out;
  Result bad = run(tune + " --overwrite --n-layer 3");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("so n_layer cannot be set (only --dropout)"), std::string::npos) << bad.out;
}
