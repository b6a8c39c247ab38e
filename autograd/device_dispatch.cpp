#include "autograd/device_dispatch.h"

#include <algorithm>
#include <mutex>

namespace tapelm {

namespace {
std::mutex g_fallback_mutex;
std::map<std::string, int64_t> g_fallbacks;
}  // namespace

Device op_device(const char* op, std::initializer_list<const Tensor*> inputs) {
  const Tensor* first = nullptr;
  for (const Tensor* t : inputs) {
    if (!t || !t->defined() || !is_floating(t->dtype())) continue;
    if (!first) {
      first = t;
    } else if (t->device() != first->device()) {
      throw Error(fmt::format("{}: inputs on different devices: {} {} on {} and {} {} on {}", op,
                              dtype_name(first->dtype()), first->str_shape(), device_name(first->device()),
                              dtype_name(t->dtype()), t->str_shape(), device_name(t->device())));
    }
  }
  return first ? first->device() : Device::cpu;
}

cuda::Strided cuda_broadcast_view(const char* op, const Shape& in, const Shape& out) {
  TAPELM_CHECK((int)out.size() <= cuda::kMaxDims, "{}: {} dimensions on cuda (at most {})", op, out.size(),
               cuda::kMaxDims);
  cuda::Strided v;
  v.ndim = (int)out.size();
  const Shape st = broadcast_strides(in, out);
  for (int d = 0; d < v.ndim; ++d) v.size[d] = out[d], v.stride[d] = st[d];
  return v;
}

const std::vector<std::string>& cuda_kernel_ops() {
  static const std::vector<std::string> ops = {"add",
                                               "sub",
                                               "mul",
                                               "div",
                                               "add_scalar",
                                               "mul_scalar",
                                               "rsub_scalar",
                                               "rdiv_scalar",
                                               "pow",
                                               "neg",
                                               "exp",
                                               "log",
                                               "sqrt",
                                               "tanh",
                                               "sigmoid",
                                               "relu",
                                               "gelu",
                                               "gelu_tanh",
                                               "silu",
                                               "softplus",
                                               "elu",
                                               "square",
                                               "matmul",
                                               "linear",
                                               "sum",
                                               "mean",
                                               "sum_to",
                                               "reshape",
                                               "unsqueeze",
                                               "squeeze",
                                               "permute",
                                               "transpose",
                                               "slice",
                                               "concat",
                                               "split",
                                               "chunk",
                                               "expand",
                                               "to_device",
                                               "embedding",
                                               "softmax",
                                               "log_softmax",
                                               "layer_norm",
                                               "rms_norm",
                                               "cross_entropy",
                                               "linear_cross_entropy",
                                               "scaled_dot_product_attention",
                                               "attention_qkv",
                                               "attention_mask",
                                               "above_diagonal",  // made on the host, copied
                                               "dropout",
                                               "masked_fill",
                                               "causal_conv1d",
                                               "gated_recurrence",
                                               "selective_scan",
                                               "delta_rule",
                                               "decay_scores",
                                               "unit_tril_inverse",
                                               "cumsum"};
  return ops;
}

const std::vector<std::string>& cpu_fallback_ops() {
  static const std::vector<std::string> ops = {"max", "scale_norm", "where", "logical_not", "gau_attention"};
  return ops;
}

std::map<std::string, int64_t> fallback_counts() {
  std::lock_guard<std::mutex> lock(g_fallback_mutex);
  return g_fallbacks;
}

void reset_fallback_counts() {
  std::lock_guard<std::mutex> lock(g_fallback_mutex);
  g_fallbacks.clear();
}

namespace detail {
void count_fallback(const char* op) {
  const auto& list = cpu_fallback_ops();
  TAPELM_CHECK(std::find(list.begin(), list.end(), op) != list.end(),
               "{}: has no CUDA kernel and is not on the CPU fallback list (autograd/device_dispatch.cpp)", op);
  std::lock_guard<std::mutex> lock(g_fallback_mutex);
  ++g_fallbacks[op];
}
}  // namespace detail

}  // namespace tapelm
