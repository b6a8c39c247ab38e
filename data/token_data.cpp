#include "data/token_data.h"
#include "data/tokenizers.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/error.h"
#include "data/corpus.h"
#include "data/gpt2_tokenizer.h"

namespace fs = std::filesystem;

namespace tapelm::data {

std::optional<TokenData> find_token_data(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return std::nullopt;
  std::vector<std::string> train, val;
  std::string layout;
  if (fs::is_regular_file(fs::path(dir) / "train.bin") && fs::is_regular_file(fs::path(dir) / "val.bin")) {
    layout = "nanoGPT";
    train = {(fs::path(dir) / "train.bin").string()};
    val = {(fs::path(dir) / "val.bin").string()};
  } else {
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file() || e.path().extension() != ".bin") continue;
      if (name.find("train") != std::string::npos) train.push_back(e.path().string());
      if (name.find("val") != std::string::npos) val.push_back(e.path().string());
    }
    if (train.empty() && val.empty()) return std::nullopt;
    layout = "shards";
    TAPELM_CHECK(!train.empty() && !val.empty(),
                 "token data {}: shards for {} but none for {} (names holding 'train' and 'val')", dir,
                 train.empty() ? "validation" : "training", train.empty() ? "training" : "validation");
    std::sort(train.begin(), train.end());
    std::sort(val.begin(), val.end());
  }
  auto open_all = [](const std::vector<std::string>& paths) {
    std::vector<TokenFile> files;
    for (const std::string& p : paths) files.push_back(TokenFile::open(p));
    return std::make_shared<const TokenSequence>(std::move(files));
  };
  TokenData d;
  d.dir = dir, d.layout = layout;
  d.train = open_all(train);
  d.val = open_all(val);
  // tapelm's index, when there is one, must agree with the shards it lists.
  const fs::path index_path = fs::path(dir) / "index.json";
  if (fs::exists(index_path)) {
    nlohmann::json index;
    try {
      std::ifstream in(index_path);
      index = nlohmann::json::parse(in);
      for (const auto& s : index.at("shards")) {
        const std::string file = (fs::path(dir) / s.at("file").get<std::string>()).string();
        const auto& list = s.at("split") == "val" ? val : train;
        TAPELM_CHECK(std::find(list.begin(), list.end(), file) != list.end(),
                     "token data {}: index.json lists {}, which is not there", dir, file);
        const int64_t want = s.at("tokens").get<int64_t>(), have = TokenFile::open(file).size();
        TAPELM_CHECK(want == have, "token data {}: index.json says {} holds {} tokens, it holds {}", dir, file, want,
                     have);
      }
      TAPELM_CHECK(index.at("shards").size() == train.size() + val.size(),
                   "token data {}: index.json lists {} shards, the folder has {}", dir, index.at("shards").size(),
                   train.size() + val.size());
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("token data {}: index.json is not tapelm's index: {}", dir, e.what()));
    }
  }
  const fs::path tok = fs::path(dir) / "tokenizer.json";
  if (fs::exists(tok)) {
    d.tokenizer = tokenizer_from_json(read_file(tok.string(), "token data " + dir));
  } else {
    d.tokenizer = GPT2Tokenizer::shipped();
  }
  d.tokenizer_kind = d.tokenizer->kind();
  // Ids must fit the files' type: a vocabulary past 65,536 in uint16 files cannot be these tokens.
  for (const auto* seq : {d.train.get(), d.val.get()})
    for (const TokenFile& f : seq->files())
      TAPELM_CHECK(f.token_bytes() == 4 || d.tokenizer->vocab_size() <= 65536,
                   "token data {}: {} stores 16-bit ids but the tokenizer has {} tokens", dir, f.path(),
                   d.tokenizer->vocab_size());
  return d;
}

std::shared_ptr<const DocumentIndex> documents_of(const TokenData& d, const std::string& split) {
  const TokenSequence& tokens = *(split == "val" ? d.val : d.train);
  const fs::path path = fs::path(d.dir) / fmt::format("documents_{}.idx", split);
  if (!fs::exists(path)) {
    TAPELM_CHECK(!fs::exists(fs::path(d.dir) / "index.json"),
                 "token data {}: no document index ({}): it was tokenized by a tapelm that recorded no documents; run "
                 "tapelm tokenize again",
                 d.dir, path.string());
    TAPELM_CHECK(d.tokenizer_kind == "gpt2",
                 "token data {}: no document index ({}), and its {} tokenizer has no end-of-text token to find "
                 "documents by",
                 d.dir, path.string(), d.tokenizer_kind);
    index_documents_between(tokens, GPT2Tokenizer::kEndOfText, path.string());
  }
  return DocumentIndex::open(path.string(), tokens.size());
}

void check_made_with(const TokenData& d, const Tokenizer& tokenizer, const std::string& who) {
  TAPELM_CHECK(d.tokenizer->to_json() == tokenizer.to_json(),
               "{}: the token files in {} were made with another tokenizer than the checkpoint's ({})", who, d.dir,
               tokenizer.kind());
}

}  // namespace tapelm::data
