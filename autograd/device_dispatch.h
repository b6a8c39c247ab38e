// Which device an op runs on, and the named CPU fallback for ops that have no
// CUDA kernel yet. Every op calls op_device() at its entry (as it checks
// dtypes): its tensor inputs must share a device, except index and mask
// tensors (int32, bool) that stay on the host and are uploaded by the op
// that reads them. An op without a kernel runs on the CPU through
// cpu_fallback(): its inputs go to the host and its result comes back, both
// by the recorded to_device op, so gradients flow; each use is counted
// (fallback_counts) and the op must be on the fallback list, so none falls
// back silently.
#pragma once
#include <initializer_list>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "autograd/cuda/kernels.h"
#include "autograd/ops.h"
#include "autograd/tensor.h"

namespace tapelm {

// The device of the op's floating-point inputs (undefined tensors and host
// index/mask tensors ignored); an Error naming the op if they differ.
Device op_device(const char* op, std::initializer_list<const Tensor*> inputs);

// An input of shape `in` broadcast to `out` as a kernel's strided view (0
// strides where it stretches); an Error naming the op past cuda::kMaxDims.
cuda::Strided cuda_broadcast_view(const char* op, const Shape& in, const Shape& out);

// The ops with a CUDA kernel, and those that run on the CPU through the
// fallback when given cuda tensors (tests check ops.h against both).
const std::vector<std::string>& cuda_kernel_ops();
const std::vector<std::string>& cpu_fallback_ops();

// Times each op fell back since the start (or reset_fallback_counts()).
std::map<std::string, int64_t> fallback_counts();
void reset_fallback_counts();

namespace detail {
void count_fallback(const char* op);  // throws if `op` is not on the fallback list
}

// Runs `f` on host copies of `inputs` and returns its result on the GPU:
//   return cpu_fallback("cumsum", {a}, [&](const std::vector<Tensor>& c) { return cumsum(c[0], axis); });
template <class F>
auto cpu_fallback(const char* op, const std::vector<Tensor>& inputs, F&& f) {
  detail::count_fallback(op);
  std::vector<Tensor> host;
  host.reserve(inputs.size());
  for (const Tensor& t : inputs) host.push_back(t.defined() && t.is_cuda() ? to_device(t, Device::cpu) : t);
  auto result = f(host);
  if constexpr (std::is_same_v<decltype(result), Tensor>) {
    return result.defined() ? to_device(result, Device::cuda) : result;
  } else {  // std::vector<Tensor>
    for (Tensor& r : result)
      if (r.defined()) r = to_device(r, Device::cuda);
    return result;
  }
}

// The same for an op that carries a decoding state (`state` may be null: the
// training form). The state goes to the host, `f` runs with a pointer to the
// host copy (null when `state` is), and the updated state comes back:
//   return cpu_fallback_with_state("selective_scan", {u, ...}, state,
//       [&](const std::vector<Tensor>& c, Tensor* s) { return selective_scan(c[0], ..., s); });
template <class F>
Tensor cpu_fallback_with_state(const char* op, const std::vector<Tensor>& inputs, Tensor* state, F&& f) {
  Tensor host_state = state && state->defined() ? state->to(Device::cpu) : Tensor();
  Tensor out =
      cpu_fallback(op, inputs, [&](const std::vector<Tensor>& c) { return f(c, state ? &host_state : nullptr); });
  if (state) *state = host_state.defined() ? host_state.to(Device::cuda) : Tensor();
  return out;
}

}  // namespace tapelm
