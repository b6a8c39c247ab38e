// to_device: a tensor copied between the host and the GPU, recorded so that
// a graph may cross devices (the CPU fallback does, and so does a model's
// input): the backward copies the gradient back. No FLOPs.
#include "autograd/ops.h"

namespace tapelm {

Tensor to_device(const Tensor& a, Device device) {
  const Device from = a.device();
  if (device == Device::cuda) require_cuda("to_device");
  Tensor out = a.to(device);
  return record("to_device", out, {a}, [from](const Tensor& grad) -> std::vector<Tensor> { return {grad.to(from)}; });
}

}  // namespace tapelm
