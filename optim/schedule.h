// Learning-rate schedules, as functions of the step (0-based), so a resumed
// run recomputes exactly the rate an uninterrupted one would use.
#pragma once
#include <cstdint>
#include <string>

namespace tapelm::optim {

struct Schedule {
  std::string kind = "cosine";  // "constant" or "cosine"
  double lr = 1e-3;             // peak rate
  double min_lr = 1e-4;         // cosine floor
  int64_t warmup = 0;           // linear warm-up steps
  int64_t decay_steps = 0;      // step where the cosine reaches min_lr (then flat)

  // nanoGPT's get_lr: warm-up lr·(s+1)/(warmup+1), then cosine from lr to min_lr.
  double at(int64_t step) const;
};

}  // namespace tapelm::optim
