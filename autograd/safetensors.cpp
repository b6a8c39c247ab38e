#include "autograd/safetensors.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

namespace tapelm {

namespace {

const char* st_dtype(DType d) {
  switch (d) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::i32: return "I32";
    case DType::b8: return "BOOL";
  }
  return "?";
}

DType from_st_dtype(const std::string& s, const std::string& path, const std::string& name) {
  if (s == "F32") return DType::f32;
  if (s == "F64") return DType::f64;
  if (s == "I32") return DType::i32;
  if (s == "BOOL") return DType::b8;
  throw Error(fmt::format("safetensors: {}: tensor '{}' has unsupported dtype {}", path, name, s));
}

}  // namespace

TensorFile load_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TAPELM_CHECK(in.good(), "safetensors: cannot open {}", path);
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  in.seekg(0);
  TAPELM_CHECK(size >= 8, "safetensors: {} is truncated ({} bytes, no header)", path, size);
  uint64_t header_len = 0;
  unsigned char len_bytes[8];
  in.read((char*)len_bytes, 8);
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  TAPELM_CHECK(header_len <= (uint64_t)size - 8,
               "safetensors: {} is truncated or corrupt (header of {} bytes in a {}-byte file)",
               path, header_len, size);
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const std::exception& e) {
    throw Error(fmt::format("safetensors: {} has a corrupt header: {}", path, e.what()));
  }
  TAPELM_CHECK(j.is_object(), "safetensors: {} has a corrupt header (not a JSON object)", path);
  const int64_t data_start = 8 + (int64_t)header_len;
  const int64_t data_size = size - data_start;
  TensorFile file;
  for (auto& [name, info] : j.items()) {
    if (name == "__metadata__") {
      for (auto& [k, v] : info.items())
        file.metadata[k] = v.is_string() ? v.get<std::string>() : v.dump();
      continue;
    }
    try {
      DType dt = from_st_dtype(info.at("dtype").get<std::string>(), path, name);
      Shape shape = info.at("shape").get<Shape>();
      auto off = info.at("data_offsets").get<std::vector<int64_t>>();
      TAPELM_CHECK(off.size() == 2 && off[0] >= 0 && off[0] <= off[1],
                   "safetensors: {}: tensor '{}' has bad data_offsets", path, name);
      TAPELM_CHECK(off[1] <= data_size,
                   "safetensors: {} is truncated: tensor '{}' ends at byte {} of {} data bytes",
                   path, name, off[1], data_size);
      // Checked before anything is allocated: the shape is the file's word.
      int64_t bytes = -1;
      try {
        bytes = bytes_of(shape, dt);
      } catch (const Error&) {
        throw Error(fmt::format("safetensors: {}: tensor '{}' has an impossible shape {} (negative, or too many elements)",
                                path, name, shape_str(shape)));
      }
      TAPELM_CHECK(bytes == off[1] - off[0], "safetensors: {}: tensor '{}' of shape {} does not match its {} bytes", path,
                   name, shape_str(shape), off[1] - off[0]);
      Tensor t = Tensor::empty(shape, dt);
      in.seekg(data_start + off[0]);
      in.read((char*)t.raw_data(), off[1] - off[0]);
      TAPELM_CHECK(in.good(), "safetensors: {}: read error in tensor '{}'", path, name);
      file.tensors[name] = t;
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("safetensors: {}: bad entry for tensor '{}': {}", path, name, e.what()));
    }
  }
  return file;
}

void save_safetensors(const std::string& path, const TensorFile& file) {
  nlohmann::json j = nlohmann::json::object();
  int64_t offset = 0;
  for (auto& [name, t] : file.tensors) {
    int64_t bytes = t.numel() * dtype_size(t.dtype());
    j[name] = {{"dtype", st_dtype(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!file.metadata.empty()) j["__metadata__"] = file.metadata;
  std::string header = j.dump();
  while ((header.size() + 8) % 8) header += ' ';  // align the data to 8 bytes
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    TAPELM_CHECK(out.good(), "safetensors: cannot write {}", tmp);
    uint64_t n = header.size();
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = (n >> (8 * i)) & 0xff;
    out.write((const char*)len_bytes, 8);
    out.write(header.data(), header.size());
    for (auto& [name, t] : file.tensors)
      out.write((const char*)t.raw_data(), t.numel() * dtype_size(t.dtype()));
    out.flush();
    TAPELM_CHECK(out.good(), "safetensors: write error on {} (disk full?)", tmp);
  }
  TAPELM_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "safetensors: cannot rename {} to {}",
               tmp, path);
}

}  // namespace tapelm
