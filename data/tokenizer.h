// Tokenizers: text bytes <-> int32 token ids. Every one round-trips any input
// exactly, bytes that are not valid UTF-8 included, and saves as JSON (stored
// in the checkpoint's metadata, so a checkpoint alone can decode).
//   char: one token per Unicode character seen in the corpus (nanoGPT's
//         shakespeare_char); an invalid UTF-8 byte is a character of its own.
//   byte: the 256 byte values.
//   bpe:  byte-level byte-pair encoding (Sennrich et al. 2016; GPT-2's byte
//         level), merges learned on the corpus up to a vocabulary size, inside
//         chunks split at word boundaries (a leading space stays with its word).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tapelm::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;
  virtual int64_t vocab_size() const = 0;
  // Throws Error for text the tokenizer cannot represent (a char tokenizer
  // meeting a character it never saw).
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual std::string to_json() const = 0;  // read back by tokenizer_from_json (data/tokenizers.h)
};

// Each token's length in bytes (its decoded text), indexed by id: what a
// token stands for in bits per byte, and where tokens start in their text.
std::vector<int64_t> token_byte_lengths(const Tokenizer& tok);

class CharTokenizer : public Tokenizer {
 public:
  explicit CharTokenizer(const std::string& corpus);
  explicit CharTokenizer(std::vector<uint32_t> symbols);
  std::string kind() const override { return "char"; }
  int64_t vocab_size() const override { return (int64_t)symbols_.size(); }
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  std::string to_json() const override;

 private:
  std::vector<uint32_t> symbols_;  // sorted code points (0x110000+b for a stray byte b)
  std::map<uint32_t, int32_t> index_;
};

class ByteTokenizer : public Tokenizer {
 public:
  std::string kind() const override { return "byte"; }
  int64_t vocab_size() const override { return 256; }
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  std::string to_json() const override;
};

class BPETokenizer : public Tokenizer {
 public:
  // Learns vocab_size − 256 merges on the corpus (vocab_size ≥ 256).
  BPETokenizer(const std::string& corpus, int64_t vocab_size);
  explicit BPETokenizer(std::vector<std::pair<int32_t, int32_t>> merges);
  std::string kind() const override { return "bpe"; }
  int64_t vocab_size() const override { return 256 + (int64_t)merges_.size(); }
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  std::string to_json() const override;

 private:
  void build_tables();
  std::vector<std::pair<int32_t, int32_t>> merges_;  // merge i creates token 256+i
  std::map<std::pair<int32_t, int32_t>, int32_t> rank_;
  std::vector<std::string> bytes_;  // token -> its bytes
};

// Splits text into BPE chunks (exposed for tests).
std::vector<std::string> bpe_chunks(const std::string& text);

}  // namespace tapelm::data
