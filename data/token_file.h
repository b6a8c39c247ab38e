// Token files read memory-mapped, so a corpus of any size starts in
// milliseconds and costs no resident memory until its pages are touched.
// Formats (told apart by their header, never by name alone):
//   shard: llm.c's .bin (dev/data/data_common.py): 256 int32 of header —
//          magic 20240520, version (1: uint16 tokens, 2: uint32), the
//          token count — then the tokens. tapelm's own shards use it too.
//   raw:   nanoGPT's train.bin / val.bin: bare uint16 tokens, no header.
// A truncated or over-long shard, an unknown version or a raw file of an odd
// byte count is one clear Error naming the file.
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace tapelm::data {

inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int64_t kShardHeaderInts = 256;

class TokenFile {
 public:
  static TokenFile open(const std::string& path);
  const std::string& path() const { return path_; }
  const char* format() const { return header_bytes_ ? "shard" : "raw"; }
  int64_t size() const { return count_; }
  int token_bytes() const { return token_bytes_; }
  // Tokens [start, start + n) as int32.
  void read(int64_t start, int64_t n, int32_t* out) const;
  // The largest token id (reads the whole file).
  int32_t max_token() const;

 private:
  std::string path_;
  std::shared_ptr<const void> map_;  // unmapped with the last copy
  int64_t header_bytes_ = 0, count_ = 0;
  int token_bytes_ = 2;
};

// A shard written as its tokens come (tapelm tokenize's output, no copy of
// them held): version 1 (uint16) when the vocabulary fits 16 bits, else 2;
// to path.tmp, the count put in the header and the file renamed to path at
// close(), so a reader never sees half a file. An Error naming the file on a
// failed write or an id outside [0, vocab_size).
class ShardWriter {
 public:
  ShardWriter(const std::string& path, int64_t vocab_size);
  ~ShardWriter();  // without close(): the partial file is removed
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  void append(const int32_t* ids, size_t n);
  int64_t count() const { return count_; }
  void close();

 private:
  std::string path_, tmp_;
  int64_t vocab_size_, count_ = 0;
  bool narrow_;
  std::FILE* file_ = nullptr;
  std::vector<uint16_t> narrowed_;  // append's 16-bit staging, reused
};

// Writes tokens as one shard (version 1 when every id fits in 16 bits, else 2).
void write_shard(const std::string& path, const std::vector<int32_t>& tokens);

// Several token files read as one sequence, in order.
class TokenSequence {
 public:
  explicit TokenSequence(std::vector<TokenFile> files);
  int64_t size() const { return size_; }
  void read(int64_t start, int64_t n, int32_t* out) const;  // may span files
  const std::vector<TokenFile>& files() const { return files_; }

 private:
  std::vector<TokenFile> files_;
  std::vector<int64_t> starts_;  // each file's first index in the sequence
  int64_t size_ = 0;
};

}  // namespace tapelm::data
