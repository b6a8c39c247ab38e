#include "data/tokenizers.h"

#include <array>
#include <nlohmann/json.hpp>

#include "autograd/error.h"
#include "autograd/json_int.h"
#include "data/gpt2_tokenizer.h"
#include "data/utf8.h"

namespace tapelm::data {

std::unique_ptr<Tokenizer> tokenizer_from_json(const std::string& text) {
  try {
    auto j = nlohmann::json::parse(text);
    std::string kind = j.at("kind").get<std::string>();
    // An integer in [0, limit), or an Error naming the field.
    auto index = [](const nlohmann::json& v, int64_t limit, const char* what) {
      const auto i = json_int64(v);
      TAPELM_CHECK(i && *i >= 0 && *i < limit, "tokenizer: {} {} is out of range", what, v.dump());
      return *i;
    };
    if (kind == "char") {
      std::vector<uint32_t> symbols;
      for (auto& v : j.at("symbols")) symbols.push_back((uint32_t)index(v, kStrayByte + 256, "symbol"));
      return std::make_unique<CharTokenizer>(std::move(symbols));
    }
    if (kind == "byte") return std::make_unique<ByteTokenizer>();
    if (kind == "gpt2") {
      std::vector<std::string> vocab = j.at("vocab").get<std::vector<std::string>>();
      std::vector<std::array<int32_t, 2>> merges;
      for (auto& m : j.at("merges")) {
        TAPELM_CHECK(m.is_array() && m.size() == 2, "tokenizer: merge {} is not a pair", m.dump());
        merges.push_back({(int32_t)index(m[0], (int64_t)vocab.size(), "merge part"),
                          (int32_t)index(m[1], (int64_t)vocab.size(), "merge part")});
      }
      return std::make_unique<GPT2Tokenizer>(std::move(vocab), std::move(merges));
    }
    if (kind == "bpe") {
      std::vector<std::pair<int32_t, int32_t>> merges;
      for (auto& m : j.at("merges")) {
        TAPELM_CHECK(m.is_array() && m.size() == 2, "tokenizer: merge {} is not a pair", m.dump());
        const int64_t limit = 256 + (int64_t)merges.size();  // tokens that exist before this merge
        merges.push_back({(int32_t)index(m[0], limit, "merge part"), (int32_t)index(m[1], limit, "merge part")});
      }
      return std::make_unique<BPETokenizer>(std::move(merges));
    }
    throw Error(fmt::format("tokenizer: unknown kind '{}'", kind));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("tokenizer: corrupt description: {}", e.what()));
  }
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& kind, const std::string& corpus, int64_t vocab_size) {
  if (kind == "char") return std::make_unique<CharTokenizer>(corpus);
  if (kind == "byte") return std::make_unique<ByteTokenizer>();
  if (kind == "bpe") return std::make_unique<BPETokenizer>(corpus, vocab_size);
  if (kind == "gpt2") return GPT2Tokenizer::shipped();
  throw Error(fmt::format("tokenizer: unknown kind '{}' (char, byte, bpe or gpt2)", kind));
}

}  // namespace tapelm::data
