// Dropout as a module: active only in train mode (Module::train/eval), masks
// drawn from the generator it is given, so a seeded run is reproducible.
#pragma once
#include "autograd/ops.h"
#include "nn/module.h"

namespace tapelm::nn {

class Dropout : public Module {
 public:
  Dropout(double p, Generator* gen) : p(p), gen_(gen) {
    TAPELM_CHECK(p >= 0 && p < 1, "Dropout: probability {} is not in [0, 1)", p);
    TAPELM_CHECK(p == 0 || gen, "Dropout: p = {} needs a generator", p);
  }
  Tensor forward(const Tensor& x) const { return training() && p > 0 ? dropout(x, p, true, *gen_) : x; }
  const double p;

 private:
  Generator* gen_;
};

}  // namespace tapelm::nn
