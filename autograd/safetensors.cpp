#include "autograd/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/json_int.h"
#include "autograd/regular_file.h"

namespace tapelm {

namespace {

const char* st_dtype(DType d) {
  switch (d) {
    case DType::f32:
      return "F32";
    case DType::f64:
      return "F64";
    case DType::i32:
      return "I32";
    case DType::b8:
      return "BOOL";
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
  check_regular_file(path, "safetensors");
  std::ifstream in(path, std::ios::binary);
  TAPELM_CHECK(in.good(), "safetensors: cannot open {}", path);
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  in.seekg(0);
  return read_safetensors(in, size, path);
}

TensorFile read_safetensors(std::istream& in, int64_t size, const std::string& path) {
  TAPELM_CHECK(size >= 8, "safetensors: {} is truncated ({} bytes, no header)", path, size);
  uint64_t header_len = 0;
  unsigned char len_bytes[8];
  in.read((char*)len_bytes, 8);
  TAPELM_CHECK(in.gcount() == 8, "safetensors: {}: read error in the first 8 bytes", path);
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  TAPELM_CHECK(header_len <= (uint64_t)size - 8,
               "safetensors: {} is truncated or corrupt (header of {} bytes in a {}-byte file)", path, header_len,
               size);
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  TAPELM_CHECK(in.good(), "safetensors: {}: read error in the header", path);
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
  struct Range {
    int64_t begin, end;
    std::string name;
  };
  std::vector<Range> ranges;  // each tensor's bytes: the format forbids two to overlap
  for (auto& item : j.items()) {
    const std::string name = item.key();  // not a structured binding: the lambda below captures it
    const nlohmann::json& info = item.value();
    try {
      if (name == "__metadata__") {
        TAPELM_CHECK(info.is_object(), "safetensors: {}: __metadata__ is not an object", path);
        for (auto& [k, v] : info.items()) file.metadata[k] = v.is_string() ? v.get<std::string>() : v.dump();
        continue;
      }
      // Integer lists that fit int64, or nothing.
      auto integers = [&](const char* field) {
        const nlohmann::json& list = info.at(field);
        TAPELM_CHECK(list.is_array(), "safetensors: {}: tensor '{}': {} is not a list", path, name, field);
        std::vector<int64_t> v;
        for (const auto& x : list) {
          const auto i = json_int64(x);
          TAPELM_CHECK(i.has_value(), "safetensors: {}: tensor '{}': {} holds {}, not an integer", path, name, field,
                       x.dump());
          v.push_back(*i);
        }
        return v;
      };
      DType dt = from_st_dtype(info.at("dtype").get<std::string>(), path, name);
      const Shape shape = integers("shape");
      const auto off = integers("data_offsets");
      TAPELM_CHECK(off.size() == 2 && off[0] >= 0 && off[0] <= off[1],
                   "safetensors: {}: tensor '{}' has bad data_offsets", path, name);
      TAPELM_CHECK(off[1] <= data_size, "safetensors: {} is truncated: tensor '{}' ends at byte {} of {} data bytes",
                   path, name, off[1], data_size);
      // Checked before anything is allocated: the shape is the file's word.
      int64_t bytes = -1;
      try {
        bytes = bytes_of(shape, dt);
      } catch (const Error&) {
        throw Error(
            fmt::format("safetensors: {}: tensor '{}' has an impossible shape {} (negative, or too many elements)",
                        path, name, shape_str(shape)));
      }
      TAPELM_CHECK(bytes == off[1] - off[0], "safetensors: {}: tensor '{}' of shape {} does not match its {} bytes",
                   path, name, shape_str(shape), off[1] - off[0]);
      ranges.push_back({off[0], off[1], name});
      Tensor t = Tensor::empty(shape, dt);
      in.seekg(data_start + off[0]);
      in.read((char*)t.raw_data(), off[1] - off[0]);
      TAPELM_CHECK(in.good(), "safetensors: {}: read error in tensor '{}'", path, name);
      file.tensors[name] = t;
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("safetensors: {}: bad entry for tensor '{}': {}", path, name, e.what()));
    }
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const Range &a = ranges[i - 1], &b = ranges[i];
    TAPELM_CHECK(b.begin >= a.end || a.begin == a.end || b.begin == b.end,
                 "safetensors: {}: tensors '{}' (bytes {}..{}) and '{}' (bytes {}..{}) overlap, which the format "
                 "forbids",
                 path, a.name, a.begin, a.end, b.name, b.begin, b.end);
  }
  return file;
}

namespace {

// Writes all of `n` bytes to fd, or throws naming the file and the OS's reason.
void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    TAPELM_CHECK(w > 0, "safetensors: cannot write {}: {}", path, std::strerror(errno));
    p += w;
    n -= (size_t)w;
  }
}

// Makes a rename inside `dir` durable (fsync(2) on the directory).
void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  TAPELM_CHECK(fd >= 0, "safetensors: cannot open directory {}: {}", dir, std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  TAPELM_CHECK(rc == 0, "safetensors: cannot sync directory {}: {}", dir, std::strerror(err));
}

}  // namespace

// Crash-safe and durable: the bytes go to PATH.tmp, which is fsync'ed, then
// renamed over PATH, and the directory is fsync'ed. A crash or power loss at
// any point leaves either the old file or the new one, never a torn one; a
// failed write (full disk, file-size limit) throws with the OS's reason and
// leaves PATH untouched.
void save_safetensors(const std::string& path, const TensorFile& file) {
  nlohmann::json j = nlohmann::json::object();
  int64_t offset = 0;
  for (auto& [name, t] : file.tensors) {
    const int64_t bytes = t.nbytes();
    j[name] = {{"dtype", st_dtype(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!file.metadata.empty()) j["__metadata__"] = file.metadata;
  std::string header = j.dump();
  while ((header.size() + 8) % 8) header += ' ';  // align the data to 8 bytes
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TAPELM_CHECK(fd >= 0, "safetensors: cannot write {}: {}", tmp, std::strerror(errno));
  bool closed = false;
  try {
    uint64_t n = header.size();
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = (n >> (8 * i)) & 0xff;
    write_all(fd, len_bytes, 8, tmp);
    write_all(fd, header.data(), header.size(), tmp);
    for (auto& [name, t] : file.tensors) {
      const Tensor host = t.is_cuda() ? t.to(Device::cpu) : t;  // a file holds host bytes, whatever the device
      write_all(fd, host.raw_data(), host.numel() * dtype_size(host.dtype()), tmp);
    }
    TAPELM_CHECK(::fsync(fd) == 0, "safetensors: cannot sync {}: {}", tmp, std::strerror(errno));
    closed = true;
    TAPELM_CHECK(::close(fd) == 0, "safetensors: cannot write {}: {}", tmp, std::strerror(errno));
  } catch (...) {
    if (!closed) ::close(fd);
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw Error(fmt::format("safetensors: cannot rename {} to {}: {}", tmp, path, std::strerror(err)));
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  sync_directory(dir.empty() ? "." : dir);
}

}  // namespace tapelm
