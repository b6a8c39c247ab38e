// The tokenizer kinds by name: a new one (learned on a corpus where the kind
// learns), or one read back from the JSON its to_json() wrote (a checkpoint's
// metadata, a token folder's tokenizer.json).
#pragma once
#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace tapelm::data {

// kind: "char" | "byte" | "bpe" | "gpt2" (vocab_size used by bpe only; gpt2 is
// GPT-2's own, data/gpt2_tokenizer.h).
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& kind, const std::string& corpus, int64_t vocab_size);

// An Error naming what is wrong for a description that is not one.
std::unique_ptr<Tokenizer> tokenizer_from_json(const std::string& json);

}  // namespace tapelm::data
