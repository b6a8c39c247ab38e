#include "data/tokenizer.h"

#include <nlohmann/json.hpp>
#include <unordered_map>

#include "autograd/error.h"
#include "autograd/json_int.h"
#include "data/utf8.h"

namespace tapelm::data {

namespace {

void check_ids(const char* who, const std::vector<int32_t>& ids, int64_t vocab) {
  for (int32_t id : ids)
    TAPELM_CHECK(id >= 0 && id < vocab, "{} tokenizer: token id {} out of range for vocabulary {}", who, id, vocab);
}

}  // namespace

// ---- char -------------------------------------------------------------------

CharTokenizer::CharTokenizer(const std::string& corpus) {
  std::vector<uint32_t> syms = utf8_symbols(corpus);
  std::sort(syms.begin(), syms.end());
  syms.erase(std::unique(syms.begin(), syms.end()), syms.end());
  *this = CharTokenizer(std::move(syms));
}

CharTokenizer::CharTokenizer(std::vector<uint32_t> symbols) : symbols_(std::move(symbols)) {
  TAPELM_CHECK(!symbols_.empty(), "char tokenizer: empty vocabulary");
  for (size_t i = 0; i < symbols_.size(); ++i) {
    const uint32_t cp = symbols_[i];
    TAPELM_CHECK(cp <= 0x10FFFF || (cp >= kStrayByte && cp < kStrayByte + 256),
                 "char tokenizer: symbol {} is neither a code point nor a stray byte", cp);
    // A repeated symbol would encode to one id and decode from two.
    TAPELM_CHECK(index_.emplace(cp, (int32_t)i).second, "char tokenizer: symbol U+{:04X} appears twice", cp);
  }
}

std::vector<int32_t> CharTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  size_t offset = 0;  // of the symbol in the text, in bytes
  for (uint32_t cp : utf8_symbols(text)) {
    std::string ch;
    append_symbol(ch, cp);
    auto it = index_.find(cp);
    if (it == index_.end() && cp >= kStrayByte)
      throw Error(fmt::format(
          "char tokenizer: byte 0x{:02X} at byte {} of the text is not valid UTF-8, and the training corpus had no "
          "such stray byte to learn",
          cp - kStrayByte, offset));
    if (it == index_.end())
      throw Error(
          fmt::format("char tokenizer: character '{}' (U+{:04X}) at byte {} of the text is not in the "
                      "vocabulary learned from the training corpus",
                      ch, cp, offset));
    ids.push_back(it->second);
    offset += ch.size();
  }
  return ids;
}

std::string CharTokenizer::decode(const std::vector<int32_t>& ids) const {
  check_ids("char", ids, vocab_size());
  std::string out;
  for (int32_t id : ids) append_symbol(out, symbols_[id]);
  return out;
}

std::string CharTokenizer::to_json() const { return nlohmann::json{{"kind", "char"}, {"symbols", symbols_}}.dump(); }

// ---- byte -------------------------------------------------------------------

std::vector<int32_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = (unsigned char)text[i];
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  check_ids("byte", ids, 256);
  std::string out(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) out[i] = (char)ids[i];
  return out;
}

std::string ByteTokenizer::to_json() const { return nlohmann::json{{"kind", "byte"}}.dump(); }

// ---- bpe --------------------------------------------------------------------

std::vector<int64_t> token_byte_lengths(const Tokenizer& tok) {
  std::vector<int64_t> bytes(tok.vocab_size());
  for (int32_t id = 0; id < (int32_t)bytes.size(); ++id) bytes[id] = (int64_t)tok.decode({id}).size();
  return bytes;
}

std::vector<std::string> bpe_chunks(const std::string& text) {
  // GPT-2-like pre-tokenisation: runs of letters (and non-ASCII bytes), digits,
  // other symbols, or whitespace; a single space before a word joins the word.
  auto cls = [](unsigned char c) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') return 0;
    if (std::isalpha(c) || c >= 0x80) return 1;
    if (std::isdigit(c)) return 2;
    return 3;
  };
  std::vector<std::string> out;
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    if (cls(text[i]) == 0) {
      size_t j = i;
      while (j < n && cls(text[j]) == 0) ++j;
      if (j < n && text[j - 1] == ' ') {  // leave the last space for the next word
        if (j - 1 > i) out.push_back(text.substr(i, j - 1 - i));
        i = j - 1;
      } else {
        out.push_back(text.substr(i, j - i));
        i = j;
        continue;
      }
    }
    size_t start = i;
    if (text[i] == ' ') ++i;
    int c = cls(text[i]);
    while (i < n && cls(text[i]) == c) ++i;
    out.push_back(text.substr(start, i - start));
  }
  return out;
}

BPETokenizer::BPETokenizer(const std::string& corpus, int64_t vocab_size) {
  TAPELM_CHECK(vocab_size >= 256, "bpe tokenizer: vocab_size {} must be at least 256", vocab_size);
  // Unique chunks with their counts; merges are learned over chunk types.
  std::unordered_map<std::string, int64_t> freq;
  for (auto& c : bpe_chunks(corpus)) ++freq[c];
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> counts;
  for (auto& [w, f] : freq) {
    words.emplace_back(w.begin(), w.end());
    for (auto& t : words.back()) t = (unsigned char)t;
    counts.push_back(f);
  }
  auto key = [](int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; };
  for (int32_t next = 256; next < vocab_size; ++next) {
    std::unordered_map<uint64_t, int64_t> pairs;
    for (size_t w = 0; w < words.size(); ++w)
      for (size_t k = 0; k + 1 < words[w].size(); ++k) pairs[key(words[w][k], words[w][k + 1])] += counts[w];
    uint64_t best = 0;
    int64_t best_count = 0;
    for (auto& [k, c] : pairs)
      if (c > best_count || (c == best_count && k < best)) best = k, best_count = c;
    if (best_count < 2) break;  // nothing left worth merging
    const int32_t a = (int32_t)(best >> 32), b = (int32_t)(best & 0xffffffff);
    merges_.push_back({a, b});
    for (auto& word : words) {
      size_t out = 0;
      for (size_t k = 0; k < word.size(); ++k) {
        if (k + 1 < word.size() && word[k] == a && word[k + 1] == b) {
          word[out++] = next;
          ++k;
        } else {
          word[out++] = word[k];
        }
      }
      word.resize(out);
    }
  }
  build_tables();
}

BPETokenizer::BPETokenizer(std::vector<std::pair<int32_t, int32_t>> merges) : merges_(std::move(merges)) {
  build_tables();
}

void BPETokenizer::build_tables() {
  bytes_.clear();
  for (int b = 0; b < 256; ++b) bytes_.push_back(std::string(1, (char)b));
  rank_.clear();
  size_t spelled_bytes = 0;
  for (size_t i = 0; i < merges_.size(); ++i) {
    auto [a, b] = merges_[i];
    TAPELM_CHECK(a >= 0 && b >= 0 && a < 256 + (int32_t)i && b < 256 + (int32_t)i,
                 "bpe tokenizer: merge {} refers to an unknown token", i);
    rank_[merges_[i]] = (int32_t)i;
    // Each merge can double a token's length: a hostile list of 40 merges
    // would spell out a terabyte. Real vocabularies are a few MB at most.
    spelled_bytes += bytes_[a].size() + bytes_[b].size();
    TAPELM_CHECK(spelled_bytes <= (size_t(64) << 20), "bpe tokenizer: merges spell out more than 64 MB of tokens");
    bytes_.push_back(bytes_[a] + bytes_[b]);
  }
}

std::vector<int32_t> BPETokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  std::unordered_map<std::string, std::vector<int32_t>> cache;
  for (const std::string& chunk : bpe_chunks(text)) {
    auto it = cache.find(chunk);
    if (it == cache.end()) {
      std::vector<int32_t> w(chunk.begin(), chunk.end());
      for (auto& t : w) t = (unsigned char)t;
      // Repeatedly apply the earliest-learned merge present (GPT-2's rule).
      while (w.size() > 1) {
        int32_t best_rank = INT32_MAX;
        for (size_t k = 0; k + 1 < w.size(); ++k) {
          auto r = rank_.find({w[k], w[k + 1]});
          if (r != rank_.end()) best_rank = std::min(best_rank, r->second);
        }
        if (best_rank == INT32_MAX) break;
        auto [a, b] = merges_[best_rank];
        size_t out = 0;
        for (size_t k = 0; k < w.size(); ++k) {
          if (k + 1 < w.size() && w[k] == a && w[k + 1] == b) {
            w[out++] = 256 + best_rank;
            ++k;
          } else {
            w[out++] = w[k];
          }
        }
        w.resize(out);
      }
      it = cache.emplace(chunk, std::move(w)).first;
    }
    ids.insert(ids.end(), it->second.begin(), it->second.end());
  }
  return ids;
}

std::string BPETokenizer::decode(const std::vector<int32_t>& ids) const {
  check_ids("bpe", ids, vocab_size());
  std::string out;
  for (int32_t id : ids) out += bytes_[id];
  return out;
}

std::string BPETokenizer::to_json() const {
  nlohmann::json m = nlohmann::json::array();
  for (auto [a, b] : merges_) m.push_back({a, b});
  return nlohmann::json{{"kind", "bpe"}, {"merges", m}}.dump();
}

}  // namespace tapelm::data
