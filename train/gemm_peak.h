// The machine's practical FLOP/s peak, measured rather than looked up: the
// best of a few float32 GEMMs (Eigen, the same kernel the matmul op uses) on
// the current thread count. MFU everywhere in tapelm is achieved FLOP/s over
// this number.
#pragma once
#include <cstdint>

namespace tapelm::train {

// FLOP/s of the fastest of `repeats` n×n×n GEMMs (2n³ FLOPs each), after one
// warm-up. n = 1024 takes about 10 ms per GEMM at 200 GFLOP/s.
double measure_gemm_peak(int64_t n = 1024, int repeats = 5);

}  // namespace tapelm::train
