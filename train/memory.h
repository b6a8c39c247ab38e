// The process's memory: what it holds (the benchmarks and `sample --stats`
// report it) and what the machine has left for it (the cap on tapelm's
// tensors, so an impossible size is refused instead of killed).
#pragma once
#include <cstdint>

namespace tapelm::train {

double resident_mb();       // resident set now (/proc/self/statm), MiB
double peak_resident_mb();  // the largest resident set so far (getrusage), MiB

// The bytes this process can still take: MemAvailable (/proc/meminfo), or
// less where its cgroup (v2: memory.max − memory.current) caps it; -1 when
// neither can be read.
int64_t available_memory_bytes();

// Caps the bytes of live tensors (set_tensor_memory_limit) at what is
// available now, shared among the ranks an mpirun job starts on this machine;
// `limit_bytes` > 0 (TAPELM_MEMORY_LIMIT, for tests) replaces the machine's figure.
void limit_tensor_memory(int64_t limit_bytes = 0);

}  // namespace tapelm::train
