// GPT-2's tokenizer (Radford et al. 2019): byte-level BPE over chunks cut by
// GPT-2's pre-tokenization pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with its 50,257 tokens, loaded from OpenAI's published encoder.json and
// vocab.bpe (data/gpt2/, shipped). Its ids equal the reference encoder's
// (npm gpt-3-encoder, OpenAI's encoder.py ported) token for token
// (tests/test_gpt2_tokenizer.cpp against ids that encoder produced).
// Bytes that are not valid UTF-8 are chunked as symbols of their own and
// still round-trip, since every byte is a token.
#pragma once
#include <array>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/tokenizer.h"

namespace tapelm::data {

class GPT2Tokenizer : public Tokenizer {
 public:
  // <|endoftext|>: the last id, which nanoGPT's and llm.c's data put between documents.
  static constexpr int32_t kEndOfText = 50256;
  // vocab: each id's token as GPT-2 writes it (every byte as a printable
  // character, bytes_to_unicode); merges: pairs of ids in rank order, each
  // making the token that is their concatenation.
  GPT2Tokenizer(std::vector<std::string> vocab, std::vector<std::array<int32_t, 2>> merges);
  // From encoder.json and vocab.bpe; an Error naming the file when one is
  // missing or not GPT-2's shape.
  static std::unique_ptr<GPT2Tokenizer> from_files(const std::string& encoder_json, const std::string& vocab_bpe);
  // From the files shipped in data/gpt2/ (TAPELM_GPT2_DIR overrides where).
  static std::unique_ptr<GPT2Tokenizer> shipped();

  std::string kind() const override { return "gpt2"; }
  int64_t vocab_size() const override { return (int64_t)vocab_.size(); }
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  std::string to_json() const override;

 private:
  void encode_chunk(std::string_view chunk, std::vector<int32_t>& out) const;
  std::vector<std::string> vocab_;              // id -> token in GPT-2's printable form
  std::vector<std::array<int32_t, 2>> merges_;  // rank -> the pair it merges
  std::vector<std::string> bytes_;              // id -> its bytes
  std::array<int32_t, 256> byte_token_{};       // byte -> its one-byte token
  struct Merge {
    int32_t rank, token;
  };
  std::unordered_map<uint64_t, Merge> merge_of_;  // (left << 32 | right) -> rank and result
};

// GPT-2's bytes_to_unicode: the character each byte is written as in its
// vocabulary (the printable Latin-1 bytes as themselves, the other 68 as
// U+0100 onwards in byte order); every byte-level BPE vocabulary uses it.
std::array<uint32_t, 256> gpt2_byte_to_printable();
// Bytes as a byte-level BPE vocabulary writes them, each as its character above.
std::string gpt2_printable(std::string_view bytes);

// GPT-2's pre-tokenization: the chunks (as byte strings) that the pattern
// above matches one after another; they concatenate to the text.
std::vector<std::string> gpt2_chunks(const std::string& text);
// The same chunks as views into text, one call each, without copies.
void for_each_gpt2_chunk(std::string_view text, const std::function<void(std::string_view)>& chunk);

}  // namespace tapelm::data
