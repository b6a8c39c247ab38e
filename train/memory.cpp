#include "train/memory.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "autograd/tensor.h"
#include "train/distributed.h"

namespace tapelm::train {

double resident_mb() {
  std::ifstream f("/proc/self/statm");
  long pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * (double)sysconf(_SC_PAGESIZE) / (1 << 20);
}

double peak_resident_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

namespace {

// The number in a file such as memory.max ("max" or unreadable: -1).
int64_t read_number(const std::string& path) {
  std::ifstream f(path);
  std::string word;
  if (!(f >> word) || word.empty() || !std::isdigit((unsigned char)word[0])) return -1;
  try {
    return std::stoll(word);
  } catch (const std::exception&) {
    return -1;
  }
}

// What this process's cgroup (v2) still allows, or -1 without a limit.
int64_t cgroup_headroom() {
  std::ifstream f("/proc/self/cgroup");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("0::", 0) != 0) continue;  // the v2 hierarchy's line: "0::/path"
    const std::string dir = "/sys/fs/cgroup" + line.substr(3);
    const int64_t max = read_number(dir + "/memory.max"), current = read_number(dir + "/memory.current");
    if (max >= 0 && current >= 0) return std::max<int64_t>(max - current, 0);
  }
  return -1;
}

}  // namespace

int64_t available_memory_bytes() {
  int64_t available = -1;
  std::ifstream f("/proc/meminfo");
  for (std::string key; f >> key;) {
    int64_t kib = 0;
    if (!(f >> kib)) break;
    if (key == "MemAvailable:") available = kib * 1024;
    f.ignore(1 << 10, '\n');
  }
  if (const int64_t cgroup = cgroup_headroom(); cgroup >= 0)
    available = available < 0 ? cgroup : std::min(available, cgroup);
  return available;
}

void limit_tensor_memory(int64_t limit_bytes) {
  if (limit_bytes > 0) {
    set_tensor_memory_limit(limit_bytes, "the limit TAPELM_MEMORY_LIMIT sets");
    return;
  }
  const int64_t available = available_memory_bytes();
  if (available <= 0) return;  // unknown: no cap
  const int ranks = std::max(launched_local_size(), 1);
  set_tensor_memory_limit(available / ranks,
                          ranks == 1 ? "the memory this machine had available when tapelm started"
                                     : fmt::format("this rank's share (1/{}) of the memory this machine had available "
                                                   "when tapelm started",
                                                   ranks));
}

}  // namespace tapelm::train
