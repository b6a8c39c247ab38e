#include "train/thread_policy.h"

#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace tapelm::train {

namespace {
int available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return (int)sysconf(_SC_NPROCESSORS_ONLN);
}
}  // namespace

int requested_threads(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const char* value = nullptr;
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) value = argv[i + 1];
    else if (std::strncmp(argv[i], "--threads=", 10) == 0) value = argv[i] + 10;
    if (value && std::atoi(value) > 0) return std::atoi(value);
  }
  if (const char* env = std::getenv("OMP_NUM_THREADS"); env && std::atoi(env) > 0) return std::atoi(env);
  return available_cpus();
}

void choose_wait_policy(int argc, char** argv) {
  if (std::getenv("OMP_WAIT_POLICY")) return;
  setenv("OMP_WAIT_POLICY", requested_threads(argc, argv) <= available_cpus() ? "active" : "passive", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

}  // namespace tapelm::train
