// A folder of tokenized data, as tapelm, nanoGPT or llm.c prepare it:
//   nanoGPT: train.bin and val.bin (raw uint16, or shards);
//   llm.c:   shards whose names hold "train" or "val" (e.g.
//            fineweb_train_000001.bin), read in name order;
//   tapelm:  its shards the same way, with tokenizer.json beside them.
// The tokenizer is tokenizer.json's when there is one, else GPT-2's (what
// nanoGPT's and llm.c's GPT-2 data were made with). The train/validation split
// is the files', and so are the documents (data/document_index.h).
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/document_index.h"
#include "data/token_file.h"
#include "data/tokenizer.h"

namespace tapelm::data {

struct TokenData {
  std::string dir, layout;  // layout: "nanoGPT" or "shards"
  std::shared_ptr<const TokenSequence> train, val;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string tokenizer_kind;  // the tokenizer's, kept when a run takes the tokenizer itself
};

// The folder's token data, or nothing when it holds none (a folder of text);
// an Error naming the file when it holds token data that cannot be read.
std::optional<TokenData> find_token_data(const std::string& dir);

// The documents of a split ("train" or "val"): tapelm's document index, or
// for GPT-2 data made elsewhere, found by one scan for <|endoftext|> and saved
// beside the shards (documents_<split>.idx) for the next run.
std::shared_ptr<const DocumentIndex> documents_of(const TokenData& d, const std::string& split);

// An Error naming `who` unless the data was made with `tokenizer` (a checkpoint's).
void check_made_with(const TokenData& d, const Tokenizer& tokenizer, const std::string& who);

}  // namespace tapelm::data
