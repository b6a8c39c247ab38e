#include "autograd/device.h"

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/runtime.h"
#include "autograd/error.h"

namespace tapelm {

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::cpu;
  if (name == "cuda") return Device::cuda;
  throw Error(fmt::format("device: '{}' is not a device; the devices are cpu, cuda", name));
}

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::fp32;
  if (name == "bf16") return Precision::bf16;
  throw Error(fmt::format("precision: '{}' is not a precision; the precisions are fp32, bf16", name));
}

void set_gpu_precision(Precision p) {
  cuda::set_product_precision(p == Precision::bf16 ? cuda::ProductPrecision::bf16 : cuda::ProductPrecision::fp32);
}

Precision gpu_precision() {
  return cuda::product_precision() == cuda::ProductPrecision::bf16 ? Precision::bf16 : Precision::fp32;
}

std::string why_no_cuda() { return cuda::why_unavailable(); }

bool cuda_available() { return why_no_cuda().empty(); }

void require_cuda(const std::string& what) {
  const std::string why = why_no_cuda();
  TAPELM_CHECK(why.empty(), "{}: {}", what, why);
}

}  // namespace tapelm
