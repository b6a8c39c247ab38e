#include "train/hugging_face.h"

#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "autograd/error.h"
#include "autograd/safetensors.h"
#include "data/corpus.h"
#include "data/gpt2_tokenizer.h"
#include "data/tokenizers.h"
#include "data/utf8.h"
#include "nn/mixers.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace tapelm::train {

namespace {

// One transformers tensor and where it is in tapelm's model.
struct Link {
  std::string hf, tapelm;            // tapelm empty: zeros of shape `zeros` (a bias the model does without)
  bool transposed = false;           // GPT-2's Conv1D stores [in, out]
  int64_t first_row = 0, rows = -1;  // rows ≥ 0: tapelm's rows [first_row, first_row + rows)
  Shape zeros = {};
};

struct Architecture {
  std::string mixer, hf_class, model_type;
  // An Error naming the field where the model is not the class's shape.
  std::function<void(const nn::ModelConfig&)> check;
  std::function<json(const nn::ModelConfig&)> to_config;
  // The model config of a config.json, or an Error naming what tapelm's model cannot follow.
  std::function<nn::ModelConfig(const json&, const std::string& path)> from_config;
  std::function<std::vector<Link>(const nn::ModelConfig&)> links;
};

void require(bool ok, const std::string& what, const std::string& message) {
  TAPELM_CHECK(ok, "{}: {}", what, message);
}

// A config.json field, or `fallback` when absent or null.
template <class T>
T field(const json& j, const char* key, T fallback) {
  return j.contains(key) && !j[key].is_null() ? j[key].get<T>() : fallback;
}

// A float of a config: a JSON number, or transformers 5's spelling of a
// non-finite one ({"__float__": "Infinity"}: Mamba-2's time_step_limit).
double config_float(const json& v, const std::string& what) {
  if (v.is_number()) return v.get<double>();
  if (v.is_object() && v.size() == 1 && v.contains("__float__") && v["__float__"].is_string()) {
    const std::string s = v["__float__"];
    if (s == "Infinity") return std::numeric_limits<double>::infinity();
    if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
    if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
  }
  throw Error(fmt::format("{}: expected a number, got {}", what, v.dump()));
}

// GPT-2 (Radford et al. 2019) as nanoGPT's GPT: learned positions, LayerNorm,
// an exact-GELU MLP, fused qkv. Biases are zeros where the model has none.
std::vector<Link> gpt2_links(const nn::ModelConfig& c) {
  const int64_t d = c.n_embd, h = c.hidden();
  auto bias = [&](const std::string& name, int64_t n) {
    return c.bias ? Link{name, name} : Link{name, "", false, 0, -1, {n}};
  };
  std::vector<Link> l = {{"transformer.wte.weight", "transformer.wte.weight"},
                         {"transformer.wpe.weight", "transformer.wpe.weight"}};
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = fmt::format("transformer.h.{}.", i);
    l.push_back({p + "ln_1.weight", p + "ln_1.weight"});
    l.push_back(bias(p + "ln_1.bias", d));
    l.push_back({p + "attn.c_attn.weight", p + "attn.c_attn.weight", true});
    l.push_back(bias(p + "attn.c_attn.bias", 3 * d));
    l.push_back({p + "attn.c_proj.weight", p + "attn.c_proj.weight", true});
    l.push_back(bias(p + "attn.c_proj.bias", d));
    l.push_back({p + "ln_2.weight", p + "ln_2.weight"});
    l.push_back(bias(p + "ln_2.bias", d));
    l.push_back({p + "mlp.c_fc.weight", p + "mlp.c_fc.weight", true});
    l.push_back(bias(p + "mlp.c_fc.bias", h));
    l.push_back({p + "mlp.c_proj.weight", p + "mlp.c_proj.weight", true});
    l.push_back(bias(p + "mlp.c_proj.bias", d));
  }
  l.push_back({"transformer.ln_f.weight", "transformer.ln_f.weight"});
  l.push_back(bias("transformer.ln_f.bias", d));
  if (!c.tie_weights) l.push_back({"lm_head.weight", "lm_head.weight"});
  return l;
}

// LLaMA (Touvron et al. 2023): RoPE on q and k, RMSNorm, a SwiGLU MLP; q, k
// and v are the rows of tapelm's fused c_attn; gate = c_gate, up = c_fc.
std::vector<Link> llama_links(const nn::ModelConfig& c) {
  const int64_t d = c.n_embd;
  std::vector<Link> l = {{"model.embed_tokens.weight", "transformer.wte.weight"}};
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string hf = fmt::format("model.layers.{}.", i), t = fmt::format("transformer.h.{}.", i);
    l.push_back({hf + "input_layernorm.weight", t + "ln_1.weight"});
    const char* qkv[] = {"q_proj", "k_proj", "v_proj"};
    for (int k = 0; k < 3; ++k) {
      l.push_back({hf + "self_attn." + qkv[k] + ".weight", t + "attn.c_attn.weight", false, k * d, d});
      if (c.bias) l.push_back({hf + "self_attn." + qkv[k] + ".bias", t + "attn.c_attn.bias", false, k * d, d});
    }
    l.push_back({hf + "self_attn.o_proj.weight", t + "attn.c_proj.weight"});
    l.push_back({hf + "post_attention_layernorm.weight", t + "ln_2.weight"});
    for (auto [hf_name, name] : {std::pair{"gate_proj", "c_gate"}, {"up_proj", "c_fc"}, {"down_proj", "c_proj"}})
      l.push_back({hf + "mlp." + hf_name + ".weight", t + "mlp." + name + ".weight"});
    if (c.bias) {
      l.push_back({hf + "self_attn.o_proj.bias", t + "attn.c_proj.bias"});
      for (auto [hf_name, name] : {std::pair{"gate_proj", "c_gate"}, {"up_proj", "c_fc"}, {"down_proj", "c_proj"}})
        l.push_back({hf + "mlp." + hf_name + ".bias", t + "mlp." + name + ".bias"});
    }
  }
  l.push_back({"model.norm.weight", "transformer.ln_f.weight"});
  if (!c.tie_weights) l.push_back({"lm_head.weight", "lm_head.weight"});
  return l;
}

std::string final_norm(const nn::ModelConfig& c) { return c.final_norm == "same" ? c.norm : c.final_norm; }

// Mamba (Gu & Dao 2023) and Mamba-2 (Dao & Gu 2024): a norm and the mixer
// per block, no MLP; the mixer's tensors have mamba_ssm's names in both.
std::vector<Link> mamba_links(const nn::ModelConfig& c, const std::vector<std::string>& mixer_tensors) {
  std::vector<Link> l = {{"backbone.embeddings.weight", "transformer.wte.weight"}};
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string hf = fmt::format("backbone.layers.{}.", i), t = fmt::format("transformer.h.{}.", i);
    l.push_back({hf + "norm.weight", t + "ln_1.weight"});
    for (const std::string& name : mixer_tensors) l.push_back({hf + "mixer." + name, t + "attn." + name});
  }
  l.push_back({"backbone.norm_f.weight", "transformer.ln_f.weight"});
  if (!c.tie_weights) l.push_back({"lm_head.weight", "lm_head.weight"});
  return l;
}

void check_mamba_block(const nn::ModelConfig& c, const std::string& w) {
  require(c.position == "none", w, "needs --position none, the model has " + c.position);
  require(c.norm == "rmsnorm" && final_norm(c) == "rmsnorm", w, "needs RMSNorm everywhere");
}

// The fields Mamba's and Mamba-2's configs share, read or written.
json mamba_common(const nn::ModelConfig& c) {
  return {{"vocab_size", c.vocab_size},
          {"hidden_size", c.n_embd},
          {"intermediate_size", 2 * c.n_embd},
          {"state_size", c.d_state},
          {"num_hidden_layers", c.n_layer},
          {"layer_norm_epsilon", c.norm_eps},
          {"expand", 2},
          {"conv_kernel", c.d_conv},
          {"use_bias", false},
          {"use_conv_bias", true},
          {"hidden_act", "silu"},
          {"residual_in_fp32", true},
          {"tie_word_embeddings", c.tie_weights},
          {"max_position_embeddings", c.block_size},  // not the class's: tapelm's training context, read back
          {"use_cache", true},
          {"dtype", "float32"}};
}

nn::ModelConfig mamba_config_of(const json& j, const std::string& path, const std::string& mixer, bool tie_default) {
  nn::ModelConfig c;
  c.mixer = mixer, c.position = "none", c.norm = "rmsnorm", c.bias = false;
  c.vocab_size = j.at("vocab_size").get<int64_t>();
  c.n_embd = j.at("hidden_size").get<int64_t>();
  c.n_layer = j.at("num_hidden_layers").get<int64_t>();
  c.n_head = 1;  // not a Mamba field; tapelm's heads are attention's
  c.d_state = j.at("state_size").get<int64_t>();
  c.d_conv = field<int64_t>(j, "conv_kernel", 4);
  c.norm_eps = field<double>(j, "layer_norm_epsilon", 1e-5);
  c.tie_weights = field<bool>(j, "tie_word_embeddings", tie_default);
  c.block_size = field<int64_t>(j, "max_position_embeddings", 2048);  // no positions: only decoding's window
  require(field<int64_t>(j, "expand", 2) == 2 && field<int64_t>(j, "intermediate_size", 2 * c.n_embd) == 2 * c.n_embd,
          path, "expand is not 2 (tapelm's Mamba blocks are twice the model's width inside)");
  require(!field<bool>(j, "use_bias", false) && field<bool>(j, "use_conv_bias", true), path,
          "use_bias true or use_conv_bias false: tapelm's Mamba has mamba_ssm's (no projection bias, a conv bias)");
  require(field<std::string>(j, "hidden_act", "silu") == "silu", path, "hidden_act is not silu");
  return c;
}

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> table = {
      {.mixer = "attention",
       .hf_class = "GPT2LMHeadModel",
       .model_type = "gpt2",
       .check =
           [](const nn::ModelConfig& c) {
             const std::string w = "export: GPT2LMHeadModel";
             require(c.position == "learned", w, "needs --position learned, the model has " + c.position);
             require(c.norm == "layernorm" && final_norm(c) == "layernorm", w, "needs LayerNorm everywhere");
             require(c.ffn == "gelu", w, "needs --ffn gelu, the model has " + c.ffn);
           },
       .to_config =
           [](const nn::ModelConfig& c) {
             return json{{"architectures", {"GPT2LMHeadModel"}},
                         {"model_type", "gpt2"},
                         {"vocab_size", c.vocab_size},
                         {"n_positions", c.block_size},
                         {"n_embd", c.n_embd},
                         {"n_layer", c.n_layer},
                         {"n_head", c.n_head},
                         {"n_inner", c.hidden()},
                         {"activation_function", "gelu"},  // exact, as nanoGPT's nn.GELU()
                         {"layer_norm_epsilon", c.norm_eps},
                         {"resid_pdrop", 0.0},
                         {"embd_pdrop", 0.0},
                         {"attn_pdrop", 0.0},
                         {"initializer_range", 0.02},
                         {"scale_attn_weights", true},
                         {"tie_word_embeddings", c.tie_weights},
                         {"use_cache", true},
                         {"dtype", "float32"}};
           },
       .from_config =
           [](const json& j, const std::string& path) {
             nn::ModelConfig c;
             c.mixer = "attention";
             c.vocab_size = j.at("vocab_size").get<int64_t>();
             c.block_size = j.at("n_positions").get<int64_t>();
             c.n_embd = j.at("n_embd").get<int64_t>();
             c.n_layer = j.at("n_layer").get<int64_t>();
             c.n_head = j.at("n_head").get<int64_t>();
             c.ffn_hidden = field<int64_t>(j, "n_inner", 0);
             if (c.ffn_hidden == 4 * c.n_embd) c.ffn_hidden = 0;  // the default width, as tapelm writes it
             c.norm_eps = field<double>(j, "layer_norm_epsilon", 1e-5);
             c.tie_weights = field<bool>(j, "tie_word_embeddings", true);
             const std::string act = field<std::string>(j, "activation_function", "gelu_new");
             require(act == "gelu", path,
                     fmt::format("activation_function '{}': tapelm's GPT has the exact GELU ('gelu'); GPT-2's released "
                                 "weights use the tanh form 'gelu_new', which tapelm does not compute",
                                 act));
             require(field<bool>(j, "scale_attn_weights", true) &&
                         !field<bool>(j, "scale_attn_by_inverse_layer_idx", false),
                     path, "attention scaled otherwise than by 1/sqrt(head dim)");
             return c;
           },
       .links = gpt2_links},
      {.mixer = "transformer++",
       .hf_class = "LlamaForCausalLM",
       .model_type = "llama",
       .check =
           [](const nn::ModelConfig& c) {
             const std::string w = "export: LlamaForCausalLM";
             require(c.position == "rope", w, "needs --position rope, the model has " + c.position);
             require(c.norm == "rmsnorm" && final_norm(c) == "rmsnorm", w, "needs RMSNorm everywhere");
             require(c.ffn == "swiglu", w, "needs --ffn swiglu, the model has " + c.ffn);
           },
       .to_config =
           [](const nn::ModelConfig& c) {
             return json{{"architectures", {"LlamaForCausalLM"}},
                         {"model_type", "llama"},
                         {"vocab_size", c.vocab_size},
                         {"hidden_size", c.n_embd},
                         {"intermediate_size", c.hidden()},
                         {"num_hidden_layers", c.n_layer},
                         {"num_attention_heads", c.n_head},
                         {"num_key_value_heads", c.n_head},
                         {"head_dim", c.n_embd / c.n_head},
                         {"hidden_act", "silu"},
                         {"max_position_embeddings", c.block_size},
                         {"rms_norm_eps", c.norm_eps},
                         {"rope_theta", 10000.0},
                         {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 10000.0}}},
                         {"attention_bias", c.bias},
                         {"mlp_bias", c.bias},
                         {"attention_dropout", 0.0},
                         {"tie_word_embeddings", c.tie_weights},
                         {"initializer_range", 0.02},
                         {"use_cache", true},
                         {"dtype", "float32"}};
           },
       .from_config =
           [](const json& j, const std::string& path) {
             nn::ModelConfig c;
             c.mixer = "transformer++";
             c.position = "rope", c.norm = "rmsnorm", c.ffn = "swiglu";
             c.vocab_size = j.at("vocab_size").get<int64_t>();
             c.n_embd = j.at("hidden_size").get<int64_t>();
             c.ffn_hidden = j.at("intermediate_size").get<int64_t>();
             c.n_layer = j.at("num_hidden_layers").get<int64_t>();
             c.n_head = j.at("num_attention_heads").get<int64_t>();
             c.block_size = field<int64_t>(j, "max_position_embeddings", 2048);
             c.norm_eps = field<double>(j, "rms_norm_eps", 1e-6);
             c.tie_weights = field<bool>(j, "tie_word_embeddings", false);
             c.bias = field<bool>(j, "attention_bias", false);
             require(field<bool>(j, "mlp_bias", false) == c.bias, path,
                     "attention_bias and mlp_bias differ; tapelm's --bias is one switch");
             require(field<std::string>(j, "hidden_act", "silu") == "silu", path, "hidden_act is not silu");
             require(field<int64_t>(j, "num_key_value_heads", c.n_head) == c.n_head, path,
                     "grouped-query attention (num_key_value_heads < num_attention_heads) is not in tapelm's model");
             require(field<int64_t>(j, "head_dim", c.n_embd / c.n_head) * c.n_head == c.n_embd, path,
                     "head_dim × num_attention_heads is not hidden_size");
             double theta = field<double>(j, "rope_theta", 10000.0);
             std::string rope_type = "default";
             if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
               theta = field<double>(j["rope_parameters"], "rope_theta", theta);
               rope_type = field<std::string>(j["rope_parameters"], "rope_type", rope_type);
             }
             if (j.contains("rope_scaling") && j["rope_scaling"].is_object())
               rope_type = field<std::string>(j["rope_scaling"], "rope_type",
                                              field<std::string>(j["rope_scaling"], "type", "scaled"));
             require(theta == 10000.0 && rope_type == "default", path,
                     fmt::format("RoPE with theta {} and type '{}': tapelm's is the default RoPE, theta 10000", theta,
                                 rope_type));
             return c;
           },
       .links = llama_links},
      {.mixer = "mamba",
       .hf_class = "MambaForCausalLM",
       .model_type = "mamba",
       .check = [](const nn::ModelConfig& c) { check_mamba_block(c, "export: MambaForCausalLM"); },
       .to_config =
           [](const nn::ModelConfig& c) {
             json j = mamba_common(c);
             j["architectures"] = {"MambaForCausalLM"};
             j["model_type"] = "mamba";
             j["time_step_rank"] = (c.n_embd + 15) / 16;
             return j;
           },
       .from_config =
           [](const json& j, const std::string& path) {
             nn::ModelConfig c = mamba_config_of(j, path, "mamba", true);
             const int64_t auto_rank = (c.n_embd + 15) / 16;
             require(!j.contains("time_step_rank") || j["time_step_rank"] == "auto" || j["time_step_rank"] == auto_rank,
                     path,
                     fmt::format("time_step_rank {} is not ceil(hidden_size / 16) = {}",
                                 j.value("time_step_rank", json()).dump(), auto_rank));
             return c;
           },
       .links =
           [](const nn::ModelConfig& c) {
             return mamba_links(c, {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
                                    "dt_proj.bias", "A_log", "D", "out_proj.weight"});
           }},
      {.mixer = "mamba2",
       .hf_class = "Mamba2ForCausalLM",
       .model_type = "mamba2",
       .check = [](const nn::ModelConfig& c) { check_mamba_block(c, "export: Mamba2ForCausalLM"); },
       .to_config =
           [](const nn::ModelConfig& c) {
             json j = mamba_common(c);
             j["architectures"] = {"Mamba2ForCausalLM"};
             j["model_type"] = "mamba2";
             j["num_heads"] = 2 * c.n_embd / c.ssm_headdim;
             j["head_dim"] = c.ssm_headdim;
             j["n_groups"] = 1;
             j["chunk_size"] = c.chunk_size;
             j["rms_norm"] = true;
             j["norm_before_gate"] = false;
             return j;  // time_step_limit left at its default (0, ∞), mamba_ssm's dt_limit
           },
       .from_config =
           [](const json& j, const std::string& path) {
             nn::ModelConfig c = mamba_config_of(j, path, "mamba2", false);
             c.ssm_headdim = j.at("head_dim").get<int64_t>();
             c.chunk_size = field<int64_t>(j, "chunk_size", 256);
             require(j.at("num_heads").get<int64_t>() * c.ssm_headdim == 2 * c.n_embd, path,
                     "num_heads × head_dim is not expand × hidden_size");
             require(field<int64_t>(j, "n_groups", 1) == 1, path, "n_groups > 1: tapelm's Mamba-2 shares one B and C");
             require(field<bool>(j, "rms_norm", true) && !field<bool>(j, "norm_before_gate", false), path,
                     "the output norm is not RMSNorm after the gate (Mamba2Simple's)");
             if (j.contains("time_step_limit")) {
               const auto limit = j["time_step_limit"];
               require(limit.is_array() && limit.size() == 2 &&
                           config_float(limit[0], path + ": time_step_limit") == 0.0 &&
                           config_float(limit[1], path + ": time_step_limit") >= 1e300,
                       path, "time_step_limit clamps Δ; tapelm's Mamba-2 does not (mamba_ssm's default (0, ∞))");
             }
             return c;
           },
       .links =
           [](const nn::ModelConfig& c) {
             return mamba_links(c, {"in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D",
                                    "norm.weight", "out_proj.weight"});
           }},
  };
  return table;
}

std::string class_list() {
  std::string s;
  for (const Architecture& a : architectures())
    s += fmt::format("{}{} -> {}", s.empty() ? "" : ", ", a.mixer, a.hf_class);
  return s;
}

const Architecture& architecture_of(const nn::ModelConfig& c) {
  for (const Architecture& a : architectures())
    if (a.mixer == c.mixer) {
      a.check(c);
      return a;
    }
  throw Error(
      fmt::format("export: the {} mixer has no transformers class; those that have one: {}", c.mixer, class_list()));
}

json read_json(const fs::path& path) {
  TAPELM_CHECK(fs::exists(path), "{}: not found", path.string());
  const std::string text = data::read_file(path.string(), path.filename().string());
  try {
    // Python's json writes a bare ±Infinity (Mamba-2's time_step_limit);
    // JSON has no such number. Outside strings only: a token may be spelt so.
    std::string out;
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      if (in_string) {
        out += c;
        if (c == '\\' && i + 1 < text.size())
          out += text[++i];
        else if (c == '"')
          in_string = false;
      } else if (c == '"') {
        in_string = true, out += c;
      } else if (text.compare(i, 8, "Infinity") == 0) {
        out += "1.0e308", i += 7;
      } else {
        out += c;
      }
    }
    return json::parse(out);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not JSON: {}", path.string(), e.what()));
  }
}

// ---- tensors ------------------------------------------------------------

Tensor transposed(const Tensor& t) {
  const int64_t r = t.shape()[0], c = t.shape()[1];
  Tensor out = Tensor::empty({c, r}, DType::f32);
  const float* a = t.data<float>();
  float* o = out.data<float>();
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) o[j * r + i] = a[i * c + j];
  return out;
}

int64_t row_elements(const Tensor& t) { return t.dim() == 1 ? 1 : t.numel() / t.shape()[0]; }

Tensor rows_of(const Tensor& t, int64_t first, int64_t n) {
  Shape s = t.shape();
  s[0] = n;
  Tensor out = Tensor::empty(s, DType::f32);
  const int64_t w = row_elements(t);
  std::copy_n(t.data<float>() + first * w, n * w, out.data<float>());
  return out;
}

// ---- tokenizers -------------------------------------------------------------

// A byte-level BPE model: ids 0..255 the bytes, then one token per merge.
json byte_level_bpe(const std::vector<std::pair<int32_t, int32_t>>& merges) {
  std::vector<std::string> token;
  for (int b = 0; b < 256; ++b) token.push_back(data::gpt2_printable(std::string(1, (char)b)));
  json vocab = json::object(), merge_lines = json::array();
  for (auto [a, b] : merges) {
    merge_lines.push_back(token.at(a) + " " + token.at(b));
    token.push_back(token.at(a) + token.at(b));
  }
  for (size_t i = 0; i < token.size(); ++i) vocab[token[i]] = i;
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr},
          {"fuse_unk", false},
          {"byte_fallback", false},
          {"vocab", vocab},
          {"merges", merge_lines}};
}

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

// tapelm's BPE chunks (data/tokenizer.h, bpe_chunks) as a regex: runs of
// letters (ASCII or any non-ASCII character), of digits, or of other symbols,
// each with one optional space before it; whitespace runs, less a last space
// that a non-space follows (it joins the next chunk).
constexpr const char* kTapelmBpeChunks =
    " ?[A-Za-z\\x{80}-\\x{10FFFF}]+| ?[0-9]+| ?[^\\t\\n\\r\\f\\v A-Za-z0-9\\x{80}-\\x{10FFFF}]+"
    "|[\\t\\n\\r\\f\\v ]+?(?= [^\\t\\n\\r\\f\\v ])|[\\t\\n\\r\\f\\v ]+";

// tokenizer.json (the tokenizers library's format) for tapelm's char, byte and BPE tokenizers.
json tokenizers_json(const data::Tokenizer& tok) {
  const json t = json::parse(tok.to_json());
  json out = {{"version", "1.0"},      {"truncation", nullptr},
              {"padding", nullptr},    {"added_tokens", json::array()},
              {"normalizer", nullptr}, {"post_processor", nullptr}};
  if (tok.kind() == "char") {
    json vocab = json::object();
    int64_t id = 0;
    for (uint32_t cp : t.at("symbols").get<std::vector<uint32_t>>()) {
      TAPELM_CHECK(cp < data::kStrayByte,
                   "export --format hf: the char tokenizer holds a byte that is not UTF-8 (0x{:02X}), which a "
                   "tokenizer.json cannot hold",
                   cp - data::kStrayByte);
      std::string s;
      data::append_symbol(s, cp);
      vocab[s] = id++;
    }
    out["pre_tokenizer"] = {
        {"type", "Split"}, {"pattern", {{"Regex", "[\\s\\S]"}}}, {"behavior", "Isolated"}, {"invert", false}};
    out["model"] = {{"type", "WordLevel"}, {"vocab", vocab}, {"unk_token", "<unk>"}};
    out["decoder"] = {{"type", "Fuse"}};
    return out;
  }
  TAPELM_CHECK(tok.kind() == "byte" || tok.kind() == "bpe",
               "export --format hf: no tokenizer.json form for the {} tokenizer", tok.kind());
  std::vector<std::pair<int32_t, int32_t>> merges;
  if (tok.kind() == "bpe")
    for (const auto& m : t.at("merges")) merges.emplace_back(m.at(0).get<int32_t>(), m.at(1).get<int32_t>());
  out["model"] = byte_level_bpe(merges);
  if (tok.kind() == "byte")
    out["pre_tokenizer"] = byte_level(false);
  else
    out["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", kTapelmBpeChunks}}}, {"behavior", "Isolated"}, {"invert", false}},
          byte_level(false)}}};
  out["decoder"] = byte_level(true);
  return out;
}

void write_tokenizer(const data::Tokenizer& tok, int64_t block_size, const fs::path& out) {
  json config = {{"model_max_length", block_size}, {"clean_up_tokenization_spaces", false}};
  if (tok.kind() == "gpt2") {  // GPT-2's own files: vocab.json (token -> id) and merges.txt
    const json t = json::parse(tok.to_json());
    const auto& vocab = t.at("vocab");
    json ids = json::object();
    for (size_t i = 0; i < vocab.size(); ++i) ids[vocab[i].get<std::string>()] = i;
    std::string merges = "#version: 0.2\n";
    for (const auto& m : t.at("merges"))
      merges += vocab.at(m.at(0).get<size_t>()).get<std::string>() + " " +
                vocab.at(m.at(1).get<size_t>()).get<std::string>() + "\n";
    data::write_file((out / "vocab.json").string(), ids.dump(), "export");
    data::write_file((out / "merges.txt").string(), merges, "export");
    config["tokenizer_class"] = "GPT2Tokenizer";
    for (const char* key : {"bos_token", "eos_token", "unk_token"}) config[key] = "<|endoftext|>";
    config["add_prefix_space"] = false;
  } else {
    data::write_file((out / "tokenizer.json").string(), tokenizers_json(tok).dump(), "export");
    config["tokenizer_class"] = "PreTrainedTokenizerFast";
    config["tapelm_tokenizer"] = tok.to_json();  // read back exactly by import
  }
  data::write_file((out / "tokenizer_config.json").string(), config.dump(2), "export");
}

std::unique_ptr<data::Tokenizer> read_tokenizer(const fs::path& dir) {
  const fs::path config = dir / "tokenizer_config.json";
  if (fs::exists(config)) {
    const json j = read_json(config);
    if (j.contains("tapelm_tokenizer")) return data::tokenizer_from_json(j["tapelm_tokenizer"].get<std::string>());
  }
  if (fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt"))
    return data::GPT2Tokenizer::from_files((dir / "vocab.json").string(), (dir / "merges.txt").string());
  throw Error(
      fmt::format("{}: no tokenizer tapelm reads (GPT-2's vocab.json and merges.txt, or the files tapelm "
                  "export writes)",
                  dir.string()));
}

// The folder's tensors: model.safetensors, or the shards model.safetensors.index.json lists.
std::map<std::string, Tensor> read_weights(const fs::path& dir) {
  std::map<std::string, Tensor> out;
  const fs::path index = dir / "model.safetensors.index.json";
  std::vector<fs::path> files;
  if (fs::exists(index)) {
    std::set<std::string> names;
    for (const auto& [tensor, file] : read_json(index).at("weight_map").items()) names.insert(file.get<std::string>());
    for (const std::string& f : names) files.push_back(dir / f);
  } else {
    TAPELM_CHECK(fs::exists(dir / "model.safetensors"), "{}: no model.safetensors (tapelm reads safetensors weights)",
                 dir.string());
    files.push_back(dir / "model.safetensors");
  }
  for (const fs::path& f : files) {
    TensorFile t = load_safetensors(f.string());
    for (auto& [name, tensor] : t.tensors) {
      TAPELM_CHECK(tensor.dtype() == DType::f32,
                   "{}: tensor '{}' is stored as {}; tapelm reads float32 weights (save_pretrained of a float32 "
                   "model)",
                   f.string(), name, dtype_name(tensor.dtype()));
      out[name] = tensor;
    }
  }
  return out;
}

}  // namespace

std::string hugging_face_class(const nn::ModelConfig& c) { return architecture_of(c).hf_class; }

void export_hugging_face(const nn::GPT& model, const data::Tokenizer& tokenizer, const std::string& out) {
  const nn::ModelConfig& c = model.config;
  const Architecture* arch = &architecture_of(c);
  std::map<std::string, Tensor> mine;
  for (const auto& p : model.state_dict())
    mine[p.name] = p.tensor.device() == Device::cpu ? p.tensor : p.tensor.to(Device::cpu);
  TensorFile file;
  file.metadata["format"] = "pt";
  for (const Link& l : arch->links(c)) {
    if (l.tapelm.empty()) {
      file.tensors[l.hf] = zeros(l.zeros);
      continue;
    }
    const Tensor& t = mine.at(l.tapelm);
    file.tensors[l.hf] = l.transposed ? transposed(t) : l.rows >= 0 ? rows_of(t, l.first_row, l.rows) : t.clone();
  }
  fs::create_directories(out);
  save_safetensors((fs::path(out) / "model.safetensors").string(), file);
  json config = arch->to_config(c);
  if (tokenizer.kind() == "gpt2") config["bos_token_id"] = config["eos_token_id"] = data::GPT2Tokenizer::kEndOfText;
  data::write_file((fs::path(out) / "config.json").string(), config.dump(2), "export");
  write_tokenizer(tokenizer, c.block_size, out);
}

HuggingFaceModel import_hugging_face(const std::string& dir, double dropout, uint64_t seed) {
  const fs::path config_path = fs::path(dir) / "config.json";
  TAPELM_CHECK(fs::is_directory(dir), "--init-from {}: not a folder", dir);
  const json j = read_json(config_path);
  const std::string type = field<std::string>(j, "model_type", "");
  const Architecture* arch = nullptr;
  std::string types;
  for (const Architecture& a : architectures()) {
    types += (types.empty() ? "" : ", ") + a.model_type;
    if (a.model_type == type) arch = &a;
  }
  TAPELM_CHECK(arch, "{}: model_type '{}' is not one tapelm reads ({})", config_path.string(), type, types);
  HuggingFaceModel m;
  try {
    m.config = arch->from_config(j, config_path.string());
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: {}", config_path.string(), e.what()));
  }
  m.config.dropout = dropout;
  nn::check_config(m.config);
  m.tokenizer = read_tokenizer(dir);
  TAPELM_CHECK(m.tokenizer->vocab_size() == m.config.vocab_size,
               "{}: the tokenizer has {} tokens but the model's vocab_size is {}", dir, m.tokenizer->vocab_size(),
               m.config.vocab_size);
  std::map<std::string, Tensor> hf = read_weights(dir);
  Generator init(seed);
  m.model = std::make_unique<nn::GPT>(m.config, init);
  // The model's own tensors: a row-split link writes its rows into them, a whole one replaces the entry.
  std::map<std::string, Tensor> mine;
  for (const auto& p : m.model->state_dict()) mine[p.name] = p.tensor;
  std::set<std::string> used;
  for (const Link& l : arch->links(m.config)) {
    auto it = hf.find(l.hf);
    TAPELM_CHECK(it != hf.end(), "{}: tensor '{}' is missing", dir, l.hf);
    used.insert(l.hf);
    if (l.tapelm.empty()) continue;
    Tensor& t = mine.at(l.tapelm);
    const Tensor& v = it->second;
    Shape want = l.transposed ? Shape{t.shape()[1], t.shape()[0]} : t.shape();
    if (l.rows >= 0) want[0] = l.rows;
    TAPELM_CHECK(v.shape() == want, "{}: tensor '{}' has shape {}, the config makes it {}", dir, l.hf, v.str_shape(),
                 Tensor::empty(want, DType::f32).str_shape());
    if (l.transposed)
      t = transposed(v);
    else if (l.rows >= 0)
      std::copy_n(v.data<float>(), v.numel(), t.data<float>() + l.first_row * row_elements(t));
    else
      t = v.clone();
  }
  for (const auto& [name, t] : hf) {
    const bool buffer = name.find(".attn.bias") != std::string::npos ||
                        name.find(".attn.masked_bias") != std::string::npos ||
                        name.find("rotary_emb.inv_freq") != std::string::npos;  // buffers older files kept
    const bool tied_head = name == "lm_head.weight" && m.config.tie_weights;
    TAPELM_CHECK(used.count(name) || buffer || tied_head, "{}: unexpected tensor '{}' for {}", dir, name,
                 arch->hf_class);
  }
  if (m.config.tie_weights) mine["lm_head.weight"] = mine.at("transformer.wte.weight");  // one tensor, two names
  m.model->load_state_dict(mine);
  return m;
}

}  // namespace tapelm::train
