#include "autograd/device.h"

#include "autograd/cuda/runtime.h"
#include "autograd/error.h"

namespace tapelm {

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::cpu;
  if (name == "cuda") return Device::cuda;
  throw Error(fmt::format("device: '{}' is not a device; the devices are cpu, cuda", name));
}

std::string why_no_cuda() { return cuda::why_unavailable(); }

bool cuda_available() { return why_no_cuda().empty(); }

void require_cuda(const std::string& what) {
  const std::string why = why_no_cuda();
  TAPELM_CHECK(why.empty(), "{}: {}", what, why);
}

}  // namespace tapelm
