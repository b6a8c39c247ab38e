#include "autograd/tape.h"

#include "autograd/accumulate.h"
#include "autograd/flops.h"
#include "autograd/profiler.h"

namespace tapelm {

namespace {
std::vector<Node> g_tape;
bool g_grad_enabled = true;
bool g_in_backward = false;  // ops run by backward closures are not forward time

// Adds grad into impl->grad. The first gradient is taken over without a copy when
// nothing else can see its storage; otherwise it is cloned, because later
// accumulation writes into it in place.
void accumulate(TensorImpl& impl, Tensor grad) {
  if (!impl.grad) {
    bool exclusive = grad.impl_ptr().use_count() == 1 && grad.impl().storage.use_count() == 1 &&
                     grad.impl().offset == 0 && grad.dtype() == impl.dtype;
    Tensor owned = exclusive ? grad : grad.to(impl.dtype);
    owned.impl().requires_grad = false;
    owned.impl().is_leaf = true;
    impl.grad = owned.impl_ptr();
    return;
  }
  Tensor acc(impl.grad);
  add_(acc, grad);
}
}  // namespace

bool grad_enabled() { return g_grad_enabled; }

NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

Tensor record(const char* op, Tensor output, const std::vector<Tensor>& inputs, BackwardFn backward) {
  if (!g_in_backward) Profiler::book_forward(op, FlopCounter::current_component());
  if (!g_grad_enabled) return output;
  bool any = false;
  for (const Tensor& t : inputs) any = any || (t.defined() && t.requires_grad());
  if (!any) return output;
  output.impl().requires_grad = true;
  output.impl().is_leaf = false;
  Node node{op, FlopCounter::current_component(), gpu_precision(), {}, output.impl_ptr(), std::move(backward)};
  node.inputs.reserve(inputs.size());
  for (const Tensor& t : inputs) node.inputs.push_back(t.defined() ? t.impl_ptr() : nullptr);
  g_tape.push_back(std::move(node));
  return output;
}

void backward(const Tensor& root, const Tensor& grad_output) {
  TAPELM_CHECK(root.requires_grad(), "backward: the tensor {} does not require grad (no recorded op leads to it)",
               root.str_shape());
  Tensor seed = grad_output;
  if (!seed.defined()) {
    TAPELM_CHECK(root.numel() == 1, "backward: a gradient must be given for a non-scalar output of shape {}",
                 root.str_shape());
    seed = full(root.shape(), 1.0, root.dtype(), root.device());
  }
  TAPELM_CHECK(seed.shape() == root.shape(), "backward: gradient of shape {} for an output of shape {}",
               seed.str_shape(), root.str_shape());
  NoGradGuard no_grad;
  struct InBackward {
    InBackward() { g_in_backward = true; }
    ~InBackward() { g_in_backward = false; }
  } in_backward;
  // However it ends (an op's backward may throw), the tape is left empty: a
  // later backward must never walk half-run nodes.
  struct ClearTapeAtExit {
    ~ClearTapeAtExit() { g_tape.clear(); }
  } clear_at_exit;
  accumulate(root.impl(), std::move(seed));
  for (auto it = g_tape.rbegin(); it != g_tape.rend(); ++it) {
    Node& node = *it;
    if (node.output->grad) {
      std::vector<Tensor> grads;
      {
        FlopCounter::BackwardScope scope(node.op, node.component);
        const PrecisionScope as_recorded(node.precision);
        if (Profiler::enabled()) {  // clock reads only when profiling
          const Profiler::Span span = Profiler::begin();
          grads = node.backward(Tensor(node.output->grad));
          Profiler::book_backward(node.op, node.component, span);
        } else {
          grads = node.backward(Tensor(node.output->grad));
        }
      }
      TAPELM_CHECK(grads.size() == node.inputs.size(), "backward: op {} returned {} gradients for {} inputs", node.op,
                   grads.size(), node.inputs.size());
      for (size_t i = 0; i < grads.size(); ++i) {
        TensorImpl* in = node.inputs[i].get();
        if (!in || !in->requires_grad || !grads[i].defined()) continue;
        TAPELM_CHECK(grads[i].shape() == in->shape,
                     "backward: op {} gave a gradient of shape {} for input {} of shape {}", node.op,
                     grads[i].str_shape(), i, shape_str(in->shape));
        accumulate(*in, std::move(grads[i]));
      }
      if (!node.output->retain_grad) node.output->grad.reset();
    }
    // Free what this node saved as soon as it has run.
    node = Node{};
  }
  g_tape.clear();
  Profiler::mark();
}

size_t tape_size() { return g_tape.size(); }
void clear_tape() { g_tape.clear(); }

}  // namespace tapelm
