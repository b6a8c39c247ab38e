#include "train/memory.h"

#include <sys/resource.h>
#include <unistd.h>

#include <fstream>

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

}  // namespace tapelm::train
