// Reading and writing the safetensors format (huggingface/safetensors):
//   8 bytes little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "string", ...}}, then the raw little-endian data.
// PyTorch and HF tools read these files directly. Writes are atomic (temp file
// then rename) and durable (fsync), so a crash never leaves a half-written
// file under the name.
#pragma once
#include <istream>
#include <map>
#include <string>

#include "autograd/tensor.h"

namespace tapelm {

struct TensorFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Throws Error naming the path and what is wrong (missing, truncated, corrupt).
TensorFile load_safetensors(const std::string& path);
// The same from `size` bytes of a stream; `name` stands for the path in
// messages. Every size in the header is checked before anything is
// allocated, so any bytes at all give a TensorFile or an Error (fuzzed:
// fuzz/safetensors_fuzzer.cpp).
TensorFile read_safetensors(std::istream& in, int64_t size, const std::string& name);
void save_safetensors(const std::string& path, const TensorFile& file);

}  // namespace tapelm
