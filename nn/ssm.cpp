#include "nn/ssm.h"

#include <cmath>

namespace tapelm::nn {

Tensor dt_bias_init(int64_t n, Generator& gen) {
  Tensor b = Tensor::empty({n}, DType::f32);
  for (int64_t i = 0; i < n; ++i) {
    double dt = std::exp(std::log(0.001) + gen.uniform() * (std::log(0.1) - std::log(0.001)));
    dt = std::max(dt, 1e-4);
    b.set_flat(i, dt + std::log(-std::expm1(-dt)));
  }
  return b;
}

int64_t MambaState::bytes() const {
  int64_t n = 0;
  for (const Tensor* t : {&conv, &S}) n += t->nbytes();
  return n;
}

}  // namespace tapelm::nn
