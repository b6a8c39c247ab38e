// Hostile input, deterministically: thousands of mutations of a real
// checkpoint file, of a config and of tokenizer descriptions, each read the
// way a checkpoint is loaded. Every one must give a value or a tapelm::Error:
// no other exception, no crash, and (under ./dev.sh sanitize) no sanitizer
// report. The libFuzzer harnesses in fuzz/ explore further; this keeps the
// guarantee in every CI run.
#include <cctype>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/safetensors.h"
#include "data/tokenizer.h"
#include "data/tokenizers.h"
#include "nn/config.h"
#include "tests/test_helpers.h"

using namespace tapelm;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Values that break naive size arithmetic, spliced in where numbers were.
const std::vector<std::string> kNasty = {"0",
                                         "-1",
                                         "4611686018427387904",
                                         "9223372036854775807",
                                         "18446744073709551615",
                                         "1e30",
                                         "-1e30",
                                         "0.5",
                                         "99999999999999999999999",
                                         "null",
                                         "[]",
                                         "{}",
                                         "\"x\""};

// One deterministic mutation of `s`: a bit flip, a random byte, a cut, a
// copied or dropped chunk, or a number replaced by a nasty value.
std::string mutate(const std::string& s, std::mt19937_64& rng) {
  std::string m = s;
  auto pos = [&](size_t n) { return n ? rng() % n : 0; };
  switch (rng() % 6) {
    case 0:
      if (!m.empty()) m[pos(m.size())] ^= char(1 << (rng() % 8));
      break;
    case 1:
      if (!m.empty()) m[pos(m.size())] = char(rng());
      break;
    case 2:
      m.resize(pos(m.size() + 1));
      break;
    case 3: {
      const size_t a = pos(m.size()), n = pos(m.size() - a + 1);
      m.insert(pos(m.size()), m.substr(a, n));
      break;
    }
    case 4: {
      const size_t a = pos(m.size()), n = pos(m.size() - a + 1);
      m.erase(a, n);
      break;
    }
    default: {  // replace the digits around a random position
      size_t a = pos(m.size());
      while (a < m.size() && !std::isdigit((unsigned char)m[a])) ++a;
      if (a == m.size()) break;
      size_t b = a;
      while (b < m.size() && std::isdigit((unsigned char)m[b])) ++b;
      m.replace(a, b - a, kNasty[rng() % kNasty.size()]);
    }
  }
  return m;
}

// Loads `bytes` as a checkpoint's model.safetensors is loaded: the tensors,
// then the config and the tokenizer from its metadata; a built tokenizer must
// round-trip a text. Fails the test on anything but a value or an Error.
void load_like_a_checkpoint(const std::string& bytes) {
  try {
    std::istringstream in(bytes);
    TensorFile f = read_safetensors(in, (int64_t)bytes.size(), "mutant.safetensors");
    if (f.metadata.count("config")) nn::ModelConfig::from_json(f.metadata["config"]);
    if (f.metadata.count("tokenizer")) {
      auto tok = data::tokenizer_from_json(f.metadata["tokenizer"]);
      const std::string text = "To be, or not to be";
      try {
        const auto ids = tok->encode(text);
        ASSERT_EQ(tok->decode(ids), text);
      } catch (const Error&) {  // a character the vocabulary lacks
      }
    }
  } catch (const Error&) {
  } catch (const std::exception& e) {
    FAIL() << "not a tapelm::Error: " << e.what();
  }
}

}  // namespace

TEST(HostileInput, MutatedCheckpointsGiveAValueOrAnError) {
  const std::string seed = read_file(std::string(TAPELM_SOURCE_DIR) + "/fuzz/corpus/safetensors/model.safetensors");
  ASSERT_GT(seed.size(), 1000u);
  load_like_a_checkpoint(seed);  // the seed itself loads
  std::mt19937_64 rng(20261124);
  for (int i = 0; i < 4000; ++i) {
    std::string m = mutate(seed, rng);
    if (i % 4 == 0) m = mutate(m, rng);  // some with two mutations
    load_like_a_checkpoint(m);
    if (HasFatalFailure() || HasNonfatalFailure()) {
      ADD_FAILURE() << "mutant " << i;
      return;
    }
  }
}

TEST(HostileInput, MutatedConfigsAndTokenizersGiveAValueOrAnError) {
  const std::string dir = std::string(TAPELM_SOURCE_DIR) + "/fuzz/corpus/";
  const std::vector<std::string> configs = {read_file(dir + "config/model.json"),
                                            read_file(dir + "config/mamba2.json")};
  const std::vector<std::string> tokenizers = {R"({"kind":"char","symbols":[32,44,84,97,98,101,110,111,114,116]})",
                                               R"({"kind":"byte"})",
                                               R"({"kind":"bpe","merges":[[116,104],[256,101],[32,257]]})"};
  std::mt19937_64 rng(7);
  for (int i = 0; i < 3000; ++i) {
    const std::string c = mutate(configs[i % configs.size()], rng);
    try {
      nn::ModelConfig::from_json(c);
    } catch (const Error&) {
    } catch (const std::exception& e) {
      FAIL() << "config mutant " << i << " (" << c << "): not a tapelm::Error: " << e.what();
    }
    const std::string t = mutate(tokenizers[i % tokenizers.size()], rng);
    try {
      auto tok = data::tokenizer_from_json(t);
      const std::string text = "the theme: To be, or not to be";
      try {
        ASSERT_EQ(tok->decode(tok->encode(text)), text) << t;
      } catch (const Error&) {
      }
    } catch (const Error&) {
    } catch (const std::exception& e) {
      FAIL() << "tokenizer mutant " << i << " (" << t << "): not a tapelm::Error: " << e.what();
    }
  }
}
