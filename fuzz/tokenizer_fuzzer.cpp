// libFuzzer harness for the tokenizers. The input is a tokenizer description
// (a checkpoint's "tokenizer" metadata), a NUL byte, then a text; or, when
// it has no NUL, a corpus to train a char or BPE tokenizer on. Any tokenizer
// that is built and encodes a text must decode it back to the same bytes
// (the tokenizers promise exact round trips, stray bytes included); a
// description may only be refused with tapelm::Error. Built and run by
// ./dev.sh fuzz.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "autograd/error.h"
#include "data/tokenizer.h"
#include "data/tokenizers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::unique_ptr<tapelm::data::Tokenizer> tok;
  std::string text;
  const size_t nul = input.find('\0');
  try {
    if (nul != std::string::npos) {
      tok = tapelm::data::tokenizer_from_json(input.substr(0, nul));
      text = input.substr(nul + 1);
    } else {
      // A corpus: BPE with a few merges if it starts with 'b', else chars.
      const bool bpe = !input.empty() && input[0] == 'b';
      tok = tapelm::data::make_tokenizer(bpe ? "bpe" : "char", input, bpe ? 256 + (int64_t)(size % 64) : 0);
      text = input;
    }
  } catch (const tapelm::Error&) {
    return 0;  // a refused description or corpus
  }
  std::vector<int32_t> ids;
  try {
    ids = tok->encode(text);
  } catch (const tapelm::Error&) {
    return 0;  // a char the vocabulary lacks
  }
  if (tok->decode(ids) != text) std::abort();  // the round trip must be exact
  return 0;
}
