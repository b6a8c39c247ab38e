// libFuzzer harness: any bytes as a model config (a checkpoint's "config"
// metadata or a --config file's model fields). from_json must return a
// validated config or throw tapelm::Error. Built and run by ./dev.sh fuzz.
#include <cstdint>
#include <string>

#include "autograd/error.h"
#include "nn/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    tapelm::nn::ModelConfig::from_json(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const tapelm::Error&) {
  }
  return 0;
}
