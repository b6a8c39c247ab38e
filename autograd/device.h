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

// The precision of the GPU's products (matmul, linear, attention's two
// products), for every product until changed: fp32 (exact float32, no TF32)
// or bf16 (PyTorch autocast's recipe for them: the operands rounded to
// bfloat16, products accumulated and written in float32). Parameters,
// gradients, optimizer state, norms, softmax and the loss stay float32. The
// CPU computes in its tensors' dtype whatever this says.
enum class Precision { fp32, bf16 };
inline const char* precision_name(Precision p) { return p == Precision::fp32 ? "fp32" : "bf16"; }
Precision parse_precision(const std::string& name);  // an Error naming the choices otherwise
void set_gpu_precision(Precision p);
Precision gpu_precision();

// Sets the GPU's product precision until the scope ends, then restores the
// one before. An op's backward runs in the precision its forward ran in (the
// tape records it), so a scope around a forward covers its backward too.
class PrecisionScope {
 public:
  explicit PrecisionScope(Precision p) : saved_(gpu_precision()) { set_gpu_precision(p); }
  ~PrecisionScope() { set_gpu_precision(saved_); }
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;

 private:
  Precision saved_;
};

// Throws one clear Error naming `what` (e.g. "train --device cuda") when the
// CUDA device cannot be used.
void require_cuda(const std::string& what);

}  // namespace tapelm
