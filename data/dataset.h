// Token batches for training and evaluation.
//   windows:   nanoGPT's get_batch: B random contiguous windows of T tokens,
//              targets shifted by one.
//   documents: B random documents (each cut to at most T+1 tokens) padded on
//              the right to the longest, with a padding mask; targets at
//              padding are −1 (ignored by the loss).
// Text is split by position: the last val_fraction of tokens (windows) or of
// documents (documents) is validation; token folders come split. Documents
// are spans of a split's tokens (data/document_index.h), in memory or read
// from a token folder's index. Every draw comes from the generator passed in,
// so batches are reproducible from a seed.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "data/document_index.h"
#include "data/token_data.h"
#include "data/token_file.h"
#include "data/tokenizer.h"

namespace tapelm::data {

struct Batch {
  Tensor x;                // int32 [B, T]
  Tensor y;                // int32 [B, T], kIgnoreIndex (−1) where ignored
  Tensor pad_mask;         // bool [B, T], true at padding; undefined in window mode
  int64_t tokens() const;  // number of target tokens that count
  // Rows [begin, end) as a batch of their own (copied): one rank's part of a
  // global batch in data-parallel training.
  Batch rows(int64_t begin, int64_t end) const;
};

enum class Split { train, val };

class Dataset {
 public:
  // mode: "windows" or "documents"; doc_separator as in split_documents.
  Dataset(const std::string& text, const Tokenizer& tok, int64_t context, double val_fraction = 0.1,
          const std::string& mode = "windows", const std::string& doc_separator = "");

  // Token files (data/token_file.h), read where they are mapped: the split is
  // the files' (train and val), and every batch's ids are checked against the
  // vocabulary, naming the split when one is past it. Windows, or documents
  // when each split's document index is given (data/token_data.h's documents_of).
  Dataset(std::shared_ptr<const TokenSequence> train, std::shared_ptr<const TokenSequence> val, int64_t context,
          int64_t vocab_size, std::shared_ptr<const DocumentIndex> train_documents = nullptr,
          std::shared_ptr<const DocumentIndex> val_documents = nullptr);
  // A token folder in `mode`: windows, or documents (each split's documents_of).
  Dataset(const TokenData& data, int64_t context, int64_t vocab_size, const std::string& mode);

  Batch batch(Split split, int64_t batch_size, Generator& gen) const;
  // Every non-overlapping window of the split, in order (for `eval`), B at a time.
  std::vector<Batch> sequential_batches(Split split, int64_t batch_size) const;
  int64_t tokens(Split split) const;
  const std::string& mode() const { return mode_; }

 private:
  // Tokens [start, start + n) of a split, from memory or the mapped files.
  void read(Split split, int64_t start, int64_t n, int32_t* out) const;
  const DocumentIndex& documents(Split split) const { return *(split == Split::train ? train_docs_ : val_docs_); }
  // Documents pieces (each ≤ T+1 tokens) padded to the longest as one batch.
  Batch padded(Split split, const std::vector<DocumentSpan>& pieces) const;
  int64_t context_, vocab_size_ = 0;
  std::string mode_;
  std::vector<int32_t> train_, val_;                                // in memory (text), or
  std::shared_ptr<const TokenSequence> mapped_train_, mapped_val_;  // mapped (token files)
  std::shared_ptr<const DocumentIndex> train_docs_, val_docs_;      // documents mode
};

}  // namespace tapelm::data
