// Data-parallel training over MPI (train/distributed.h), end to end: the tool
// under `mpirun --oversubscribe -np 2`. Two ranks with global batch B train
// the same model as one process with batch B; the only difference is the
// order in which each gradient's two halves are added, so losses and weights
// agree to 1e-5 (relative), not bit for bit. Across the ranks the weights are
// bit-identical. Resume, errors, a killed rank, a stop signal and the TCP
// path (as between machines) are each checked.
#include <dirent.h>
#include <signal.h>

#include <cmath>
#include <cstdlib>

#include "autograd/safetensors.h"
#include "tests/tool_helpers.h"
#include "train/checkpoint.h"

using namespace tapelm;
using namespace tapelm::testing;

#ifdef TAPELM_MPIEXEC

namespace {

// Two ranks, one thread each, unbound; Open MPI refuses root without the flag.
// In the sanitizer build (./dev.sh sanitize) LeakSanitizer is off for the
// ranks: Open MPI leaves its own allocations at exit, in plugins it has
// unloaded (no name to suppress them by). Every single-process test keeps it.
// Each test process gives Open MPI its own session directory (TMPDIR): two
// mpiruns starting at once in the shared /tmp/ompi.<host>.<uid> raced in its
// mkdir ("File exists", orte_init failed) under ctest -j2.
std::string mpirun(int ranks, const std::string& extra = "") {
  static const struct SessionDir {
    std::string path = (fs::temp_directory_path() / ("tapelm_ompi_" + std::to_string(::getpid()))).string();
    SessionDir() { fs::create_directories(path); }
    ~SessionDir() {
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  } session;
  const char* asan = std::getenv("ASAN_OPTIONS");
  return "env TMPDIR=" + session.path + " ASAN_OPTIONS=" + std::string(asan ? asan : "") + ":detect_leaks=0 " +
         std::string(TAPELM_MPIEXEC) + " --oversubscribe --allow-run-as-root --bind-to none -np " +
         std::to_string(ranks) + " " + extra;
}

class DataParallel : public Tool {
 protected:
  // tiny() without dropout: the 1-rank and 2-rank runs then compute the same function.
  std::string model(const std::string& out) {
    std::string args = tiny(out);
    args.replace(args.find("--dropout 0.1"), 13, "--dropout 0");
    return args + " --batch 8";
  }
};

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// The pid of the rank-`rank` process among the children of `launcher`
// (Open MPI's mpirun starts the local ranks itself), or 0.
pid_t rank_pid(pid_t launcher, int rank) {
  DIR* proc = opendir("/proc");
  pid_t found = 0;
  for (dirent* e; proc && (e = readdir(proc)) && !found;) {
    const pid_t pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    const size_t paren = line.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream fields(line.substr(paren + 2));
    char state;
    pid_t parent = 0;
    fields >> state >> parent;
    if (parent != launcher) continue;
    std::ifstream env("/proc/" + std::to_string(pid) + "/environ");
    std::string all((std::istreambuf_iterator<char>(env)), std::istreambuf_iterator<char>());
    if (all.find(std::string("OMPI_COMM_WORLD_RANK=") + std::to_string(rank) + '\0') != std::string::npos) found = pid;
  }
  if (proc) closedir(proc);
  return found;
}

}  // namespace

TEST_F(DataParallel, TwoRanksEqualOneRankWithTheSameGlobalBatch) {
  Result one = run(model(dir + "/one") + " --steps 20 --eval-interval 10");
  ASSERT_EQ(one.code, 0) << one.out;
  Result two = run_env(mpirun(2), model(dir + "/two") + " --steps 20 --eval-interval 10");
  ASSERT_EQ(two.code, 0) << two.out;
  EXPECT_NE(two.out.find("data parallel: 2 ranks × 1 threads, each 4 sequences of the global batch of 8"),
            std::string::npos)
      << two.out;
  EXPECT_EQ(count(two.out, "step 20: train loss"), 1u) << "rank 0 alone prints:\n" << two.out;
  expect_same_run(dir + "/one", dir + "/two", 20, 1e-5);
  // D counts the global batch's tokens; C adds up both ranks' FLOPs.
  nlohmann::json s1 = last_summary(dir + "/one"), s2 = last_summary(dir + "/two");
  EXPECT_EQ(s1["tokens"], s2["tokens"]);
  EXPECT_EQ(s2["ranks"], 2);
  EXPECT_GE(s2["flops"].get<double>(), s1["flops"].get<double>());
  EXPECT_LE(s2["flops"].get<double>(), 1.05 * s1["flops"].get<double>());  // plus a second optimizer step
}

// Padded documents give the ranks different numbers of target tokens: each
// rank's loss is weighted by its share, so the sum is still the batch's mean.
TEST_F(DataParallel, UnequalShardsOfPaddedDocumentsAreWeightedByTokens) {
  const std::string docs = " --steps 8 --eval-interval 8 --batch-mode documents --doc-sep %";
  Result one = run(model(dir + "/one") + docs);
  ASSERT_EQ(one.code, 0) << one.out;
  Result two = run_env(mpirun(2), model(dir + "/two") + docs);
  ASSERT_EQ(two.code, 0) << two.out;
  expect_same_run(dir + "/one", dir + "/two", 8, 1e-5);
}

TEST_F(DataParallel, WeightsAreBitIdenticalAcrossRanks) {
  Result two = run_env(mpirun(2), tiny(dir + "/h") + " --batch 8 --steps 12 --eval-interval 6");
  ASSERT_EQ(two.code, 0) << two.out;
  nlohmann::json s = last_summary(dir + "/h");
  ASSERT_EQ(s["weight_hashes"].size(), 2u) << s.dump();
  EXPECT_EQ(s["weight_hashes"][0], s["weight_hashes"][1]);
  EXPECT_NE(two.out.find("weights identical on all 2 ranks"), std::string::npos) << two.out;
}

// With dropout on, each rank's dropout stream is saved and restored too.
TEST_F(DataParallel, ResumeOnTwoRanksEqualsAnUninterruptedRun) {
  const std::string args = tiny(dir + "/full") + " --batch 8 --steps 20 --eval-interval 10";
  ASSERT_EQ(run_env(mpirun(2), args).code, 0);
  Result first =
      run_env(mpirun(2), tiny(dir + "/split") + " --batch 8 --steps 10 --lr-decay-steps 20 --eval-interval 10");
  ASSERT_EQ(first.code, 0) << first.out;
  Result second = run_env(mpirun(2), tiny(dir + "/split") + " --batch 8 --steps 20 --eval-interval 10 --resume");
  ASSERT_EQ(second.code, 0) << second.out;
  expect_same_run(dir + "/full", dir + "/split", 20, 0.0);  // bit for bit
}

// The global batches do not depend on the number of ranks: a run saved on 2
// ranks continues on 1 as it would have on 2 (to the order of the sums).
TEST_F(DataParallel, ResumeOnAnotherNumberOfRanksContinuesTheSameRun) {
  ASSERT_EQ(run_env(mpirun(2), model(dir + "/full") + " --steps 12 --eval-interval 6").code, 0);
  ASSERT_EQ(run_env(mpirun(2), model(dir + "/split") + " --steps 6 --lr-decay-steps 12 --eval-interval 6").code, 0);
  Result one = run(model(dir + "/split") + " --steps 12 --eval-interval 6 --resume");
  ASSERT_EQ(one.code, 0) << one.out;
  EXPECT_NE(one.out.find("resuming on 1 rank(s) a run saved on 2: the same global batches follow"), std::string::npos)
      << one.out;
  expect_same_run(dir + "/full", dir + "/split", 12, 1e-5);
}

TEST_F(DataParallel, BatchThatDoesNotDivideAmongTheRanksIsAClearError) {
  Result r = run_env(mpirun(2), tiny(dir + "/b") + " --batch 7 --steps 2");
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_EQ(count(r.out, "--batch 7 is the global batch and must divide evenly among the 2 ranks"), 1u) << r.out;
  EXPECT_EQ(r.out.find("MPI_ABORT"), std::string::npos) << "an agreed error ends every rank normally:\n" << r.out;
  EXPECT_FALSE(fs::exists(dir + "/b/model.safetensors"));
}

TEST_F(DataParallel, NonFiniteLossStopsEveryRankAndKeepsTheCheckpoint) {
  ASSERT_EQ(run_env(mpirun(2), tiny(dir + "/n") + " --batch 8 --steps 3 --eval-interval 3").code, 0);
  Result r = run_env(mpirun(2), tiny(dir + "/n") +
                                    " --batch 8 --steps 50 --eval-interval 1 --lr 1e30 --warmup 0 "
                                    "--schedule constant --grad-clip 0 --resume");
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_EQ(count(r.out, "; stopping. The last good checkpoint in"), 1u) << r.out;
  train::Checkpoint ck = train::load_checkpoint(dir + "/n");
  EXPECT_GE(ck.step, 3);
  EXPECT_LT(ck.step, 50);
}

TEST_F(DataParallel, FailedCheckpointWriteStopsEveryRankAndKeepsThePreviousOne) {
  ASSERT_EQ(run_env(mpirun(2), tiny(dir + "/w") + " --batch 8 --steps 2 --eval-interval 2").code, 0);
  std::ifstream before_file(dir + "/w/model.safetensors", std::ios::binary);
  const std::string before((std::istreambuf_iterator<char>(before_file)), std::istreambuf_iterator<char>());
  // A folder where rank 0 will write its temp file: the write fails on rank 0
  // alone. (ulimit -f, as the one-process test uses, also stops Open MPI's
  // shared-memory files.)
  fs::create_directories(dir + "/w/optimizer-4.safetensors.tmp");
  Result r = run_env(mpirun(2), tiny(dir + "/w") + " --batch 8 --steps 4 --eval-interval 2 --resume");
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_EQ(count(r.out, "cannot save the checkpoint of step 4"), 1u) << r.out;
  EXPECT_NE(r.out.find("Is a directory"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("the last good checkpoint in " + dir + "/w is kept"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("MPI_ABORT"), std::string::npos) << "every rank learns of it and ends normally:\n" << r.out;
  std::ifstream after_file(dir + "/w/model.safetensors", std::ios::binary);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(after_file)), std::istreambuf_iterator<char>()), before);
  EXPECT_EQ(train::load_checkpoint(dir + "/w").step, 2);
  fs::remove(dir + "/w/optimizer-4.safetensors.tmp");
  EXPECT_EQ(run_env(mpirun(2), tiny(dir + "/w") + " --batch 8 --steps 4 --eval-interval 2 --resume").code, 0);
}

// A rank killed mid-run (kill -9 while the job checkpoints every step): mpirun
// ends the job and says which rank died; the checkpoint loads and the run
// resumes on 2 ranks.
TEST_F(DataParallel, KilledRankEndsTheJobAndKeepsTheCheckpoint) {
  const std::string args =
      tiny(dir + "/k") + " --batch 8 --steps 1000000 --eval-interval 1000000 --checkpoint-interval 1";
  const pid_t launcher = spawn_tool(args, dir + "/k.log", mpirun(2));
  ASSERT_GT(launcher, 0);
  const bool stepped = wait_until([&] { return line_count(dir + "/k/log.jsonl") >= 3; }, 300);
  const pid_t victim = rank_pid(launcher, 1);
  if (victim > 0)
    kill(victim, SIGKILL);
  else
    kill(launcher, SIGKILL);
  int status = 0;
  const bool ended = wait_until([&] { return waitpid(launcher, &status, WNOHANG) == launcher; }, 60);
  if (!ended) kill(launcher, SIGKILL), waitpid(launcher, &status, 0);
  ASSERT_TRUE(stepped) << "no step logged in 300 s";
  ASSERT_GT(victim, 0) << "rank 1 not found among mpirun's children";
  EXPECT_TRUE(ended) << "the job went on after rank 1 died";
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::ifstream log(dir + "/k.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("rank 1"), std::string::npos) << text;
  train::Checkpoint ck = train::load_checkpoint(dir + "/k");
  EXPECT_GE(ck.step, 1);
  Result r = run_env(mpirun(2), tiny(dir + "/k") + " --batch 8 --steps " + std::to_string(ck.step + 2) +
                                    " --eval-interval 1000000 --checkpoint-interval 1 --resume");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(train::load_checkpoint(dir + "/k").step, ck.step + 2);
}

// mpirun passes SIGUSR1 on to every rank: they agree on a step, rank 0 saves,
// all exit 130. (Ctrl-C makes mpirun kill the ranks at once instead.)
TEST_F(DataParallel, StopSignalSavesACheckpointOnEveryRanksBehalf) {
  const pid_t launcher =
      spawn_tool(tiny(dir + "/i") + " --batch 8 --steps 1000000 --eval-interval 1000000", dir + "/i.log", mpirun(2));
  ASSERT_GT(launcher, 0);
  const bool stepped = wait_until([&] { return line_count(dir + "/i/log.jsonl") >= 1; }, 300);
  kill(launcher, SIGUSR1);
  int status = 0;
  const bool ended = wait_until([&] { return waitpid(launcher, &status, WNOHANG) == launcher; }, 120);
  if (!ended) kill(launcher, SIGKILL), waitpid(launcher, &status, 0);
  ASSERT_TRUE(stepped) << "no step logged in 300 s";
  EXPECT_TRUE(ended);
  std::ifstream log(dir + "/i.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_EQ(count(text, "interrupted: checkpoint at step"), 1u) << text;
  EXPECT_GT(train::load_checkpoint(dir + "/i").step, 0);
}

// SIGUSR1 sent to mpirun while its ranks start (each already holds it, none
// has printed or built anything) is kept: the run stops at its first step
// with one checkpoint, neither killed with none nor lost. Before `tapelm`
// blocked the signals from its first line, 13 of 19 such tries died.
TEST_F(DataParallel, AStopWhileTheRanksStartIsKept) {
  const pid_t launcher =
      spawn_tool(tiny(dir + "/w") + " --batch 8 --steps 1000000 --eval-interval 1000000", dir + "/w.log", mpirun(2));
  ASSERT_GT(launcher, 0);
  const bool ranks_hold = wait_until(
      [&] {
        std::vector<pid_t> ranks;
        for (pid_t kid : children_of(launcher))
          if (tool_holds_signal(kid, SIGUSR1)) ranks.push_back(kid);
        return ranks.size() == 2;
      },
      60);
  const bool before_any_step = !fs::exists(dir + "/w/log.jsonl");
  kill(launcher, SIGUSR1);
  int status = 0;
  const bool ended = wait_until([&] { return waitpid(launcher, &status, WNOHANG) == launcher; }, 120);
  if (!ended) kill(launcher, SIGKILL), waitpid(launcher, &status, 0);
  const std::string text = slurp(dir + "/w.log");
  ASSERT_TRUE(ranks_hold) << text;
  EXPECT_TRUE(before_any_step) << "the signal was sent after the run started, which tests nothing";
  ASSERT_TRUE(ended) << text;
  EXPECT_TRUE(WIFEXITED(status)) << text;
  EXPECT_EQ(WEXITSTATUS(status), 130) << text;
  EXPECT_EQ(count(text, "interrupted: checkpoint at step"), 1u) << text;
  EXPECT_EQ(train::load_checkpoint(dir + "/w").step, 0);
}

// The path between machines: TCP instead of shared memory.
TEST_F(DataParallel, OverTcpAsBetweenMachines) {
  ASSERT_EQ(run(model(dir + "/one") + " --steps 10 --eval-interval 5").code, 0);
  Result tcp = run_env(mpirun(2, "--mca btl tcp,self --mca btl_tcp_if_include lo"),
                       model(dir + "/tcp") + " --steps 10 --eval-interval 5");
  ASSERT_EQ(tcp.code, 0) << tcp.out;
  expect_same_run(dir + "/one", dir + "/tcp", 10, 1e-5);
}

TEST_F(DataParallel, OtherSubcommandsRefuseToRunAsManyRanks) {
  ASSERT_EQ(run(tiny(dir + "/s") + " --steps 2 --eval-interval 2").code, 0);
  Result r = run_env(mpirun(2), "sample --checkpoint " + dir + "/s --tokens 5");
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(count(r.out, "tapelm sample: runs in one process"), 1u) << r.out;
}

#else

TEST(DataParallel, NeedsMpi) { GTEST_SKIP() << "tapelm was built without MPI (libopenmpi-dev)"; }

#endif
