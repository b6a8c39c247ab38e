#include "data/document_index.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "autograd/error.h"

namespace tapelm::data {

namespace {

enum HeaderField { kMagic, kVersion, kCount, kSplitTokens, kCovered };

}  // namespace

DocumentIndex::DocumentIndex(std::vector<DocumentSpan> spans) : spans_(std::move(spans)) {
  count_ = (int64_t)spans_.size();
  for (const DocumentSpan& s : spans_) covered_ += s.size();
  split_tokens_ = spans_.empty() ? 0 : spans_.back().end;
}

std::shared_ptr<const DocumentIndex> DocumentIndex::open(const std::string& path, int64_t tokens) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  TAPELM_CHECK(fd >= 0, "document index {}: cannot open it: {}", path, std::strerror(errno));
  auto index = std::shared_ptr<DocumentIndex>(new DocumentIndex());
  index->fd_ = std::shared_ptr<const int>(new int(fd), [](const int* p) {
    ::close(*p);
    delete p;
  });
  index->path_ = path;
  struct stat st {};
  TAPELM_CHECK(fstat(fd, &st) == 0 && S_ISREG(st.st_mode), "document index {}: not a regular file", path);
  int64_t header[kDocumentIndexHeader] = {};
  const int64_t header_bytes = (int64_t)sizeof(header);
  TAPELM_CHECK(st.st_size >= header_bytes && ::pread(fd, header, sizeof(header), 0) == header_bytes &&
                   header[kMagic] == kDocumentIndexMagic,
               "document index {}: not a tapelm document index (no header)", path);
  TAPELM_CHECK(header[kVersion] == 1, "document index {}: version {} (this tapelm reads 1)", path, header[kVersion]);
  const int64_t want = header_bytes + header[kCount] * (int64_t)sizeof(DocumentSpan);
  TAPELM_CHECK(header[kCount] >= 0 && st.st_size == want,
               "document index {}: its header says {} documents ({} bytes with the header) but the file has {} "
               "bytes{}",
               path, header[kCount], want, (int64_t)st.st_size, st.st_size < want ? ": it is truncated" : "");
  TAPELM_CHECK(header[kSplitTokens] == tokens,
               "document index {}: made for {} tokens, but the split's token files hold {} (made for other shards: "
               "tokenize again, or remove it to index the documents again)",
               path, header[kSplitTokens], tokens);
  index->count_ = header[kCount];
  index->covered_ = header[kCovered];
  index->split_tokens_ = tokens;
  return index;
}

DocumentSpan DocumentIndex::operator[](int64_t i) const {
  TAPELM_CHECK(0 <= i && i < count_, "document index: document {} of {}", i, count_);
  if (!fd_) return spans_[(size_t)i];
  DocumentSpan s{};
  const off_t at = (off_t)((kDocumentIndexHeader + 2 * i) * (int64_t)sizeof(int64_t));
  TAPELM_CHECK(::pread(*fd_, &s, sizeof(s), at) == (ssize_t)sizeof(s), "document index {}: cannot read document {}: {}",
               path_, i, std::strerror(errno));
  TAPELM_CHECK(0 <= s.begin && s.begin < s.end && s.end <= split_tokens_,
               "document index {}: document {} spans tokens [{}, {}), outside the split's {} tokens (a damaged file)",
               path_, i, s.begin, s.end, split_tokens_);
  return s;
}

DocumentIndexWriter::DocumentIndexWriter(const std::string& path) : path_(path), tmp_(path + ".tmp") {
  file_ = std::fopen(tmp_.c_str(), "wb");
  TAPELM_CHECK(file_ != nullptr, "document index {}: cannot write it: {}", tmp_, std::strerror(errno));
  const int64_t header[kDocumentIndexHeader] = {};  // filled in at close()
  TAPELM_CHECK(std::fwrite(header, sizeof(header), 1, file_) == 1, "document index {}: cannot write it", tmp_);
}

DocumentIndexWriter::~DocumentIndexWriter() {
  if (!file_) return;
  std::fclose(file_);
  std::remove(tmp_.c_str());
}

void DocumentIndexWriter::append(DocumentSpan s) {
  TAPELM_CHECK(last_end_ <= s.begin && s.begin < s.end, "document index {}: span [{}, {}) after one ending at {}",
               path_, s.begin, s.end, last_end_);
  TAPELM_CHECK(std::fwrite(&s, sizeof(s), 1, file_) == 1, "document index {}: cannot write it: {}", tmp_,
               std::strerror(errno));
  ++count_;
  covered_ += s.size();
  last_end_ = s.end;
}

void DocumentIndexWriter::close(int64_t split_tokens) {
  TAPELM_CHECK(last_end_ <= split_tokens, "document index {}: spans reach token {} of a split of {}", path_, last_end_,
               split_tokens);
  int64_t header[kDocumentIndexHeader] = {};
  header[kMagic] = kDocumentIndexMagic, header[kVersion] = 1, header[kCount] = count_;
  header[kSplitTokens] = split_tokens, header[kCovered] = covered_;
  const bool ok = std::fflush(file_) == 0 && std::fseek(file_, 0, SEEK_SET) == 0 &&
                  std::fwrite(header, sizeof(header), 1, file_) == 1 && std::fclose(file_) == 0;
  file_ = nullptr;
  if (!ok) {
    std::remove(tmp_.c_str());
    throw Error(fmt::format("document index {}: cannot write it: {}", tmp_, std::strerror(errno)));
  }
  std::error_code ec;
  std::filesystem::rename(tmp_, path_, ec);
  TAPELM_CHECK(!ec, "document index {}: cannot put it in place: {}", path_, ec.message());
}

void index_documents_between(const TokenSequence& tokens, int32_t separator, const std::string& path) {
  DocumentIndexWriter out(path);
  std::vector<int32_t> chunk(1 << 20);
  int64_t begin = 0;
  auto add = [&](int64_t end) {
    if (end - begin >= 2) out.append({begin, end});
    begin = end;
  };
  for (int64_t at = 0; at < tokens.size(); at += (int64_t)chunk.size()) {
    const int64_t n = std::min<int64_t>((int64_t)chunk.size(), tokens.size() - at);
    tokens.read(at, n, chunk.data());
    for (int64_t i = 0; i < n; ++i)
      if (chunk[i] == separator && at + i > begin) add(at + i);
  }
  add(tokens.size());
  out.close(tokens.size());
}

}  // namespace tapelm::data
