#include "data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "autograd/error.h"

namespace tapelm::data {

namespace {

// The whole file mapped read-only (an empty file maps to nothing).
std::shared_ptr<const void> map_file(const std::string& path, int64_t& bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  TAPELM_CHECK(fd >= 0, "token file {}: cannot open it: {}", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(fmt::format("token file {}: not a regular file", path));
  }
  bytes = st.st_size;
  if (bytes == 0) {
    ::close(fd);
    return nullptr;
  }
  void* p = mmap(nullptr, (size_t)bytes, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);  // the mapping stays
  TAPELM_CHECK(p != MAP_FAILED, "token file {}: cannot map it: {}", path, std::strerror(errno));
  madvise(p, (size_t)bytes, MADV_RANDOM);  // windows are read at random places: no read-ahead of whole shards
  const size_t len = (size_t)bytes;
  return std::shared_ptr<const void>(p, [len](const void* q) { munmap(const_cast<void*>(q), len); });
}

}  // namespace

TokenFile TokenFile::open(const std::string& path) {
  TokenFile f;
  f.path_ = path;
  int64_t bytes = 0;
  f.map_ = map_file(path, bytes);
  const auto* header = static_cast<const int32_t*>(f.map_.get());
  if (bytes >= kShardHeaderInts * 4 && header[0] == kShardMagic) {
    TAPELM_CHECK(header[1] == 1 || header[1] == 2,
                 "token file {}: shard version {} (1: uint16 tokens, 2: uint32 tokens)", path, header[1]);
    f.token_bytes_ = header[1] == 1 ? 2 : 4;
    f.header_bytes_ = kShardHeaderInts * 4;
    f.count_ = (uint32_t)header[2];
    const int64_t want = f.header_bytes_ + f.count_ * f.token_bytes_;
    TAPELM_CHECK(bytes == want,
                 "token file {}: its header says {} tokens ({} bytes with the header) but the file has {} bytes{}",
                 path, f.count_, want, bytes, bytes < want ? ": it is truncated" : "");
    return f;
  }
  TAPELM_CHECK(bytes % 2 == 0,
               "token file {}: {} bytes is neither a shard (no magic {} in its header) nor raw uint16 tokens (an odd "
               "byte count)",
               path, bytes, kShardMagic);
  f.count_ = bytes / 2;
  return f;
}

void TokenFile::read(int64_t start, int64_t n, int32_t* out) const {
  TAPELM_CHECK(start >= 0 && n >= 0 && start + n <= count_, "token file {}: tokens [{}, {}) of {}", path_, start,
               start + n, count_);
  const char* base = static_cast<const char*>(map_.get()) + header_bytes_;
  if (token_bytes_ == 2) {
    const auto* p = reinterpret_cast<const uint16_t*>(base) + start;
    for (int64_t i = 0; i < n; ++i) out[i] = p[i];
  } else {
    std::memcpy(out, reinterpret_cast<const int32_t*>(base) + start, n * 4);
  }
  // Unmap the pages just read (they stay in the page cache): the kernel maps
  // up to 64 KB around each faulting page, so thousands of random windows
  // would otherwise leave hundreds of MB of the corpus counted in the
  // process's resident memory (measured: 422 MB after one eval of a 10 GB
  // corpus's shards).
  static const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t first = reinterpret_cast<uintptr_t>(base + start * token_bytes_) / page * page,
                  end = reinterpret_cast<uintptr_t>(base + (start + n) * token_bytes_);
  madvise(reinterpret_cast<void*>(first), end - first, MADV_DONTNEED);
}

int32_t TokenFile::max_token() const {
  int32_t m = 0;
  std::vector<int32_t> buf(1 << 16);
  for (int64_t s = 0; s < count_; s += (int64_t)buf.size()) {
    const int64_t n = std::min<int64_t>(buf.size(), count_ - s);
    read(s, n, buf.data());
    m = std::max(m, *std::max_element(buf.begin(), buf.begin() + n));
  }
  return m;
}

ShardWriter::ShardWriter(const std::string& path, int64_t vocab_size)
    : path_(path), tmp_(path + ".tmp"), vocab_size_(vocab_size), narrow_(vocab_size <= 65536) {
  file_ = std::fopen(tmp_.c_str(), "wb");
  TAPELM_CHECK(file_, "token file {}: cannot write {}: {}", path_, tmp_, std::strerror(errno));
  const std::vector<int32_t> header(kShardHeaderInts, 0);  // the real one at close()
  std::fwrite(header.data(), 4, header.size(), file_);
}

ShardWriter::~ShardWriter() {
  if (!file_) return;
  std::fclose(file_);
  std::remove(tmp_.c_str());
}

void ShardWriter::append(const int32_t* ids, size_t n) {
  TAPELM_CHECK(file_, "token file {}: append after close", path_);
  TAPELM_CHECK(count_ + (int64_t)n < (int64_t{1} << 31), "token file {}: {} tokens do not fit one shard's count", path_,
               count_ + (int64_t)n);
  for (size_t i = 0; i < n; ++i)
    TAPELM_CHECK(ids[i] >= 0 && ids[i] < vocab_size_, "token file {}: token {} outside the vocabulary of {}", path_,
                 ids[i], vocab_size_);
  size_t written;
  if (narrow_) {
    narrowed_.assign(ids, ids + n);
    written = std::fwrite(narrowed_.data(), 2, n, file_);
  } else {
    written = std::fwrite(ids, 4, n, file_);
  }
  TAPELM_CHECK(written == n, "token file {}: writing {} failed (disk full?)", path_, tmp_);
  count_ += (int64_t)n;
}

void ShardWriter::close() {
  TAPELM_CHECK(file_, "token file {}: closed twice", path_);
  std::vector<int32_t> header(kShardHeaderInts, 0);
  header[0] = kShardMagic, header[1] = narrow_ ? 1 : 2, header[2] = (int32_t)count_;
  const bool ok = std::fflush(file_) == 0 && std::fseek(file_, 0, SEEK_SET) == 0 &&
                  std::fwrite(header.data(), 4, header.size(), file_) == header.size();
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!ok || !closed) {
    std::remove(tmp_.c_str());
    throw Error(fmt::format("token file {}: writing {} failed (disk full?)", path_, tmp_));
  }
  std::filesystem::rename(tmp_, path_);
}

void write_shard(const std::string& path, const std::vector<int32_t>& tokens) {
  for (int32_t t : tokens) TAPELM_CHECK(t >= 0, "token file {}: negative token {}", path, t);
  const int32_t largest = tokens.empty() ? 0 : *std::max_element(tokens.begin(), tokens.end());
  ShardWriter w(path, largest < 65536 ? 65536 : (int64_t)largest + 1);
  w.append(tokens.data(), tokens.size());
  w.close();
}

TokenSequence::TokenSequence(std::vector<TokenFile> files) : files_(std::move(files)) {
  for (const TokenFile& f : files_) {
    starts_.push_back(size_);
    size_ += f.size();
  }
}

void TokenSequence::read(int64_t start, int64_t n, int32_t* out) const {
  TAPELM_CHECK(start >= 0 && n >= 0 && start + n <= size_, "token sequence: tokens [{}, {}) of {}", start, start + n,
               size_);
  size_t f = std::upper_bound(starts_.begin(), starts_.end(), start) - starts_.begin() - 1;
  while (n > 0) {
    const int64_t at = start - starts_[f], take = std::min(n, files_[f].size() - at);
    files_[f].read(at, take, out);
    out += take, start += take, n -= take;
    ++f;
  }
}

}  // namespace tapelm::data
