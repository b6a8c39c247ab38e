// Where a tensor's elements live: host memory (`cpu`) or one CUDA GPU's
// memory (`cuda`). Ops run where their inputs are (autograd/device_dispatch.h);
// host code that reads a cuda tensor's elements gets a named error.
#pragma once
#include <string>

namespace tapelm {

enum class Device { cpu, cuda };

inline const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

// "cpu" or "cuda"; an Error naming the choices otherwise.
Device parse_device(const std::string& name);

// Whether this build has the CUDA device and a GPU is there to run it; when
// not, why_no_cuda() says which ("tapelm was built without CUDA", "no CUDA GPU: ...").
bool cuda_available();
std::string why_no_cuda();

// Throws one clear Error naming `what` (e.g. "train --device cuda") when the
// CUDA device cannot be used.
void require_cuda(const std::string& what);

}  // namespace tapelm
