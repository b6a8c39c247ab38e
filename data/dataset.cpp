#include "data/dataset.h"

#include <algorithm>
#include <cstring>

#include "autograd/error.h"
#include "autograd/ops.h"
#include "data/corpus.h"

namespace tapelm::data {

int64_t Batch::tokens() const {
  int64_t n = 0;
  const int32_t* p = y.data<int32_t>();
  for (int64_t i = 0; i < y.numel(); ++i) n += p[i] >= 0;
  return n;
}

Batch Batch::rows(int64_t begin, int64_t end) const {
  TAPELM_CHECK(0 <= begin && begin < end && end <= x.shape()[0], "batch: rows [{}, {}) of a batch of {}", begin, end,
               x.shape()[0]);
  auto part = [&](const Tensor& t) {
    if (!t.defined()) return Tensor();
    Tensor out = Tensor::empty({end - begin, t.shape()[1]}, t.dtype());
    const int64_t row_bytes = t.shape()[1] * (int64_t)dtype_size(t.dtype());
    std::memcpy(out.raw_data(), static_cast<const char*>(t.raw_data()) + begin * row_bytes, (end - begin) * row_bytes);
    return out;
  };
  return {part(x), part(y), part(pad_mask)};
}

Dataset::Dataset(const std::string& text, const Tokenizer& tok, int64_t context, double val_fraction,
                 const std::string& mode, const std::string& sep)
    : context_(context), mode_(mode) {
  TAPELM_CHECK(context > 0, "dataset: context must be positive, got {}", context);
  TAPELM_CHECK(val_fraction > 0 && val_fraction < 1, "dataset: val_fraction {} must be in (0, 1)", val_fraction);
  if (mode == "windows") {
    std::vector<int32_t> ids = tok.encode(text);
    const int64_t n_train = (int64_t)(ids.size() * (1 - val_fraction));
    train_.assign(ids.begin(), ids.begin() + n_train);
    val_.assign(ids.begin() + n_train, ids.end());
    for (auto [name, part] : {std::pair{"training", &train_}, std::pair{"validation", &val_}})
      TAPELM_CHECK((int64_t)part->size() > context,
                   "dataset: the corpus has {} tokens; its {} split of {} tokens is shorter than "
                   "one context window plus its target ({} tokens). Use a longer corpus or a "
                   "smaller --context.",
                   ids.size(), name, part->size(), context + 1);
  } else if (mode == "documents") {
    std::vector<std::vector<int32_t>> docs;
    for (auto& d : split_documents(text, sep)) {
      auto ids = tok.encode(d);
      if (ids.size() >= 2) docs.push_back(std::move(ids));
    }
    const int64_t n_train = (int64_t)(docs.size() * (1 - val_fraction));
    TAPELM_CHECK(n_train >= 1 && (int64_t)docs.size() - n_train >= 1,
                 "dataset: {} documents of 2+ tokens are too few for a train/validation split", docs.size());
    // Each split's documents one after another, and where each lies.
    auto lay_out = [&](size_t first, size_t last, std::vector<int32_t>& tokens) {
      std::vector<DocumentSpan> spans;
      for (size_t i = first; i < last; ++i) {
        spans.push_back({(int64_t)tokens.size(), (int64_t)(tokens.size() + docs[i].size())});
        tokens.insert(tokens.end(), docs[i].begin(), docs[i].end());
      }
      return std::make_shared<const DocumentIndex>(std::move(spans));
    };
    train_docs_ = lay_out(0, (size_t)n_train, train_);
    val_docs_ = lay_out((size_t)n_train, docs.size(), val_);
  } else {
    throw Error(fmt::format("dataset: unknown batch mode '{}' (windows or documents)", mode));
  }
}

Dataset::Dataset(std::shared_ptr<const TokenSequence> train, std::shared_ptr<const TokenSequence> val, int64_t context,
                 int64_t vocab_size, std::shared_ptr<const DocumentIndex> train_documents,
                 std::shared_ptr<const DocumentIndex> val_documents)
    : context_(context),
      vocab_size_(vocab_size),
      mode_(train_documents ? "documents" : "windows"),
      mapped_train_(std::move(train)),
      mapped_val_(std::move(val)),
      train_docs_(std::move(train_documents)),
      val_docs_(std::move(val_documents)) {
  TAPELM_CHECK(context > 0, "dataset: context must be positive, got {}", context);
  TAPELM_CHECK(!train_docs_ == !val_docs_, "dataset: documents for one split but not the other");
  if (mode_ == "documents") {
    for (auto [name, part] : {std::pair{"training", &train_docs_}, std::pair{"validation", &val_docs_}})
      TAPELM_CHECK((*part)->size() > 0, "dataset: the {} token files hold no document of 2+ tokens", name);
    return;
  }
  for (auto [name, part] : {std::pair{"training", &mapped_train_}, std::pair{"validation", &mapped_val_}})
    TAPELM_CHECK((*part)->size() > context,
                 "dataset: the {} token files hold {} tokens, fewer than one context window plus its target ({})", name,
                 (*part)->size(), context + 1);
}

Dataset::Dataset(const TokenData& d, int64_t context, int64_t vocab_size, const std::string& mode)
    : Dataset(d.train, d.val, context, vocab_size, mode == "documents" ? documents_of(d, "train") : nullptr,
              mode == "documents" ? documents_of(d, "val") : nullptr) {
  TAPELM_CHECK(mode == "windows" || mode == "documents", "dataset: unknown batch mode '{}' (windows or documents)",
               mode);
}

void Dataset::read(Split split, int64_t start, int64_t n, int32_t* out) const {
  if (!mapped_train_) {
    const auto& data = split == Split::train ? train_ : val_;
    std::copy_n(data.begin() + start, n, out);
    return;
  }
  (split == Split::train ? mapped_train_ : mapped_val_)->read(start, n, out);
  for (int64_t i = 0; i < n; ++i)
    TAPELM_CHECK(out[i] >= 0 && out[i] < vocab_size_,
                 "dataset: token {} at position {} of the {} files is past the vocabulary of {} (data made with "
                 "another tokenizer?)",
                 out[i], start + i, split == Split::train ? "training" : "validation", vocab_size_);
}

int64_t Dataset::tokens(Split s) const {
  if (mode_ == "documents") return documents(s).tokens();
  if (mapped_train_) return (s == Split::train ? mapped_train_ : mapped_val_)->size();
  return (int64_t)(s == Split::train ? train_ : val_).size();
}

Batch Dataset::padded(Split split, const std::vector<DocumentSpan>& pieces) const {
  const int64_t nb = (int64_t)pieces.size();
  int64_t longest = 0;
  for (const DocumentSpan& p : pieces) longest = std::max(longest, p.size() - 1);
  Batch b{full({nb, longest}, 0, DType::i32), full({nb, longest}, kIgnoreIndex, DType::i32),
          full({nb, longest}, 1, DType::b8)};
  std::vector<int32_t> piece(context_ + 1);
  for (int64_t i = 0; i < nb; ++i) {
    const int64_t n = pieces[i].size();
    read(split, pieces[i].begin, n, piece.data());
    std::copy_n(piece.begin(), n - 1, b.x.data<int32_t>() + i * longest);
    std::copy_n(piece.begin() + 1, n - 1, b.y.data<int32_t>() + i * longest);
    std::fill_n(b.pad_mask.data<uint8_t>() + i * longest, n - 1, 0);
  }
  return b;
}

Batch Dataset::batch(Split split, int64_t B, Generator& gen) const {
  const int64_t T = context_;
  if (mode_ == "windows") {
    Batch b{Tensor::empty({B, T}, DType::i32), Tensor::empty({B, T}, DType::i32), Tensor()};
    int32_t* px = b.x.data<int32_t>();
    int32_t* py = b.y.data<int32_t>();
    std::vector<int32_t> window(T + 1);
    for (int64_t i = 0; i < B; ++i) {
      const int64_t start = (int64_t)gen.randint(tokens(split) - T);
      read(split, start, T + 1, window.data());
      std::copy_n(window.begin(), T, px + i * T);
      std::copy_n(window.begin() + 1, T, py + i * T);
    }
    return b;
  }
  const DocumentIndex& docs = documents(split);
  std::vector<DocumentSpan> picked;
  for (int64_t i = 0; i < B; ++i) {
    const DocumentSpan d = docs[(int64_t)gen.randint(docs.size())];
    const int64_t len = std::min<int64_t>(d.size(), T + 1);
    const int64_t start = d.begin + (int64_t)gen.randint(d.size() - len + 1);  // a random window of a long doc
    picked.push_back({start, start + len});
  }
  return padded(split, picked);
}

std::vector<Batch> Dataset::sequential_batches(Split split, int64_t B) const {
  std::vector<Batch> out;
  const int64_t T = context_;
  if (mode_ == "windows") {
    std::vector<int64_t> starts;
    for (int64_t s = 0; s + T + 1 <= tokens(split); s += T) starts.push_back(s);
    std::vector<int32_t> window(T + 1);
    for (size_t i = 0; i < starts.size(); i += B) {
      const int64_t nb = std::min<int64_t>(B, starts.size() - i);
      Batch b{Tensor::empty({nb, T}, DType::i32), Tensor::empty({nb, T}, DType::i32), Tensor()};
      for (int64_t k = 0; k < nb; ++k) {
        read(split, starts[i + k], T + 1, window.data());
        std::copy_n(window.begin(), T, b.x.data<int32_t>() + k * T);
        std::copy_n(window.begin() + 1, T, b.y.data<int32_t>() + k * T);
      }
      out.push_back(b);
    }
    return out;
  }
  // Documents: each cut into consecutive pieces of ≤ T+1 tokens, B pieces a batch.
  const DocumentIndex& docs = documents(split);
  std::vector<DocumentSpan> pieces;
  for (int64_t i = 0; i < docs.size(); ++i) {
    const DocumentSpan d = docs[i];
    for (int64_t s = d.begin; s + 1 < d.end; s += T) {
      pieces.push_back({s, std::min(d.end, s + T + 1)});
      if ((int64_t)pieces.size() == B) out.push_back(padded(split, pieces)), pieces.clear();
    }
  }
  if (!pieces.empty()) out.push_back(padded(split, pieces));
  return out;
}

}  // namespace tapelm::data
