// libFuzzer harness: any bytes as a safetensors file (a checkpoint's
// model.safetensors or optimizer state). The reader must return a TensorFile
// or throw tapelm::Error; anything else (a crash, a sanitizer report, another
// exception) is a finding. Built and run by ./dev.sh fuzz.
#include <cstdint>
#include <sstream>
#include <string>

#include "autograd/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  try {
    tapelm::read_safetensors(in, (int64_t)size, "fuzz.safetensors");
  } catch (const tapelm::Error&) {
  }
  return 0;
}
