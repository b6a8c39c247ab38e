// The tape: a flat list of nodes in the order ops ran.
//
// Each differentiable op computes its output and then calls record(), which,
// when grad mode is on and some input requires grad, appends a Node holding
// the inputs, the output and a closure that maps the output's gradient to the
// inputs' gradients. backward() walks the tape in reverse, accumulates into
// `.grad`, frees each node (and so the tensors it saved) as soon as it has run,
// and finally clears the tape: memory does not grow step after step.
//
// A backward closure is written with ordinary ops; backward() runs it in
// no-grad mode, so it records nothing, and books its FLOPs as the op's
// backward FLOPs.
#pragma once
#include <functional>
#include <vector>

#include "autograd/tensor.h"

namespace tapelm {

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node {
  const char* op;
  int component;  // FlopCounter component path in force when the op ran
  // The GPU's product precision in force when the op ran: its backward runs in
  // it, whatever the precision is then (as autocast's saved operands do in
  // PyTorch), so a PrecisionScope around a forward covers its backward too.
  Precision precision = Precision::fp32;
  std::vector<std::shared_ptr<TensorImpl>> inputs;
  std::shared_ptr<TensorImpl> output;
  BackwardFn backward;  // returns one gradient per input (undefined = none)
};

// Is recording on? (Off inside NoGradGuard and while backward runs.)
bool grad_enabled();

// RAII: disables recording in its scope, like torch.no_grad().
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// Records `output = op(inputs)` if any input requires grad and grad mode is on;
// returns `output` (marked requires_grad, non-leaf when recorded).
Tensor record(const char* op, Tensor output, const std::vector<Tensor>& inputs, BackwardFn backward);

// Back-propagates from `root`. Without `grad_output`, root must have one element
// (the loss) and is seeded with 1. Gradients accumulate into existing `.grad`.
void backward(const Tensor& root, const Tensor& grad_output = Tensor());

// Number of nodes waiting on the tape (0 after backward or clear_tape()).
size_t tape_size();
// Drops every recorded node without computing gradients (e.g. after an eval forward).
void clear_tape();

}  // namespace tapelm
