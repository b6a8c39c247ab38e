// `tapelm tokenize`: a corpus of any size to token shards, once. The text is
// streamed in blocks (memory bounded whatever the input size), blocks are
// tokenized in parallel and written in order as llm.c-format shards
// (data/token_file.h) beside tokenizer.json, index.json and each split's
// document index (data/document_index.h: the documents `--batch-mode
// documents` draws, by the rule it applies to text, data/document_finder.h);
// `train --data DIR` then reads them mapped (data/token_data.h).
//
// Blocks are cut where a character that is not whitespace is followed by one
// that is: every tokenizer here starts a new piece there (GPT-2's pattern and
// tapelm's BPE chunks keep a leading space with the word after it), so the
// ids equal those of tokenizing the whole text at once (tested).
// The char tokenizer is learned from every character of the input (one
// streaming pass); BPE from a bounded sample, its first sample_bytes.
// The validation split is the last val_fraction of the text.
// index.json records the sources (path, size, modification time, FNV-1a
// hash): a re-run on unchanged input with the same options does nothing; a
// changed input is tokenized again. Files are written under a temporary name
// and renamed into place, the index last.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace tapelm::data {

struct TokenizeOptions {
  std::vector<std::string> inputs;  // files and folders, as `train --data` takes them
  std::string out;
  std::string tokenizer = "gpt2";  // char, byte, bpe or gpt2
  int64_t vocab_size = 4096;       // bpe
  double val_fraction = 0.1;
  std::string doc_sep;                 // documents' separator line, as train's --doc-sep (empty: blank lines)
  int threads = 0;                     // 0: every core
  int64_t shard_tokens = 100'000'000;  // llm.c's shard size
  int64_t block_bytes = 8 << 20;       // text per parallel task
  int64_t sample_bytes = 64ll << 20;   // bpe's learning sample
};

struct TokenizeProgress {
  int64_t bytes_done, bytes_total;
  double seconds;
};

struct TokenizeReport {
  bool unchanged = false;  // the index matched: nothing was done
  int64_t bytes = 0, train_tokens = 0, val_tokens = 0, shards = 0;
  double seconds = 0;
};

TokenizeReport tokenize_corpus(const TokenizeOptions& options,
                               const std::function<void(const TokenizeProgress&)>& progress = {});

// Where a block of text may end (exposed for tests): the largest cut ≤ limit
// after a non-whitespace byte that a whitespace byte follows; 0 when none.
size_t safe_cut(const std::string& text, size_t limit);

}  // namespace tapelm::data
