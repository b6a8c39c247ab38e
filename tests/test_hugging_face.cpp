// train/hugging_face.h: export to a transformers folder and import back (the
// round trip gives the same logits and tokenizer), and hostile folders
// (unknown architecture, missing or misshapen tensors, truncated weights,
// configs tapelm's model cannot follow) are one clear error each. That
// transformers itself reads the exported folders, and that tapelm reads
// folders transformers wrote, is checked against goldens made on a machine
// with transformers (tests/golden/hugging_face.py).
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/safetensors.h"
#include "data/gpt2_tokenizer.h"
#include "data/tokenizers.h"
#include "nn/mixers.h"
#include "tests/test_helpers.h"
#include "train/hugging_face.h"
#include "train/sampler.h"

using namespace tapelm;
using tapelm::testing::max_abs_diff;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("tapelm_hf_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

const std::string kText = "To be, or not to be, that is the question: café 東京 42!\n\tWhether 'tis nobler.\n";

nn::ModelConfig small(const std::string& mixer, std::vector<std::string> set = {}) {
  nn::ModelConfig c;
  c.mixer = mixer, c.n_layer = 2, c.n_head = 2, c.n_embd = 16, c.block_size = 24;
  set.insert(set.end(), {"mixer", "n_layer", "n_head", "n_embd", "block_size", "vocab_size"});
  return nn::with_recipe(c, set);
}

Tensor logits_of(nn::GPT& m, int64_t vocab) {
  NoGradGuard no_grad;
  Generator g(5);
  Tensor idx = Tensor::empty({2, 20}, DType::i32);
  for (int64_t i = 0; i < idx.numel(); ++i) idx.data<int32_t>()[i] = (int32_t)g.randint(vocab);
  return m.forward(idx);
}

void rewrite_json(const std::string& path, const std::function<void(nlohmann::json&)>& change) {
  nlohmann::json j = nlohmann::json::parse(std::ifstream(path));
  change(j);
  std::ofstream(path) << j.dump();
}

}  // namespace

TEST(HuggingFace, ExportThenImportGivesTheSameLogitsAndTokenizer) {
  struct Case {
    std::string mixer, tokenizer;
    std::vector<std::pair<std::string, bool>> flags;  // bias, tie_weights
  };
  const std::vector<Case> cases = {
      {"attention", "char", {}},    {"attention", "gpt2", {{"bias", false}, {"tie_weights", false}}},
      {"transformer++", "bpe", {}}, {"transformer++", "byte", {{"bias", true}, {"tie_weights", true}}},
      {"mamba", "char", {}},        {"mamba2", "bpe", {{"tie_weights", false}}},
  };
  const std::string dir = temp_dir("round_trip");
  for (const Case& k : cases) {
    auto tok = data::make_tokenizer(k.tokenizer, kText + kText, 300);
    nn::ModelConfig c;
    c.vocab_size = tok->vocab_size();
    std::vector<std::string> set;
    for (auto [key, on] : k.flags) {
      (key == "bias" ? c.bias : c.tie_weights) = on;
      set.push_back(key);
    }
    c.mixer = k.mixer, c.n_layer = 2, c.n_head = 2, c.n_embd = 16, c.block_size = 24;
    set.insert(set.end(), {"mixer", "n_layer", "n_head", "n_embd", "block_size", "vocab_size"});
    c = nn::with_recipe(c, set);
    Generator init(3);
    nn::GPT model(c, init);
    const std::string out = dir + "/" + k.mixer + "_" + k.tokenizer;
    train::export_hugging_face(model, *tok, out);
    train::HuggingFaceModel back = train::import_hugging_face(out);
    nn::ModelConfig want = c;
    want.bias = want.bias || k.mixer == "attention";      // GPT2LMHeadModel has biases: zeros where the model has none
    if (k.mixer.rfind("mamba", 0) == 0) want.n_head = 1;  // no Mamba field
    EXPECT_EQ(back.config.to_json(), want.to_json()) << out;
    EXPECT_EQ(max_abs_diff(logits_of(*back.model, c.vocab_size), logits_of(model, c.vocab_size)), 0.0) << out;
    EXPECT_EQ(back.tokenizer->to_json(), tok->to_json()) << out;
    EXPECT_TRUE(fs::exists(out + (k.tokenizer == "gpt2" ? "/merges.txt" : "/tokenizer.json"))) << out;
  }
  fs::remove_all(dir);
}

TEST(HuggingFace, HostileFoldersAreOneClearErrorEach) {
  const std::string dir = temp_dir("hostile");
  auto tok = data::make_tokenizer("char", kText, 0);
  nn::ModelConfig c = small("attention");
  c.vocab_size = tok->vocab_size();
  Generator init(1);
  nn::GPT model(c, init);
  const std::string good = dir + "/good";
  train::export_hugging_face(model, *tok, good);
  auto copy = [&](const std::string& name) {
    const std::string to = dir + "/" + name;
    fs::copy(good, to, fs::copy_options::recursive);
    return to;
  };
  // Architecture, config fields tapelm's model cannot follow.
  std::string d = copy("bert");
  rewrite_json(d + "/config.json", [](auto& j) { j["model_type"] = "bert"; });
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(d), "model_type 'bert' is not one tapelm reads (gpt2, llama");
  d = copy("tanh_gelu");
  rewrite_json(d + "/config.json", [](auto& j) { j["activation_function"] = "gelu_new"; });
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(d), "activation_function 'gelu_new'");
  d = copy("no_config");
  fs::remove(d + "/config.json");
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(d), "config.json: not found");
  d = copy("bad_json");
  std::ofstream(d + "/config.json") << "{\"model_type\": \"gpt2\", ";
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(d), "config.json: not JSON");
  // Tensors: missing, misshapen, unexpected, stored in another type, the file cut short.
  auto edit_weights = [&](const std::string& name, const std::function<void(TensorFile&)>& change) {
    const std::string to = copy(name);
    TensorFile f = load_safetensors(to + "/model.safetensors");
    change(f);
    save_safetensors(to + "/model.safetensors", f);
    return to;
  };
  d = edit_weights("missing", [](TensorFile& f) { f.tensors.erase("transformer.h.1.mlp.c_fc.weight"); });
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(d), "tensor 'transformer.h.1.mlp.c_fc.weight' is missing");
  d = edit_weights("shape", [](TensorFile& f) { f.tensors["transformer.h.0.attn.c_attn.weight"] = zeros({48, 16}); });
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(d),
                        "tensor 'transformer.h.0.attn.c_attn.weight' has shape [48,16], the config makes it [16,48]");
  d = edit_weights("extra", [](TensorFile& f) { f.tensors["transformer.h.0.attn.q_norm.weight"] = zeros({16}); });
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(d), "unexpected tensor 'transformer.h.0.attn.q_norm.weight'");
  d = edit_weights("f64", [](TensorFile& f) { f.tensors["transformer.ln_f.weight"] = zeros({16}, DType::f64); });
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(d), "is stored as float64; tapelm reads float32 weights");
  d = copy("truncated");
  fs::resize_file(d + "/model.safetensors", fs::file_size(d + "/model.safetensors") - 100);
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(d), "model.safetensors");
  d = copy("no_tokenizer");
  fs::remove(d + "/tokenizer_config.json");
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(d), "no tokenizer tapelm reads");
  d = copy("vocab");
  rewrite_json(d + "/config.json", [](auto& j) { j["vocab_size"] = 1000; });
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(d), "but the model's vocab_size is 1000");
  // Llama shapes tapelm has no field for.
  auto llama_tok = data::make_tokenizer("byte", "", 0);
  nn::ModelConfig lc = small("transformer++");
  lc.vocab_size = 256;
  nn::GPT llama(lc, init);
  train::export_hugging_face(llama, *llama_tok, dir + "/llama");
  rewrite_json(dir + "/llama/config.json", [](auto& j) { j["num_key_value_heads"] = 1; });
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(dir + "/llama"), "grouped-query attention");
  rewrite_json(dir + "/llama/config.json", [](auto& j) {
    j["num_key_value_heads"] = 2;
    j["rope_parameters"]["rope_theta"] = 500000.0;
  });
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(dir + "/llama"), "RoPE with theta 500000");
  // Mamba-2's Δ clamp, as transformers 5 writes non-finite floats ({"__float__": "Infinity"}; the
  // golden hf_mamba2 reads its default (0, ∞)): a finite upper limit is refused, a garbled one is an error.
  const fs::path mamba2 = fs::path(TAPELM_SOURCE_DIR) / "tests/golden/hugging_face/hf_mamba2";
  fs::copy(mamba2, dir + "/mamba2", fs::copy_options::recursive);
  rewrite_json(dir + "/mamba2/config.json", [](auto& j) { j["time_step_limit"] = {0.0, 0.1}; });
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(dir + "/mamba2"), "time_step_limit clamps");
  rewrite_json(dir + "/mamba2/config.json", [](auto& j) {
    j["time_step_limit"] = {0.0, nlohmann::json{{"__float__", "lots"}}};
  });
  EXPECT_ERROR_CONTAINS(train::import_hugging_face(dir + "/mamba2"), "time_step_limit: expected a number");
  // Models with no transformers class, or not of their class's shape.
  nn::ModelConfig gla = small("gla");
  gla.vocab_size = tok->vocab_size();
  nn::GPT gla_model(gla, init);
  EXPECT_ERROR_CONTAINS(
      train::export_hugging_face(gla_model, *tok, dir + "/gla"),
      "the gla mixer has no transformers class; those that have one: attention -> GPT2LMHeadModel, transformer++ -> "
      "LlamaForCausalLM, mamba -> MambaForCausalLM, mamba2 -> Mamba2ForCausalLM");
  nn::ModelConfig rope = small("attention", {"position"});
  rope.position = "rope", rope.vocab_size = tok->vocab_size();
  nn::GPT rope_model(rope, init);
  EXPECT_ERROR_CONTAINS(train::export_hugging_face(rope_model, *tok, dir + "/rope"), "needs --position learned");
  fs::remove_all(dir);
}

// transformers read tapelm's exported folders, and tapelm reads folders
// transformers wrote (save_pretrained), to the same logits (≤ 1e-4), the
// same argmax everywhere, the same 100 greedy tokens and the same tokenizer
// ids: tests/golden/hugging_face/<name>/transformers.json, written by
// tests/golden/hugging_face.py with transformers on the lent machine (all of
// them or, until they are first made, none: then the test skips and says so).
TEST(HuggingFace, MatchesTransformersGoldens) {
  const fs::path root = fs::path(TAPELM_SOURCE_DIR) / "tests/golden/hugging_face";
  const std::vector<std::string> expected = {"attention", "transformer++", "mamba",    "mamba2",   "gpt2tok",
                                             "hf_gpt2",   "hf_llama",      "hf_mamba", "hf_mamba2"};
  int made = 0;
  for (const std::string& name : expected) made += fs::exists(root / name / "transformers.json");
  if (made == 0)
    GTEST_SKIP() << "transformers' goldens are not made yet: run tests/golden/hugging_face.py where transformers is "
                    "and commit its output into "
                 << root;
  for (const std::string& name : expected) {
    SCOPED_TRACE(name);
    const fs::path dir = root / name;
    const nlohmann::json golden = nlohmann::json::parse(std::ifstream(dir / "transformers.json"));
    ASSERT_FALSE(golden.contains("error")) << golden["error"];
    std::unique_ptr<data::Tokenizer> tok;
    train::HuggingFaceModel m;
    if (name == "gpt2tok") {
      tok = data::GPT2Tokenizer::shipped();  // the files transformers read are tapelm export's of this one
    } else {
      m = train::import_hugging_face(dir.string());
      tok = std::move(m.tokenizer);
      EXPECT_EQ(golden["class"], m.config.mixer == "attention"       ? "GPT2LMHeadModel"
                                 : m.config.mixer == "transformer++" ? "LlamaForCausalLM"
                                 : m.config.mixer == "mamba"         ? "MambaForCausalLM"
                                                                     : "Mamba2ForCausalLM");
    }
    for (const auto& t : golden["tokenizer"]) {
      const std::string text = t["text"];
      EXPECT_EQ(tok->encode(text), t["ids"].get<std::vector<int32_t>>()) << text;
      EXPECT_EQ(t["decoded"], text);  // transformers decodes its ids back to the text
    }
    if (name == "gpt2tok") continue;
    const std::vector<int32_t> ids = golden["ids"];
    NoGradGuard no_grad;
    Tensor idx = Tensor::empty({1, (int64_t)ids.size()}, DType::i32);
    std::copy(ids.begin(), ids.end(), idx.data<int32_t>());
    const Tensor logits = m.model->forward(idx);
    const int64_t V = m.config.vocab_size;
    double worst = 0;
    for (const auto& [position, row] : golden["logits"].items()) {
      const std::vector<double> want = row;
      for (int64_t v = 0; v < V; ++v)
        worst = std::max(worst, std::abs(logits.data<float>()[std::stoll(position) * V + v] - want[v]));
    }
    EXPECT_LE(worst, 1e-4);
    std::vector<int32_t> argmax;
    for (int64_t t = 0; t < (int64_t)ids.size(); ++t) {
      const float* row = logits.data<float>() + t * V;
      argmax.push_back((int32_t)(std::max_element(row, row + V) - row));
    }
    if (golden["min_top2_margin"].get<double>() > 1e-3) {
      EXPECT_EQ(argmax, golden["argmax"].get<std::vector<int32_t>>());
    }
    // Greedy, as `tapelm sample --temperature 0` decodes.
    train::SampleOptions greedy;
    greedy.temperature = 0, greedy.tokens = 100;
    const std::vector<int32_t> seq =
        train::generate(*m.model, std::vector<int32_t>(ids.begin(), ids.begin() + 8), greedy);
    EXPECT_EQ(std::vector<int32_t>(seq.begin() + 8, seq.end()), golden["greedy"].get<std::vector<int32_t>>())
        << "closest call on transformers' greedy path: top-2 margin " << golden["greedy_min_top2_margin"];
    fmt::print("{}: {} logits within {:.2e} of transformers' ({} {}), 100 greedy tokens equal\n", name,
               golden["class"].get<std::string>(), worst, golden["transformers"].get<std::string>(),
               golden["torch"].get<std::string>());
  }
}
