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
    train_docs_.assign(docs.begin(), docs.begin() + n_train);
    val_docs_.assign(docs.begin() + n_train, docs.end());
  } else {
    throw Error(fmt::format("dataset: unknown batch mode '{}' (windows or documents)", mode));
  }
}

Dataset::Dataset(std::shared_ptr<const TokenSequence> train, std::shared_ptr<const TokenSequence> val, int64_t context,
                 int64_t vocab_size)
    : context_(context),
      vocab_size_(vocab_size),
      mode_("windows"),
      mapped_train_(std::move(train)),
      mapped_val_(std::move(val)) {
  TAPELM_CHECK(context > 0, "dataset: context must be positive, got {}", context);
  for (auto [name, part] : {std::pair{"training", &mapped_train_}, std::pair{"validation", &mapped_val_}})
    TAPELM_CHECK((*part)->size() > context,
                 "dataset: the {} token files hold {} tokens, fewer than one context window plus its target ({})", name,
                 (*part)->size(), context + 1);
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
  if (mapped_train_) return (s == Split::train ? mapped_train_ : mapped_val_)->size();
  if (mode_ == "windows") return (int64_t)(s == Split::train ? train_ : val_).size();
  int64_t n = 0;
  for (auto& d : s == Split::train ? train_docs_ : val_docs_) n += (int64_t)d.size();
  return n;
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
  const auto& docs = split == Split::train ? train_docs_ : val_docs_;
  std::vector<std::vector<int32_t>> picked;
  int64_t longest = 0;
  for (int64_t i = 0; i < B; ++i) {
    const auto& d = docs[gen.randint(docs.size())];
    const int64_t len = std::min<int64_t>(d.size(), T + 1);
    const int64_t start = (int64_t)gen.randint(d.size() - len + 1);  // a random window of a long doc
    picked.emplace_back(d.begin() + start, d.begin() + start + len);
    longest = std::max(longest, len - 1);
  }
  Batch b{full({B, longest}, 0, DType::i32), full({B, longest}, kIgnoreIndex, DType::i32),
          full({B, longest}, 1, DType::b8)};
  for (int64_t i = 0; i < B; ++i) {
    const auto& d = picked[i];
    for (int64_t t = 0; t + 1 < (int64_t)d.size(); ++t) {
      b.x.data<int32_t>()[i * longest + t] = d[t];
      b.y.data<int32_t>()[i * longest + t] = d[t + 1];
      b.pad_mask.data<uint8_t>()[i * longest + t] = 0;
    }
  }
  return b;
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
  std::vector<std::vector<int32_t>> pieces;
  for (auto& d : split == Split::train ? train_docs_ : val_docs_)
    for (size_t s = 0; s + 1 < d.size(); s += T)
      pieces.emplace_back(d.begin() + s, d.begin() + std::min(d.size(), s + T + 1));
  for (size_t i = 0; i < pieces.size(); i += B) {
    const int64_t nb = std::min<int64_t>(B, pieces.size() - i);
    int64_t longest = 0;
    for (int64_t k = 0; k < nb; ++k) longest = std::max<int64_t>(longest, pieces[i + k].size() - 1);
    Batch b{full({nb, longest}, 0, DType::i32), full({nb, longest}, kIgnoreIndex, DType::i32),
            full({nb, longest}, 1, DType::b8)};
    for (int64_t k = 0; k < nb; ++k)
      for (int64_t t = 0; t + 1 < (int64_t)pieces[i + k].size(); ++t) {
        b.x.data<int32_t>()[k * longest + t] = pieces[i + k][t];
        b.y.data<int32_t>()[k * longest + t] = pieces[i + k][t + 1];
        b.pad_mask.data<uint8_t>()[k * longest + t] = 0;
      }
    out.push_back(b);
  }
  return out;
}

}  // namespace tapelm::data
