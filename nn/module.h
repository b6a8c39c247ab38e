// Module: owns parameters and submodules under hierarchical dotted names
// (`transformer.h.0.attn.c_attn.weight`), PyTorch style. Names are what
// checkpoints, optimizer decay groups and golden files use.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.h"

namespace tapelm::nn {

struct NamedParameter {
  std::string name;
  Tensor tensor;
  // False where the module says so (mamba_ssm's `_no_weight_decay`: A_log, D, dt_bias).
  bool weight_decay = true;
  // Matrices (≥ 2 dims: weights, embeddings) vs vectors (biases, norm gains).
  bool is_matrix() const { return tensor.dim() >= 2; }
  // AdamW decays it: a matrix its module did not exempt (see optim::decay_groups).
  bool decayed() const { return is_matrix() && weight_decay; }
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter once (a tied tensor under its first name), in registration order.
  std::vector<NamedParameter> named_parameters() const;
  // Every name, tied tensors under each of their names (what a checkpoint stores).
  std::vector<NamedParameter> state_dict() const;
  // Copies values in by name (converting dtype). Throws naming any missing,
  // unexpected (when strict) or wrongly shaped entry.
  void load_state_dict(const std::map<std::string, Tensor>& values, bool strict = true);
  int64_t num_parameters() const;
  // This module ("") and every submodule under its dotted name, depth first.
  std::vector<std::pair<std::string, const Module*>> named_modules() const;

  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }
  void zero_grad();
  // Converts every parameter to dtype in place (ties are kept).
  void to(DType dtype);
  // Moves every parameter to `device` in place (gradients dropped).
  void to(Device device);
  // Makes the parameter registered here as `name` be `t` (weight tying: the
  // same tensor then appears under both modules' names).
  void tie_parameter(const std::string& name, const Tensor& t);

 protected:
  // Registers `t` as a trainable parameter under `name` and returns it;
  // weight_decay = false exempts it from weight decay even if it is a matrix.
  Tensor register_parameter(const std::string& name, Tensor t, bool weight_decay = true);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }

 private:
  void collect(const std::string& prefix, std::vector<NamedParameter>& out) const;
  std::vector<NamedParameter> params_;  // under their names in this module
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace tapelm::nn
