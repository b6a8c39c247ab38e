#include "data/gpt2_tokenizer.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/error.h"
#include "autograd/json_int.h"
#include "data/corpus.h"
#include "data/utf8.h"

namespace tapelm::data {

namespace {

struct CodeRange {
  uint32_t first, last;
};
#include "data/unicode_classes.inc"

template <size_t N>
bool in_class(const CodeRange (&ranges)[N], uint32_t cp) {
  const CodeRange* it =
      std::upper_bound(ranges, ranges + N, cp, [](uint32_t c, const CodeRange& r) { return c < r.first; });
  return it != ranges && cp <= (it - 1)->last;
}

// The pattern's classes: \p{L}, \p{N}, \s, and everything else (a stray byte too).
enum class Kind { letter, number, space, other };
Kind kind_of(uint32_t cp) {
  if (cp < 128) {  // the common case without a search
    if ((cp | 32) >= 'a' && (cp | 32) <= 'z') return Kind::letter;
    if (cp >= '0' && cp <= '9') return Kind::number;
    if (cp == ' ' || (cp >= 9 && cp <= 13)) return Kind::space;
    return Kind::other;
  }
  if (cp >= kStrayByte) return Kind::other;
  if (in_class(kLetter, cp)) return Kind::letter;
  if (in_class(kNumber, cp)) return Kind::number;
  if (in_class(kSpace, cp)) return Kind::space;
  return Kind::other;
}

Kind kind_at(std::string_view s, size_t i) { return kind_of(utf8_symbol_at(s, i).cp); }

// One past the run of symbols of kind k that starts at byte i.
size_t run_end(std::string_view s, size_t i, Kind k) {
  while (i < s.size()) {
    const Utf8Symbol y = utf8_symbol_at(s, i);
    if (kind_of(y.cp) != k) break;
    i += y.bytes;
  }
  return i;
}

}  // namespace

// GPT-2's bytes_to_unicode: the printable Latin-1 bytes stand for themselves,
// the other 68 become U+0100 onwards in byte order.
std::array<uint32_t, 256> gpt2_byte_to_printable() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    map[b] = printable ? (uint32_t)b : next++;
  }
  return map;
}

std::string gpt2_printable(std::string_view bytes) {
  static const std::array<uint32_t, 256> printable = gpt2_byte_to_printable();
  std::string s;
  for (unsigned char b : bytes) append_symbol(s, printable[b]);
  return s;
}

void for_each_gpt2_chunk(std::string_view text, const std::function<void(std::string_view)>& chunk) {
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const Utf8Symbol first = utf8_symbol_at(text, i);
    size_t end = i;
    // 's 't 're 've 'm 'll 'd (case-sensitive, as the pattern)
    if (first.cp == '\'' && i + 1 < n) {
      const char a = text[i + 1], b = i + 2 < n ? text[i + 2] : '\0';
      if (a == 's' || a == 't' || a == 'm' || a == 'd')
        end = i + 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        end = i + 3;
    }
    if (end == i) {
      // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': an optional space, then a run of one class.
      size_t start = i;
      Kind k = kind_of(first.cp);
      if (first.cp == ' ' && i + 1 < n) {
        const Kind next = kind_at(text, i + 1);
        if (next != Kind::space) start = i + 1, k = next;
      }
      if (k != Kind::space) {
        end = run_end(text, start, k);
      } else {
        // '\s+(?!\S)' takes a run of spaces but leaves its last one to the word after it;
        // a single space before a word is '\s+' alone.
        size_t last = i, j = i;  // last: where the run's last symbol starts
        while (j < n) {
          const Utf8Symbol y = utf8_symbol_at(text, j);
          if (kind_of(y.cp) != Kind::space) break;
          last = j;
          j += y.bytes;
        }
        end = j < n && last > i ? last : j;
      }
    }
    chunk(text.substr(i, end - i));
    i = end;
  }
}

std::vector<std::string> gpt2_chunks(const std::string& text) {
  std::vector<std::string> out;
  for_each_gpt2_chunk(text, [&](std::string_view c) { out.emplace_back(c); });
  return out;
}

GPT2Tokenizer::GPT2Tokenizer(std::vector<std::string> vocab, std::vector<std::array<int32_t, 2>> merges)
    : vocab_(std::move(vocab)), merges_(std::move(merges)) {
  const std::array<uint32_t, 256> printable = gpt2_byte_to_printable();
  std::unordered_map<uint32_t, int> byte_of;
  for (int b = 0; b < 256; ++b) byte_of[printable[b]] = b;
  std::unordered_map<std::string, int32_t> id_of;
  bytes_.resize(vocab_.size());
  for (size_t id = 0; id < vocab_.size(); ++id) {
    TAPELM_CHECK(id_of.emplace(vocab_[id], (int32_t)id).second, "gpt2 tokenizer: token '{}' appears twice", vocab_[id]);
    for (uint32_t cp : utf8_symbols(vocab_[id])) {
      auto it = byte_of.find(cp);
      TAPELM_CHECK(it != byte_of.end(), "gpt2 tokenizer: token {} ('{}') has a character no byte stands for", id,
                   vocab_[id]);
      bytes_[id] += (char)it->second;
    }
  }
  for (int b = 0; b < 256; ++b) {
    std::string one;
    append_symbol(one, printable[b]);
    auto it = id_of.find(one);
    TAPELM_CHECK(it != id_of.end(), "gpt2 tokenizer: no token for byte 0x{:02X}", b);
    byte_token_[b] = it->second;
  }
  for (size_t r = 0; r < merges_.size(); ++r) {
    const auto [a, b] = merges_[r];
    TAPELM_CHECK(a >= 0 && b >= 0 && a < (int64_t)vocab_.size() && b < (int64_t)vocab_.size(),
                 "gpt2 tokenizer: merge {} has an id out of range", r);
    auto it = id_of.find(vocab_[a] + vocab_[b]);
    TAPELM_CHECK(it != id_of.end(), "gpt2 tokenizer: merge {} ('{}' '{}') makes no token of the vocabulary", r,
                 vocab_[a], vocab_[b]);
    merge_of_.emplace((uint64_t)a << 32 | (uint32_t)b, Merge{(int32_t)r, it->second});
  }
}

std::unique_ptr<GPT2Tokenizer> GPT2Tokenizer::from_files(const std::string& encoder_json,
                                                         const std::string& vocab_bpe) {
  nlohmann::json enc;
  try {
    enc = nlohmann::json::parse(read_file(encoder_json, "gpt2 tokenizer"));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("gpt2 tokenizer: {} is not JSON: {}", encoder_json, e.what()));
  }
  TAPELM_CHECK(enc.is_object() && !enc.empty(), "gpt2 tokenizer: {} is not a token -> id object", encoder_json);
  std::vector<std::string> vocab(enc.size());
  std::unordered_map<std::string, int32_t> id_of;
  for (auto& [token, v] : enc.items()) {
    const auto id = json_int64(v);
    TAPELM_CHECK(id && *id >= 0 && *id < (int64_t)vocab.size() && vocab[*id].empty(),
                 "gpt2 tokenizer: {}: token '{}' has id {}, not one of 0..{} used once", encoder_json, token, v.dump(),
                 vocab.size() - 1);
    vocab[*id] = token;
    id_of[token] = (int32_t)*id;
  }
  std::istringstream lines(read_file(vocab_bpe, "gpt2 tokenizer"));
  std::string line;
  std::vector<std::array<int32_t, 2>> merges;
  int64_t number = 0;
  while (std::getline(lines, line)) {
    ++number;
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const size_t space = line.find(' ');
    TAPELM_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size(),
                 "gpt2 tokenizer: {} line {} is not 'left right'", vocab_bpe, number);
    auto a = id_of.find(line.substr(0, space)), b = id_of.find(line.substr(space + 1));
    TAPELM_CHECK(a != id_of.end() && b != id_of.end(), "gpt2 tokenizer: {} line {}: '{}' names a token {} lacks",
                 vocab_bpe, number, line, encoder_json);
    merges.push_back({a->second, b->second});
  }
  return std::make_unique<GPT2Tokenizer>(std::move(vocab), std::move(merges));
}

std::unique_ptr<GPT2Tokenizer> GPT2Tokenizer::shipped() {
  const char* env = std::getenv("TAPELM_GPT2_DIR");
  const std::string dir = env && *env ? env : TAPELM_GPT2_DIR;
  return from_files(dir + "/encoder.json", dir + "/vocab.bpe");
}

void GPT2Tokenizer::encode_chunk(std::string_view chunk, std::vector<int32_t>& out) const {
  std::vector<int32_t> word(chunk.size());
  for (size_t i = 0; i < chunk.size(); ++i) word[i] = byte_token_[(unsigned char)chunk[i]];
  // GPT-2's bpe(): merge every occurrence of the lowest-ranked adjacent pair, left to right, until none merges.
  while (word.size() > 1) {
    Merge best{INT32_MAX, -1};
    int32_t left = -1, right = -1;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = merge_of_.find((uint64_t)word[i] << 32 | (uint32_t)word[i + 1]);
      if (it != merge_of_.end() && it->second.rank < best.rank) best = it->second, left = word[i], right = word[i + 1];
    }
    if (best.token < 0) break;
    size_t w = 0;
    for (size_t i = 0; i < word.size(); ++i) {
      if (i + 1 < word.size() && word[i] == left && word[i + 1] == right) {
        word[w++] = best.token;
        ++i;
      } else {
        word[w++] = word[i];
      }
    }
    word.resize(w);
  }
  out.insert(out.end(), word.begin(), word.end());
}

namespace {

// A 64-bit hash of a chunk, eight bytes at a time (chunks are mostly a word
// and its leading space: one or two steps). Mixing constants of SplitMix64.
uint64_t chunk_hash(std::string_view s) {
  uint64_t h = s.size() * 0x9E3779B97F4A7C15ull;
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  uint64_t w = 0;
  std::memcpy(&w, s.data() + i, s.size() - i);
  h = (h ^ w) * 0x94D049BB133111EBull;
  return h ^ (h >> 29);
}

// Chunk → the range of its ids already emitted, for one encode() call: open
// addressing over the chunks' hashes in one flat array (a lookup is one or two
// cache lines; std::unordered_map's chained nodes were a third of tokenize's
// time). Bounded: past kMaxEntries distinct chunks new ones are not kept.
class ChunkCache {
 public:
  struct Hit {
    size_t from, count;
  };
  // The cached range of `chunk`, or nullptr.
  const Hit* find(std::string_view chunk, uint64_t hash) const {
    if (slots_.empty()) return nullptr;
    for (size_t i = hash & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (!s.chunk) return nullptr;
      if (s.hash == hash && s.length == chunk.size() && std::memcmp(s.chunk, chunk.data(), chunk.size()) == 0)
        return &s.ids;
    }
  }
  void insert(std::string_view chunk, uint64_t hash, Hit ids) {
    if (size_ >= kMaxEntries) return;
    if (2 * (size_ + 1) > slots_.size()) grow();
    place({hash, chunk.data(), chunk.size(), ids});
    ++size_;
  }

 private:
  static constexpr size_t kMaxEntries = 1 << 18;
  struct Slot {
    uint64_t hash = 0;
    const char* chunk = nullptr;  // in the text being encoded
    size_t length = 0;
    Hit ids{};
  };
  void place(const Slot& e) {
    size_t i = e.hash & mask_;
    while (slots_[i].chunk) i = (i + 1) & mask_;
    slots_[i] = e;
  }
  void grow() {
    const std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 1 << 12 : 2 * old.size(), Slot{});
    mask_ = slots_.size() - 1;
    for (const Slot& e : old)
      if (e.chunk) place(e);
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

}  // namespace

std::vector<int32_t> GPT2Tokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3);
  // Words repeat: each distinct chunk is merged once per call (as encoder.py's cache does).
  ChunkCache seen;
  for_each_gpt2_chunk(text, [&](std::string_view chunk) {
    const uint64_t hash = chunk_hash(chunk);
    if (const ChunkCache::Hit* hit = seen.find(chunk, hash)) {
      const size_t at = ids.size();
      ids.resize(at + hit->count);
      std::copy_n(ids.begin() + (ptrdiff_t)hit->from, hit->count, ids.begin() + (ptrdiff_t)at);
      return;
    }
    const size_t from = ids.size();
    encode_chunk(chunk, ids);
    seen.insert(chunk, hash, {from, ids.size() - from});
  });
  return ids;
}

std::string GPT2Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    TAPELM_CHECK(id >= 0 && id < vocab_size(), "gpt2 tokenizer: token id {} out of range for vocabulary {}", id,
                 vocab_size());
    out += bytes_[id];
  }
  return out;
}

std::string GPT2Tokenizer::to_json() const {
  return nlohmann::json{{"kind", "gpt2"}, {"vocab", vocab_}, {"merges", merges_}}.dump();
}

}  // namespace tapelm::data
