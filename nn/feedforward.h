// Position-wise feed-forward block.
//   gelu / relu:  c_proj(act(c_fc(x)))                       (GPT-2, nanoGPT)
//   swiglu:       c_proj(silu(c_gate(x)) ⊙ c_fc(x))          (Shazeer 2020)
// followed by dropout. Hidden width defaults to 4·d.
#pragma once
#include <memory>
#include <string>

#include "nn/dropout.h"
#include "nn/linear.h"

namespace tapelm::nn {

class FeedForward : public Module {
 public:
  // proj_std: init std of c_proj.weight (GPT-2 scales it by 1/√(2·n_layer)).
  FeedForward(int64_t dim, int64_t hidden, const std::string& kind, bool bias, double dropout, Generator& init_gen,
              Generator* dropout_gen, double proj_std = 0.02);
  Tensor forward(const Tensor& x) const;
  std::string kind;
  std::shared_ptr<Linear> c_fc, c_gate, c_proj;  // c_gate only for swiglu
  std::shared_ptr<Dropout> drop;
};

}  // namespace tapelm::nn
