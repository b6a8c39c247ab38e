// Optimizers over named parameters, in parameter groups (each with its own lr
// and weight decay), with state that checkpoints save and restore by name.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "autograd/safetensors.h"
#include "nn/module.h"

namespace tapelm::optim {

struct ParamGroup {
  std::string name;  // "decay" / "no_decay" or user-chosen
  std::vector<nn::NamedParameter> params;
  double lr = 1e-3;  // the schedule overwrites this each step
  double weight_decay = 0.0;
};

// nanoGPT's grouping: every parameter of ≥ 2 dims (matmul weights, embeddings)
// is decayed, every 1-D parameter (biases, norm gains, DyT α) is not, and
// neither is a parameter its module exempts (Mamba's A_log, D, dt_bias, as
// mamba_ssm's `_no_weight_decay`).
std::vector<ParamGroup> decay_groups(const nn::Module& model, double weight_decay);
// "decay: 26 tensors, 800,128 parameters; no_decay: ..." for the log.
std::string describe_groups(const std::vector<ParamGroup>& groups);

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update from the parameters' current .grad (parameters without a grad are skipped).
  virtual void step() = 0;
  void set_lr(double lr) {
    for (auto& g : groups_) g.lr = lr;
  }
  std::vector<ParamGroup>& groups() { return groups_; }
  int64_t steps_taken() const { return step_; }
  // State for checkpoints: every slot tensor as "<slot>.<parameter name>",
  // with the optimizer's kind and step in the metadata.
  TensorFile state() const;
  // Restores state(); throws naming a wrong kind or a missing or mis-shaped slot.
  void load_state(const TensorFile& f);

 protected:
  // kind: "adamw" / "sgd"; slot_names: the per-parameter state it keeps.
  Optimizer(std::vector<ParamGroup> groups, std::string kind, std::vector<std::string> slot_names)
      : groups_(std::move(groups)), kind_(std::move(kind)), slot_names_(std::move(slot_names)) {}
  // The state tensor `slot` of parameter p, created as zeros on first use.
  Tensor& slot(const std::string& slot, const nn::NamedParameter& p);
  bool has_slot(const std::string& slot, const std::string& param) const;

  std::vector<ParamGroup> groups_;
  int64_t step_ = 0;

 private:
  std::string kind_;
  std::vector<std::string> slot_names_;
  std::map<std::string, std::map<std::string, Tensor>> slots_;  // slot -> parameter -> tensor
};

// torch.optim.AdamW (Loshchilov & Hutter 2019), non-amsgrad, exactly:
//   θ ← θ·(1 − lr·λ)
//   m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
//   θ ← θ − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
class AdamW : public Optimizer {
 public:
  AdamW(std::vector<ParamGroup> groups, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);
  void step() override;
  double beta1, beta2, eps;
};

// torch.optim.SGD with momentum μ (dampening 0, not Nesterov):
//   g ← g + λ·θ;  b ← μ·b + g;  θ ← θ − lr·b
class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, double momentum = 0.9);
  void step() override;
  double momentum;
};

// Scales all gradients so their global L2 norm is at most max_norm (as
// torch.nn.utils.clip_grad_norm_: coefficient max_norm/(norm + 1e-6) when < 1).
// Returns the norm before clipping.
double clip_grad_norm(const std::vector<ParamGroup>& groups, double max_norm);

}  // namespace tapelm::optim
