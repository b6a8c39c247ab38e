// Where a split's documents lie in its token sequence: [begin, end) spans, in
// order. `--batch-mode documents` draws them (data/dataset.h).
//   Text read whole: the spans are built in memory.
//   Token folders: one file per split (documents_train.idx,
//   documents_val.idx), read a span at a time (pread: no resident memory
//   whatever the corpus size). `tapelm tokenize` writes them; for GPT-2 data
//   from nanoGPT or llm.c, which put <|endoftext|> between documents, they are
//   made by one scan on first use (index_documents_between).
// File: a header of 32 int64 — magic, version 1, the span count, the split's
// token count, the tokens the spans cover — then the spans as int64 pairs.
// A truncated file or one made for other shards is one clear Error naming it.
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "data/token_file.h"

namespace tapelm::data {

inline constexpr int64_t kDocumentIndexMagic = 20261207;
inline constexpr int64_t kDocumentIndexHeader = 32;  // int64s

struct DocumentSpan {
  int64_t begin, end;  // tokens [begin, end) of the split
  int64_t size() const { return end - begin; }
};

class DocumentIndex {
 public:
  explicit DocumentIndex(std::vector<DocumentSpan> spans);
  // The file at path, made for a split of `tokens` tokens.
  static std::shared_ptr<const DocumentIndex> open(const std::string& path, int64_t tokens);
  int64_t size() const { return count_; }
  int64_t tokens() const { return covered_; }  // in all its documents
  DocumentSpan operator[](int64_t i) const;    // an Error for a span outside the split

 private:
  DocumentIndex() = default;
  std::vector<DocumentSpan> spans_;  // in memory, or
  std::shared_ptr<const int> fd_;    // the file's, read a span at a time
  std::string path_;
  int64_t count_ = 0, covered_ = 0, split_tokens_ = 0;
};

// Writes a split's spans as they come: to path.tmp, header at close(), then
// renamed to path. Spans must come in order, each of 1+ tokens, within the split.
class DocumentIndexWriter {
 public:
  explicit DocumentIndexWriter(const std::string& path);
  ~DocumentIndexWriter();  // without close(): the partial file is removed
  DocumentIndexWriter(const DocumentIndexWriter&) = delete;
  DocumentIndexWriter& operator=(const DocumentIndexWriter&) = delete;
  void append(DocumentSpan span);
  int64_t count() const { return count_; }
  void close(int64_t split_tokens);

 private:
  std::string path_, tmp_;
  std::FILE* file_ = nullptr;
  int64_t count_ = 0, covered_ = 0, last_end_ = 0;
};

// The documents of a token sequence whose documents are separated by the
// token `separator` (GPT-2's <|endoftext|>, 50256): each separator begins a
// document (llm.c puts it before each, nanoGPT after each: either way it is
// the step from one document to the next); documents of fewer than 2 tokens
// are left out. One pass over the sequence, written to path.
void index_documents_between(const TokenSequence& tokens, int32_t separator, const std::string& path);

}  // namespace tapelm::data
