// GPT-2's tokenizer against the reference encoder (ids in
// tests/golden/gpt2_tokens.json, made by npm gpt-3-encoder with
// tests/golden/gpt2_tokens.js), its pre-tokenizer, round trips and bad files.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/gpt2_tokenizer.h"
#include "data/tokenizers.h"
#include "tests/test_helpers.h"

using namespace tapelm;
using namespace tapelm::data;

namespace {

std::string source(const std::string& rel) {
  const char* src = std::getenv("TAPELM_SOURCE_DIR");  // the tests may run from a copy on another machine
  return std::string(src ? src : TAPELM_SOURCE_DIR) + "/" + rel;
}

const GPT2Tokenizer& gpt2() {
  static const std::unique_ptr<GPT2Tokenizer> tok =
      GPT2Tokenizer::from_files(source("data/gpt2/encoder.json"), source("data/gpt2/vocab.bpe"));
  return *tok;
}

}  // namespace

TEST(Gpt2Tokenizer, MatchesTheReferenceEncoderOnEveryUnicodeCategory) {
  std::ifstream in(source("tests/golden/gpt2_tokens.json"));
  ASSERT_TRUE(in.good());
  const nlohmann::json golden = nlohmann::json::parse(in);
  const std::string text = golden.at("text");
  const std::vector<int32_t> want = golden.at("ids").get<std::vector<int32_t>>();
  const std::vector<int32_t> got = gpt2().encode(text);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << "token " << i;
  EXPECT_EQ(gpt2().decode(got), text);
  EXPECT_EQ(gpt2().vocab_size(), 50257);
}

TEST(Gpt2Tokenizer, KnownIdsAndTheEndOfTextToken) {
  // "Hello world" is [15496, 995] in GPT-2; the special token decodes to its text.
  EXPECT_EQ(gpt2().encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(gpt2().decode({50256}), "<|endoftext|>");
}

TEST(Gpt2Tokenizer, PreTokenizerCutsWhereThePatternDoes) {
  using V = std::vector<std::string>;
  EXPECT_EQ(gpt2_chunks("Hello  world"), (V{"Hello", " ", " world"}));  // \s+(?!\S) leaves one space to the word
  EXPECT_EQ(gpt2_chunks("don't"), (V{"don", "'t"}));
  EXPECT_EQ(gpt2_chunks("x\n\ny"), (V{"x", "\n", "\n", "y"}));
  EXPECT_EQ(gpt2_chunks("a 123!? "), (V{"a", " 123", "!?", " "}));
  EXPECT_EQ(gpt2_chunks("café 東京"), (V{"café", " 東京"}));
  EXPECT_EQ(gpt2_chunks(""), V{});
}

TEST(Gpt2Tokenizer, AnyBytesRoundTripAndTheJsonFormKeepsTheIds) {
  std::string bytes;
  for (int b = 0; b < 256; ++b) bytes += (char)b;
  bytes += "\xC3\x28 \xE2\x82 tail";  // invalid UTF-8 sequences
  EXPECT_EQ(gpt2().decode(gpt2().encode(bytes)), bytes);
  std::string chunks;
  for (const std::string& c : gpt2_chunks(bytes)) chunks += c;
  EXPECT_EQ(chunks, bytes);
  const auto again = tokenizer_from_json(gpt2().to_json());
  EXPECT_EQ(again->kind(), "gpt2");
  const std::string text = "The quick brown fox, naïvely: 42 ×3 🦊";
  EXPECT_EQ(again->encode(text), gpt2().encode(text));
}

TEST(Gpt2Tokenizer, BadFilesAreOneClearError) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "tapelm_gpt2_bad";
  std::filesystem::create_directories(dir);
  EXPECT_ERROR_CONTAINS(GPT2Tokenizer::from_files((dir / "missing.json").string(), source("data/gpt2/vocab.bpe")),
                        "cannot read");
  std::ofstream(dir / "encoder.json") << R"({"a": 0, "b": 1})";
  std::ofstream(dir / "vocab.bpe") << "#version: 0.2\na c\n";
  EXPECT_ERROR_CONTAINS(GPT2Tokenizer::from_files((dir / "encoder.json").string(), (dir / "vocab.bpe").string()),
                        "line 2");
  std::ofstream(dir / "encoder.json") << "{not json";
  EXPECT_ERROR_CONTAINS(GPT2Tokenizer::from_files((dir / "encoder.json").string(), (dir / "vocab.bpe").string()),
                        "is not JSON");
  std::filesystem::remove_all(dir);
}
