// train/gguf.h: the file read back by a reader written here from GGUF's
// specification (header, typed metadata, tensor infos, aligned data in each
// type), and llama.cpp itself (node-llama-cpp's prebuilt build, installed by
// dev.sh test into tests/llama_cpp/node_modules) decoding each architecture
// greedily to the same 100 tokens as `tapelm sample --temperature 0`.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "autograd/ops.h"
#include "data/tokenizers.h"
#include "nn/mixers.h"
#include "tests/test_helpers.h"
#include "train/gguf.h"
#include "train/hugging_face.h"
#include "train/sampler.h"

using namespace tapelm;
namespace fs = std::filesystem;

namespace {

// A GGUF file as its specification reads: metadata as JSON, tensors as floats.
struct GgufRead {
  uint32_t version = 0;
  nlohmann::json keys;
  struct Info {
    std::vector<int64_t> dims;  // innermost first
    uint32_t type;
    uint64_t offset;
    std::vector<float> values;
  };
  std::map<std::string, Info> tensors;
};

float from_half(uint16_t h, bool bf16) {
  if (bf16) {
    uint32_t x = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
  _Float16 v;
  std::memcpy(&v, &h, 2);
  return (float)v;
}

GgufRead read_gguf(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  auto raw = [&](auto& v) { in.read(reinterpret_cast<char*>(&v), sizeof(v)); };
  auto str = [&] {
    uint64_t n;
    raw(n);
    std::string s(n, '\0');
    in.read(s.data(), (std::streamsize)n);
    return s;
  };
  std::function<nlohmann::json(uint32_t)> value = [&](uint32_t type) -> nlohmann::json {
    switch (type) {
      case 4: {
        uint32_t v;
        raw(v);
        return v;
      }
      case 5: {
        int32_t v;
        raw(v);
        return v;
      }
      case 6: {
        float v;
        raw(v);
        return v;
      }
      case 7: {
        uint8_t v;
        raw(v);
        return (bool)v;
      }
      case 8:
        return str();
      case 9: {
        uint32_t t;
        uint64_t n;
        raw(t), raw(n);
        nlohmann::json a = nlohmann::json::array();
        for (uint64_t i = 0; i < n; ++i) a.push_back(value(t));
        return a;
      }
    }
    throw Error(fmt::format("gguf reader: value type {}", type));
  };
  char magic[4];
  in.read(magic, 4);
  EXPECT_EQ(std::string(magic, 4), "GGUF");
  GgufRead g;
  uint64_t n_tensors, n_keys;
  raw(g.version), raw(n_tensors), raw(n_keys);
  for (uint64_t i = 0; i < n_keys; ++i) {
    const std::string key = str();
    uint32_t type;
    raw(type);
    g.keys[key] = value(type);
  }
  std::vector<std::string> order;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    const std::string name = str();
    uint32_t n_dims;
    raw(n_dims);
    GgufRead::Info info;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t v;
      raw(v);
      info.dims.push_back((int64_t)v);
    }
    raw(info.type), raw(info.offset);
    g.tensors[name] = info;
    order.push_back(name);
  }
  const uint64_t data_start = ((uint64_t)in.tellg() + 31) / 32 * 32;
  for (const std::string& name : order) {
    GgufRead::Info& t = g.tensors[name];
    EXPECT_EQ(t.offset % 32, 0u) << name;
    int64_t n = 1;
    for (int64_t d : t.dims) n *= d;
    in.seekg((std::streamoff)(data_start + t.offset));
    if (t.type == 0) {
      t.values.resize(n);
      in.read(reinterpret_cast<char*>(t.values.data()), n * 4);
    } else {
      std::vector<uint16_t> h(n);
      in.read(reinterpret_cast<char*>(h.data()), n * 2);
      for (uint16_t x : h) t.values.push_back(from_half(x, t.type == 30));
    }
    EXPECT_TRUE(in.good()) << name << " runs past the end of the file";
  }
  return g;
}

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("tapelm_gguf_" + name + "_" + std::to_string(::getpid()))).string();
}

const fs::path kGoldens = fs::path(TAPELM_SOURCE_DIR) / "tests/golden/hugging_face";

}  // namespace

TEST(Gguf, TheFileReadsBackAsTheSpecificationSays) {
  train::HuggingFaceModel m = train::import_hugging_face((kGoldens / "attention").string());
  const std::string path = temp_path("attention");
  for (const std::string type : {"f32", "f16", "bf16"}) {
    SCOPED_TRACE(type);
    train::export_gguf(*m.model, *m.tokenizer, path, type);
    const GgufRead g = read_gguf(path);
    EXPECT_EQ(g.version, 3u);
    EXPECT_EQ(g.keys["general.architecture"], "gpt2");
    EXPECT_EQ(g.keys["gpt2.block_count"], 2);
    EXPECT_EQ(g.keys["gpt2.context_length"], 128);
    EXPECT_EQ(g.keys["gpt2.attention.head_count"], 2);
    EXPECT_EQ(g.keys["tokenizer.ggml.tokens"].size(), 65u);
    EXPECT_EQ(g.keys["tokenizer.ggml.tokens"][0], "Ċ");  // "\n" as GPT-2 writes byte 10
    EXPECT_EQ(g.tensors.size(), 2u + 2 * 12 + 2);        // embeddings, 12 per block, final norm (head tied)
    // Dimensions innermost first; every value as the model's, rounded to the type for the large matrices.
    std::map<std::string, Tensor> mine;
    for (const auto& p : m.model->state_dict()) mine[p.name] = p.tensor;
    for (auto [gguf_name, name] : {std::pair{"token_embd.weight", "transformer.wte.weight"},
                                   {"blk.1.attn_qkv.weight", "transformer.h.1.attn.c_attn.weight"},
                                   {"blk.0.ffn_norm.bias", "transformer.h.0.ln_2.bias"}}) {
      const auto& t = g.tensors.at(gguf_name);
      const Tensor& w = mine.at(name);
      std::vector<int64_t> dims(w.shape().rbegin(), w.shape().rend());
      EXPECT_EQ(t.dims, dims) << gguf_name;
      const bool half = type != "f32" && w.dim() == 2;
      EXPECT_EQ(t.type, half ? (type == "f16" ? 1u : 30u) : 0u) << gguf_name;
      for (int64_t i = 0; i < w.numel(); ++i) {
        const float x = w.data<float>()[i];
        const double tolerance = half ? std::abs(x) * (type == "f16" ? 0x1p-11 : 0x1p-8) + 1e-7 : 0.0;
        ASSERT_LE(std::abs(t.values[i] - x), tolerance) << gguf_name << " element " << i;
      }
    }
  }
  fs::remove(path);
  // A model llama.cpp has no architecture for is one clear error.
  nn::ModelConfig gla;
  gla.mixer = "gla", gla.vocab_size = 65, gla.n_layer = 1, gla.n_embd = 16, gla.n_head = 2;
  gla = nn::with_recipe(gla, {"mixer", "vocab_size", "n_layer", "n_embd", "n_head"});
  Generator init(0);
  nn::GPT model(gla, init);
  EXPECT_ERROR_CONTAINS(train::export_gguf(model, *m.tokenizer, path), "the gla mixer has no transformers class");
  EXPECT_FALSE(fs::exists(path) || fs::exists(path + ".tmp"));
}

// llama.cpp loads each architecture's fp32 GGUF and decodes the same 100
// greedy tokens as tapelm, giving each the probability tapelm gives it to
// within 1e-5 (5e-4 for gpt2, whose GELU llama.cpp computes in tanh form);
// the f16 and bf16 files load and decode too (their agreement is printed:
// rounded weights may move a close call).
TEST(LlamaCpp, GreedyDecodingEqualsTapelmsForEachArchitecture) {
  const fs::path modules = fs::path(TAPELM_SOURCE_DIR) / "tests/llama_cpp/node_modules";
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no Node.js here: llama.cpp not checked";
  if (!fs::exists(modules / "node-llama-cpp"))
    GTEST_SKIP() << "node-llama-cpp not installed in " << modules
                 << " (dev.sh test installs it): llama.cpp not checked";
  const std::string text = "First Citizen:\nBefore we proceed any further, hear me speak.\n";
  for (const std::string arch : {"attention", "transformer++", "mamba", "mamba2"}) {
    SCOPED_TRACE(arch);
    train::HuggingFaceModel m = train::import_hugging_face((kGoldens / arch).string());
    std::vector<int32_t> prompt = m.tokenizer->encode(text);
    prompt.resize(8);
    train::SampleOptions greedy;
    greedy.temperature = 0, greedy.tokens = 100;
    std::vector<int32_t> mine = train::generate(*m.model, prompt, greedy);
    mine.erase(mine.begin(), mine.begin() + (int64_t)prompt.size());  // the prompt, then the new tokens
    for (const std::string type : {"f32", "f16", "bf16"}) {
      const std::string path = temp_path(arch + "." + type + ".gguf");
      train::export_gguf(*m.model, *m.tokenizer, path, type);
      const std::string command = fmt::format("TAPELM_NODE_MODULES='{}' node '{}' '{}' '{}' 100 2>&1", modules.string(),
                                              (fs::path(TAPELM_SOURCE_DIR) / "tests/llama_cpp/greedy.mjs").string(),
                                              path, nlohmann::json(prompt).dump());
      std::string out;
      std::FILE* p = popen(command.c_str(), "r");
      ASSERT_NE(p, nullptr);
      char buf[4096];
      while (size_t n = std::fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
      ASSERT_EQ(pclose(p), 0) << out;
      fs::remove(path);
      const nlohmann::json result = nlohmann::json::parse(out.substr(out.rfind("{\"tokens\"")));
      const std::vector<int32_t> theirs = result.at("tokens");
      const std::vector<double> confidence = result.at("confidence");
      int same = 0;
      while (same < (int)std::min(theirs.size(), mine.size()) && theirs[same] == mine[same]) ++same;
      // The probability of each of llama.cpp's picks, llama.cpp's beside tapelm's.
      double worst = 0;
      {
        NoGradGuard no_grad;
        std::vector<int32_t> seq = prompt;
        seq.insert(seq.end(), theirs.begin(), theirs.end() - 1);
        Tensor x = Tensor::empty({1, (int64_t)seq.size()}, DType::i32);
        std::copy(seq.begin(), seq.end(), x.data<int32_t>());
        const Tensor probs = softmax(m.model->forward(x));  // over the last axis
        const int64_t V = m.config.vocab_size;
        for (size_t i = 0; i < theirs.size(); ++i)
          worst =
              std::max(worst, std::abs(confidence[i] - probs.data<float>()[(prompt.size() - 1 + i) * V + theirs[i]]));
      }
      fmt::print(
          "llama.cpp, {} {}: the first {} of 100 greedy tokens equal tapelm's; their probabilities within {:.1e}\n",
          arch, type, same, worst);
      EXPECT_EQ(theirs.size(), 100u);
      if (type == "f32") {  // llama.cpp's gpt2 computes GELU's tanh form, tapelm the exact one (nanoGPT's)
        EXPECT_LE(worst, arch == "attention" ? 5e-4 : 1e-5);
        EXPECT_EQ(theirs, mine) << m.tokenizer->decode(theirs) << "\n--- tapelm ---\n" << m.tokenizer->decode(mine);
      }
    }
  }
}
