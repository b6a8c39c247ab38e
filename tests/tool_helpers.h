// Running the tapelm tool from a test: a fixture with a small corpus and a
// tiny model, the tool's exit code and output, its log, and a tool started in
// the background (to be signalled or killed).
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "autograd/safetensors.h"
#include "tests/test_helpers.h"

namespace tapelm::testing {

namespace fs = std::filesystem;

struct Result {
  int code;
  std::string out;
};

// The tool run with an environment prefix (e.g. "env A=1"), output captured.
inline Result run_env(const std::string& env, const std::string& args) {
  std::string cmd = env + " " + std::string(TAPELM_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

inline Result run(const std::string& args) { return run_env("", args); }

class Tool : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = (fs::temp_directory_path() / ("tapelm_tool_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name()))
              .string();
    fs::remove_all(dir);
    fs::create_directories(dir);
    corpus = dir + "/corpus.txt";
    std::ofstream f(corpus);
    for (int i = 0; i < 60; ++i)
      f << "To be, or not to be, that is the question.\n%\nWhether 'tis nobler in the mind.\n%\n";
  }
  void TearDown() override { fs::remove_all(dir); }
  // A tiny, fast model; dropout on so resume must restore the dropout RNG too.
  std::string tiny(const std::string& out) {
    return "train --data " + corpus + " --out " + out +
           " --n-layer 1 --n-head 2 --n-embd 16 --context 16 --batch 4 --threads 1 --dropout 0.1"
           " --warmup 3 --eval-batches 2 --log-interval 1 --quiet";
  }
  std::string dir, corpus;
};

// The values of `key` in a run's log.jsonl, in order ("loss": one per logged step).
inline std::vector<double> logged(const std::string& run_dir, const std::string& key) {
  std::vector<double> v;
  std::ifstream in(run_dir + "/log.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains(key)) v.push_back(j[key].get<double>());
  }
  return v;
}

// |a - b| <= tol · max(|a|, |b|, 1): relative, and absolute near zero; tol 0 is bit for bit.
inline void expect_close(double a, double b, double tol, const std::string& what) {
  EXPECT_LE(std::abs(a - b), tol * std::max({std::abs(a), std::abs(b), 1.0})) << what << ": " << a << " vs " << b;
}

// Two runs agree to `tol`: every logged training, evaluation and validation
// loss (`steps` of them training losses), and every final weight.
inline void expect_same_run(const std::string& a, const std::string& b, size_t steps, double tol) {
  for (const char* key : {"loss", "train_loss", "val_loss"}) {
    std::vector<double> x = logged(a, key), y = logged(b, key);
    ASSERT_EQ(x.size(), y.size()) << key;
    ASSERT_FALSE(x.empty()) << key;
    if (std::string(key) == "loss") {
      ASSERT_EQ(x.size(), steps);
    }
    for (size_t i = 0; i < x.size(); ++i) expect_close(x[i], y[i], tol, std::string(key) + " #" + std::to_string(i));
  }
  TensorFile wa = load_safetensors(a + "/model.safetensors"), wb = load_safetensors(b + "/model.safetensors");
  for (auto& [name, t] : wa.tensors) {
    std::vector<double> x = t.to_vector(), y = wb.tensors.at(name).to_vector();
    ASSERT_EQ(x.size(), y.size()) << name;
    for (size_t i = 0; i < x.size(); ++i) expect_close(x[i], y[i], tol, name + "[" + std::to_string(i) + "]");
  }
}

inline nlohmann::json last_summary(const std::string& run_dir) {
  nlohmann::json last;
  std::ifstream in(run_dir + "/log.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("summary")) last = j;
  }
  return last;
}

// Starts the tool in the background, stdout and stderr to `log`; its pid.
// `launcher` goes before the tool (e.g. "mpirun -np 2"); the pid is the
// launcher's then.
inline pid_t spawn_tool(const std::string& args, const std::string& log, const std::string& launcher = "") {
  const std::string cmd = "exec " + launcher + " " + std::string(TAPELM_BINARY) + " " + args + " > " + log + " 2>&1";
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    _exit(127);
  }
  return pid;
}

// Whether process `pid` runs the tool and blocks or catches `sig` (/proc's
// SigBlk and SigCgt masks), i.e. a `sig` sent now would be kept, not fatal.
inline bool tool_holds_signal(pid_t pid, int sig) {
  std::error_code ec;
  if (fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec) != fs::path(TAPELM_BINARY)) return false;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  uint64_t held = 0;
  for (std::string line; std::getline(status, line);)
    if (line.rfind("SigBlk:", 0) == 0 || line.rfind("SigCgt:", 0) == 0)
      held |= std::stoull(line.substr(7), nullptr, 16);
  return (held & (uint64_t(1) << (sig - 1))) != 0;
}

// The pids of the processes whose parent is `parent`.
inline std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> kids;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const size_t close = line.rfind(')');  // "pid (comm) state ppid ..."; comm may hold spaces
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    char state;
    pid_t ppid = 0;
    if (rest >> state >> ppid && ppid == parent) kids.push_back((pid_t)std::stol(name));
  }
  return kids;
}

// A file's bytes ("" if it does not exist).
inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Lines in a file (0 if it does not exist yet).
inline int64_t line_count(const std::string& path) {
  std::ifstream in(path);
  return std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n');
}

// Polls `done` every 5 ms for up to `seconds`.
inline bool wait_until(const std::function<bool()>& done, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// Exit code, or 128 + the signal, as a shell reports it.
inline int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace tapelm::testing
