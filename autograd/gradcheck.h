// gradcheck: the analogue of torch.autograd.gradcheck.
//
// For f(inputs) -> output, forms the scalar L = Σ f(x) ⊙ R with a fixed random
// R (so every output element is checked, not only their sum), computes dL/dx
// by backward(), and compares each element with the central difference
//   (L(x + eps·e_i) − L(x − eps·e_i)) / (2·eps)
// in float64. An element passes when |analytic − numeric| ≤ atol + rtol·|numeric|.
// The report names the worst element (input, flat index, both values).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace tapelm {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-8;
  double rtol = 1e-6;
  uint64_t seed = 1234;  // for the projection R
};

struct GradcheckResult {
  bool ok = true;
  double worst_abs_error = 0;  // over all checked elements
  std::string report;          // human-readable; names the worst element
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Inputs must be float64; those with requires_grad are checked.
GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options = {});

}  // namespace tapelm
