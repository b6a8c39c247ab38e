#include "data/document_finder.h"

#include <cstring>

namespace tapelm::data {

namespace {

bool blank_byte(char c) { return c == ' ' || c == '\t' || c == '\r'; }

}  // namespace

void DocumentFinder::close_document(int64_t end, std::vector<DocumentSpan>& out) {
  if (in_document_ && document_has_text_ && end > document_begin_) out.push_back({document_begin_, end});
  in_document_ = false;
}

bool DocumentFinder::line_is_boundary() const {
  return separator_.empty() ? line_blank_ : line_is_separator_ && line_bytes_ == (int64_t)separator_.size();
}

int64_t DocumentFinder::line_begin() {
  if (line_begin_byte_ != kMapped) {
    line_begin_ = (*position_of_)(line_begin_byte_);
    line_begin_byte_ = kMapped;
  }
  return line_begin_;
}

void DocumentFinder::add_line_to_document() {
  if (!in_document_) {
    in_document_ = true;
    document_has_text_ = false;
    document_begin_ = line_begin();
  }
  document_has_text_ = document_has_text_ || line_has_text_;
}

void DocumentFinder::end_line(std::vector<DocumentSpan>& out) {
  if (!line_is_boundary())
    add_line_to_document();
  else if (in_document_)
    close_document(line_begin(), out);
  line_bytes_ = 0;
  line_blank_ = true, line_has_text_ = false, line_is_separator_ = true;
}

void DocumentFinder::feed(std::string_view piece, const std::function<int64_t(size_t)>& position_of,
                          std::vector<DocumentSpan>& out) {
  position_of_ = &position_of;
  size_t at = 0;
  while (at < piece.size()) {
    const void* nl = std::memchr(piece.data() + at, '\n', piece.size() - at);
    const size_t end = nl ? (size_t)(static_cast<const char*>(nl) - piece.data()) : piece.size();
    // The line's bytes [at, end) in this piece: only its first bytes decide
    // blank or text; the separator is compared while the line is no longer.
    for (size_t i = at; i < end && (line_blank_ || !line_has_text_); ++i) {
      line_blank_ = line_blank_ && blank_byte(piece[i]);
      line_has_text_ = line_has_text_ || !(blank_byte(piece[i]) || piece[i] == '\n');
    }
    if (line_is_separator_) {
      const size_t n = end - at;
      line_is_separator_ = line_bytes_ + (int64_t)n <= (int64_t)separator_.size() &&
                           piece.substr(at, n) == std::string_view(separator_).substr((size_t)line_bytes_, n);
    }
    line_bytes_ += (int64_t)(end - at);
    if (!nl) break;
    end_line(out);
    line_begin_byte_ = end + 1;  // mapped only if a document begins or ends there
    at = end + 1;
  }
  line_begin();  // the line going on into the next piece: mapped while this piece's map is at hand
  position_of_ = nullptr;
}

void DocumentFinder::finish(int64_t end, std::vector<DocumentSpan>& out) {
  if (line_bytes_ > 0) end_line(out);  // a last line without its newline
  close_document(end, out);
}

void DocumentFinder::split(int64_t end, int64_t begin, std::vector<DocumentSpan>& out) {
  if (line_bytes_ > 0 && !line_is_boundary()) add_line_to_document();  // the open line's part before the break
  close_document(end, out);
  line_begin_ = begin;
  line_bytes_ = 0;
  line_blank_ = true, line_has_text_ = false, line_is_separator_ = false;  // a line's tail is no separator
}

}  // namespace tapelm::data
