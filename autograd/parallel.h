// When an op's loop is worth an OpenMP team. Waking the team costs a few
// microseconds (with spinning workers, about 1-2 µs on 16 cores); one core
// streams about 16k floats through an elementwise op in that time. Below this
// many elements a loop runs on the calling thread.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace tapelm {

inline constexpr int64_t kParallelElements = int64_t(1) << 14;

// ⌈n / d⌉ for n ≥ 0, d > 0: how many blocks of d cover n.
inline constexpr int64_t ceil_div(int64_t n, int64_t d) { return (n + d - 1) / d; }

// Calls body(begin, length) over [0, n) in one contiguous chunk per thread,
// with at least kParallelElements elements per chunk (on the calling thread
// alone below that, or inside a parallel region).
template <class Body>
void parallel_chunks(int64_t n, Body body) {
  const int64_t chunks = ceil_div(n, kParallelElements);
  const int threads = omp_in_parallel() ? 1 : (int)std::min<int64_t>(omp_get_max_threads(), chunks);
  if (threads <= 1) {
    body(int64_t(0), n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    body(begin, end - begin);
  }
}

}  // namespace tapelm
