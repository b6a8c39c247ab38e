#include "optim/schedule.h"

#include <cmath>

#include "autograd/error.h"

namespace tapelm::optim {

double Schedule::at(int64_t step) const {
  if (kind == "constant") return lr;
  TAPELM_CHECK(kind == "cosine", "schedule: unknown kind '{}' (constant or cosine)", kind);
  if (step < warmup) return lr * (double)(step + 1) / (double)(warmup + 1);
  if (step >= decay_steps) return min_lr;
  const double progress = (double)(step - warmup) / (double)std::max<int64_t>(1, decay_steps - warmup);
  return min_lr + 0.5 * (1.0 + std::cos(M_PI * progress)) * (lr - min_lr);
}

}  // namespace tapelm::optim
