// The machine's practical FLOP/s peak, measured rather than looked up: the
// best of a few float32 GEMMs (Eigen, the same kernel the matmul op uses) on
// the current thread count. MFU everywhere in tapelm is achieved FLOP/s over
// this number.
#pragma once
#include <cstdint>

namespace tapelm::train {

// FLOP/s of the fastest of `repeats` n×n×n GEMMs (2n³ FLOPs each), after one
// warm-up. n = 1024 takes about 10 ms per GEMM at 200 GFLOP/s. On a machine
// so slow (or a build so instrumented) that the GEMMs pass `max_seconds`, it
// stops there, after at least one timed GEMM: a sanitizer build would spend
// 10 s of every run on it.
double measure_gemm_peak(int64_t n = 1024, int repeats = 5, double max_seconds = 0.5);

}  // namespace tapelm::train
