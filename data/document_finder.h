// Finds documents in text that arrives in pieces (tokenize's blocks), by the
// rule `--batch-mode documents` applies to text read whole (split_documents,
// data/corpus.h): lines between boundary lines — blank lines when the
// separator is empty, else lines equal to it — holding a character that is
// not whitespace. A document spans from the first byte of its first line to
// one past the newline of its last (or the text's end).
//
// Positions are the caller's: feed() takes a map from each byte offset of the
// piece to a position (tokenize maps a byte to the first token starting at or
// after it, so a document is the tokens that start inside it), and a span is
// reported in those positions when its document ends.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "data/document_index.h"

namespace tapelm::data {

class DocumentFinder {
 public:
  explicit DocumentFinder(std::string separator) : separator_(std::move(separator)) {}
  // The next piece; position_of(i) is asked only for the bytes that begin a
  // line (just after a newline), in increasing order.
  // Documents that end in it are appended to out.
  void feed(std::string_view piece, const std::function<int64_t(size_t)>& position_of, std::vector<DocumentSpan>& out);
  // The text ends at `end`: the last document, if one is open, ends there.
  void finish(int64_t end, std::vector<DocumentSpan>& out);
  // A hard break (tokenize's train/validation split): the open document ends
  // at `end`; the line in progress goes on as a new line beginning at `begin`.
  void split(int64_t end, int64_t begin, std::vector<DocumentSpan>& out);

 private:
  bool line_is_boundary() const;
  void add_line_to_document();
  int64_t line_begin();  // the line's position, mapped when first asked for
  void end_line(std::vector<DocumentSpan>& out);
  void close_document(int64_t end, std::vector<DocumentSpan>& out);
  std::string separator_;
  // The line in progress: its position, or (while feed() runs) its byte in the
  // piece, mapped when a document begins or ends there (most lines are neither).
  static constexpr size_t kMapped = ~size_t(0);
  const std::function<int64_t(size_t)>* position_of_ = nullptr;
  size_t line_begin_byte_ = kMapped;
  int64_t line_begin_ = 0, line_bytes_ = 0;
  bool line_blank_ = true;         // only ' ', '\t', '\r' so far
  bool line_has_text_ = false;     // a byte that is not whitespace
  bool line_is_separator_ = true;  // equal to the separator's first line_bytes_ bytes so far
  // The document in progress.
  bool in_document_ = false, document_has_text_ = false;
  int64_t document_begin_ = 0;
};

}  // namespace tapelm::data
