#include "train/thread_policy.h"

#include <fmt/core.h>
#include <omp.h>

#include <sched.h>
#include <unistd.h>
#include <Eigen/Core>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "train/distributed.h"

namespace tapelm::train {

namespace {
int online_cpus() { return (int)sysconf(_SC_NPROCESSORS_ONLN); }
int available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return online_cpus();
}
}  // namespace

int default_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS"); env && std::atoi(env) > 0) return std::atoi(env);
  const int cpus = available_cpus(), ranks = launched_local_size();
  if (ranks > 1 && cpus == online_cpus()) return std::max(1, cpus / ranks);
  return cpus;
}

void set_threads(int n) {
  if (n <= 0) return;
  if (const int cpus = available_cpus(); n > cpus)
    fmt::print(stderr,
               "warning: --threads {} is more than the {} CPU(s) this process may use: the threads share them, so "
               "each step is slower than at --threads {}\n",
               n, cpus, cpus);
  omp_set_num_threads(n);
  Eigen::setNbThreads(n);
}

int requested_threads(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const char* value = nullptr;
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      value = argv[i + 1];
    else if (std::strncmp(argv[i], "--threads=", 10) == 0)
      value = argv[i] + 10;
    if (value && std::atoi(value) > 0) return std::atoi(value);
  }
  return default_threads();
}

std::string binding_warning() {
  const int cpus = available_cpus(), ranks = launched_local_size(), share = online_cpus() / std::max(ranks, 1);
  if (ranks == 1 || cpus >= share) return "";
  return "mpirun bound each rank to " + std::to_string(cpus) + " CPU(s) of this machine's " +
         std::to_string(online_cpus()) + " (Open MPI binds each of up to 2 ranks to one core by default); for " +
         std::to_string(share) +
         " threads each, start with `mpirun --bind-to none` or `--map-by slot:PE=" + std::to_string(share) + "`";
}

namespace {
// With OMP_PROC_BIND set, libgomp has already pinned this (initial) thread to
// the first place, and a re-executed process would inherit that one CPU: its
// whole team would then share it (OMP_PROC_BIND=close at 4 threads ran the mid
// shape 4x slower). The places libgomp built cover the CPUs it was given, so
// their union is the affinity to hand on.
void unpin_for_exec() {
  if (omp_get_proc_bind() == omp_proc_bind_false || omp_get_num_places() == 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int place = 0; place < omp_get_num_places(); ++place) {
    std::vector<int> ids(omp_get_place_num_procs(place));
    omp_get_place_proc_ids(place, ids.data());
    for (int id : ids)
      if (id >= 0 && id < CPU_SETSIZE) CPU_SET(id, &set);
  }
  if (CPU_COUNT(&set) > 0) sched_setaffinity(0, sizeof(set), &set);
}
}  // namespace

void choose_wait_policy(int argc, char** argv) {
  if (std::getenv("OMP_WAIT_POLICY")) return;
  unpin_for_exec();  // first: the CPU count below is the process's, not the pinned thread's
  const bool tokenize = argc > 1 && std::strcmp(argv[1], "tokenize") == 0;  // file I/O between regions
  setenv("OMP_WAIT_POLICY", !tokenize && requested_threads(argc, argv) <= available_cpus() ? "active" : "passive", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

}  // namespace tapelm::train
