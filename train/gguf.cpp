#include "train/gguf.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <variant>

#include "autograd/error.h"
#include "data/gpt2_tokenizer.h"
#include "train/hugging_face.h"

namespace tapelm::train {

namespace {

constexpr uint32_t kAlignment = 32;

enum class GgmlType : uint32_t { f32 = 0, f16 = 1, bf16 = 30 };

// Metadata value types (gguf.md's gguf_metadata_value_type).
enum ValueType : uint32_t { kUint32 = 4, kInt32 = 5, kFloat32 = 6, kBool = 7, kString = 8, kArray = 9 };

using Value = std::variant<uint32_t, float, bool, std::string, std::vector<std::string>, std::vector<int32_t>>;

struct GgufTensor {
  std::string name;
  std::vector<float> values;
  std::vector<int64_t> shape;  // PyTorch's order, outermost first
  GgmlType type = GgmlType::f32;
};

// ---- numbers --------------------------------------------------------------

uint16_t to_f16(float f) {
  const _Float16 h = (_Float16)f;  // IEEE rounding to nearest even
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

uint16_t to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if (std::isnan(f)) return (uint16_t)((x >> 16) | 0x40);
  return (uint16_t)((x + 0x7FFF + ((x >> 16) & 1)) >> 16);  // round to nearest even
}

// ---- the file ---------------------------------------------------------------

class Writer {
 public:
  explicit Writer(std::FILE* f) : f_(f) {}
  template <class T>
  void raw(const T& v) {
    put(&v, sizeof(T));
  }
  void string(const std::string& s) {
    raw<uint64_t>(s.size());
    put(s.data(), s.size());
  }
  void value(const Value& v) {
    if (auto* u = std::get_if<uint32_t>(&v)) raw<uint32_t>(kUint32), raw(*u);
    if (auto* x = std::get_if<float>(&v)) raw<uint32_t>(kFloat32), raw(*x);
    if (auto* b = std::get_if<bool>(&v)) raw<uint32_t>(kBool), raw<uint8_t>(*b);
    if (auto* s = std::get_if<std::string>(&v)) raw<uint32_t>(kString), string(*s);
    if (auto* a = std::get_if<std::vector<std::string>>(&v)) {
      raw<uint32_t>(kArray), raw<uint32_t>(kString), raw<uint64_t>(a->size());
      for (const auto& s : *a) string(s);
    }
    if (auto* a = std::get_if<std::vector<int32_t>>(&v)) {
      raw<uint32_t>(kArray), raw<uint32_t>(kInt32), raw<uint64_t>(a->size());
      put(a->data(), a->size() * 4);
    }
  }
  void pad() {
    static const char zeros[kAlignment] = {};
    if (at_ % kAlignment) put(zeros, kAlignment - at_ % kAlignment);
  }
  void put(const void* p, size_t n) {
    TAPELM_CHECK(std::fwrite(p, 1, n, f_) == n, "export --format gguf: cannot write: {}", std::strerror(errno));
    at_ += n;
  }

 private:
  std::FILE* f_;
  uint64_t at_ = 0;
};

uint64_t data_bytes(const GgufTensor& t) { return t.values.size() * (t.type == GgmlType::f32 ? 4 : 2); }

// ---- the model's tensors under llama.cpp's names ----------------------------

struct Source {
  std::map<std::string, Tensor> tensors;
  const Tensor& operator[](const std::string& name) const {
    auto it = tensors.find(name);
    TAPELM_CHECK(it != tensors.end(), "export --format gguf: the model has no tensor '{}'", name);
    return it->second;
  }
};

std::vector<float> values_of(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

// Rows [first, first + n) of a 2-D (or 1-D) tensor.
std::vector<float> rows(const Tensor& t, int64_t first, int64_t n) {
  const int64_t w = t.dim() == 1 ? 1 : t.shape()[1];
  return std::vector<float>(t.data<float>() + first * w, t.data<float>() + (first + n) * w);
}

// llama.cpp's converter's permute for q and k: per head, the rotate-half
// pairs (i, i + hd/2) become ggml's adjacent pairs (2i, 2i + 1).
std::vector<float> rope_interleaved(const std::vector<float>& w, int64_t n_head, int64_t width) {
  const int64_t n_rows = (int64_t)w.size() / width, hd = n_rows / n_head;
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < hd / 2; ++i)
      for (int64_t half = 0; half < 2; ++half)
        std::copy_n(w.begin() + (h * hd + half * hd / 2 + i) * width, width,
                    out.begin() + (h * hd + 2 * i + half) * width);
  return out;
}

struct Model {
  std::string arch;
  std::map<std::string, Value> keys;
  std::vector<GgufTensor> tensors;
};

void add(Model& m, const std::string& name, std::vector<float> values, std::vector<int64_t> shape) {
  m.tensors.push_back({name, std::move(values), std::move(shape)});
}
void add(Model& m, const std::string& name, const Tensor& t) { add(m, name, values_of(t), t.shape()); }

// The norm weight and bias (zeros where the model has none: GPT-2's blocks need both).
void add_norm(Model& m, const std::string& name, const Source& s, const std::string& from, int64_t d) {
  add(m, name + ".weight", s[from + ".weight"]);
  if (!s.tensors.count(from + ".bias")) return add(m, name + ".bias", std::vector<float>(d, 0.0f), {d});
  add(m, name + ".bias", s[from + ".bias"]);
}
void add_linear(Model& m, const std::string& name, const Source& s, const std::string& from, bool zero_bias) {
  const Tensor& w = s[from + ".weight"];
  add(m, name + ".weight", w);
  if (s.tensors.count(from + ".bias"))
    add(m, name + ".bias", s[from + ".bias"]);
  else if (zero_bias)
    add(m, name + ".bias", std::vector<float>(w.shape()[0], 0.0f), {w.shape()[0]});
}

void add_head(Model& m, const nn::ModelConfig& c, const Source& s) {
  add(m, "output_norm.weight", s["transformer.ln_f.weight"]);
  if (s.tensors.count("transformer.ln_f.bias")) add(m, "output_norm.bias", s["transformer.ln_f.bias"]);
  if (!c.tie_weights) add(m, "output.weight", s["lm_head.weight"]);  // tied: llama.cpp uses token_embd
}

void gpt2(Model& m, const nn::ModelConfig& c, const Source& s) {
  m.arch = "gpt2";
  m.keys = {
      {"gpt2.context_length", (uint32_t)c.block_size},    {"gpt2.embedding_length", (uint32_t)c.n_embd},
      {"gpt2.feed_forward_length", (uint32_t)c.hidden()}, {"gpt2.block_count", (uint32_t)c.n_layer},
      {"gpt2.attention.head_count", (uint32_t)c.n_head},  {"gpt2.attention.layer_norm_epsilon", (float)c.norm_eps}};
  add(m, "token_embd.weight", s["transformer.wte.weight"]);
  add(m, "position_embd.weight", s["transformer.wpe.weight"]);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string b = fmt::format("blk.{}.", i), t = fmt::format("transformer.h.{}.", i);
    add_norm(m, b + "attn_norm", s, t + "ln_1", c.n_embd);
    add_linear(m, b + "attn_qkv", s, t + "attn.c_attn", true);
    add_linear(m, b + "attn_output", s, t + "attn.c_proj", true);
    add_norm(m, b + "ffn_norm", s, t + "ln_2", c.n_embd);
    add_linear(m, b + "ffn_up", s, t + "mlp.c_fc", true);
    add_linear(m, b + "ffn_down", s, t + "mlp.c_proj", true);
  }
  add_norm(m, "output_norm", s, "transformer.ln_f", c.n_embd);
  if (!c.tie_weights) add(m, "output.weight", s["lm_head.weight"]);
}

void llama(Model& m, const nn::ModelConfig& c, const Source& s) {
  TAPELM_CHECK(!c.bias,
               "export --format gguf: llama.cpp's llama has no biases in every place tapelm's --bias puts "
               "them; export a model with --bias false");
  m.arch = "llama";
  const int64_t d = c.n_embd;
  m.keys = {{"llama.context_length", (uint32_t)c.block_size},
            {"llama.embedding_length", (uint32_t)d},
            {"llama.feed_forward_length", (uint32_t)c.hidden()},
            {"llama.block_count", (uint32_t)c.n_layer},
            {"llama.attention.head_count", (uint32_t)c.n_head},
            {"llama.attention.head_count_kv", (uint32_t)c.n_head},
            {"llama.attention.layer_norm_rms_epsilon", (float)c.norm_eps},
            {"llama.rope.dimension_count", (uint32_t)(d / c.n_head)},
            {"llama.rope.freq_base", 10000.0f},
            {"llama.vocab_size", (uint32_t)c.vocab_size}};
  add(m, "token_embd.weight", s["transformer.wte.weight"]);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string b = fmt::format("blk.{}.", i), t = fmt::format("transformer.h.{}.", i);
    const Tensor& qkv = s[t + "attn.c_attn.weight"];
    add(m, b + "attn_norm.weight", s[t + "ln_1.weight"]);
    add(m, b + "attn_q.weight", rope_interleaved(rows(qkv, 0, d), c.n_head, d), {d, d});
    add(m, b + "attn_k.weight", rope_interleaved(rows(qkv, d, d), c.n_head, d), {d, d});
    add(m, b + "attn_v.weight", rows(qkv, 2 * d, d), {d, d});
    add(m, b + "attn_output.weight", s[t + "attn.c_proj.weight"]);
    add(m, b + "ffn_norm.weight", s[t + "ln_2.weight"]);
    add(m, b + "ffn_gate.weight", s[t + "mlp.c_gate.weight"]);
    add(m, b + "ffn_up.weight", s[t + "mlp.c_fc.weight"]);
    add(m, b + "ffn_down.weight", s[t + "mlp.c_proj.weight"]);
  }
  add_head(m, c, s);
}

std::vector<float> minus_exp(const Tensor& a_log) {
  std::vector<float> v = values_of(a_log);
  for (float& x : v) x = -std::exp(x);
  return v;
}

void mamba(Model& m, const nn::ModelConfig& c, const Source& s, bool two) {
  const std::string a = two ? "mamba2" : "mamba";
  m.arch = a;
  const int64_t d_inner = 2 * c.n_embd, n_head = d_inner / c.ssm_headdim;
  m.keys = {{a + ".context_length", (uint32_t)c.block_size},
            {a + ".embedding_length", (uint32_t)c.n_embd},
            {a + ".feed_forward_length", (uint32_t)0},
            {a + ".attention.head_count", (uint32_t)0},
            {a + ".block_count", (uint32_t)c.n_layer},
            {a + ".ssm.conv_kernel", (uint32_t)c.d_conv},
            {a + ".ssm.inner_size", (uint32_t)d_inner},
            {a + ".ssm.state_size", (uint32_t)c.d_state},
            {a + ".attention.layer_norm_rms_epsilon", (float)c.norm_eps}};
  if (two) {
    m.keys[a + ".ssm.time_step_rank"] = (uint32_t)n_head;
    m.keys[a + ".ssm.group_count"] = (uint32_t)1;
  } else {
    m.keys[a + ".ssm.time_step_rank"] = (uint32_t)((c.n_embd + 15) / 16);
    m.keys[a + ".ssm.dt_b_c_rms"] = false;
  }
  add(m, "token_embd.weight", s["transformer.wte.weight"]);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string b = fmt::format("blk.{}.", i), t = fmt::format("transformer.h.{}.attn.", i);
    add(m, b + "attn_norm.weight", s[fmt::format("transformer.h.{}.ln_1.weight", i)]);
    add(m, b + "ssm_in.weight", s[t + "in_proj.weight"]);
    const Tensor& conv = s[t + "conv1d.weight"];  // [C, 1, k] -> [C, k]
    add(m, b + "ssm_conv1d.weight", values_of(conv), {conv.shape()[0], conv.shape()[2]});
    add(m, b + "ssm_conv1d.bias", s[t + "conv1d.bias"]);
    if (two) {
      add(m, b + "ssm_dt.bias", s[t + "dt_bias"]);
      add(m, b + "ssm_a", minus_exp(s[t + "A_log"]), {n_head, 1});
      add(m, b + "ssm_d", values_of(s[t + "D"]), {n_head, 1});
      add(m, b + "ssm_norm.weight", values_of(s[t + "norm.weight"]), {1, d_inner});
    } else {
      add(m, b + "ssm_x.weight", s[t + "x_proj.weight"]);
      add(m, b + "ssm_dt.weight", s[t + "dt_proj.weight"]);
      add(m, b + "ssm_dt.bias", s[t + "dt_proj.bias"]);
      add(m, b + "ssm_a", minus_exp(s[t + "A_log"]), s[t + "A_log"].shape());
      add(m, b + "ssm_d", s[t + "D"]);
    }
    add(m, b + "ssm_out.weight", s[t + "out_proj.weight"]);
  }
  add_head(m, c, s);
}

// The tokenizer as byte-level BPE: each token written as its bytes' GPT-2 characters.
void add_tokenizer(Model& m, const data::Tokenizer& tok) {
  const nlohmann::json t = nlohmann::json::parse(tok.to_json());
  std::vector<std::string> tokens, merges;
  if (tok.kind() == "gpt2") {
    tokens = t.at("vocab").get<std::vector<std::string>>();
  } else {
    for (int32_t id = 0; id < (int32_t)tok.vocab_size(); ++id) tokens.push_back(data::gpt2_printable(tok.decode({id})));
  }
  if (t.contains("merges"))
    for (const auto& pair : t.at("merges"))
      merges.push_back(tokens.at(pair.at(0).get<size_t>()) + " " + tokens.at(pair.at(1).get<size_t>()));
  m.keys["tokenizer.ggml.model"] = std::string("gpt2");
  m.keys["tokenizer.ggml.pre"] = std::string(tok.kind() == "gpt2" ? "gpt-2" : "default");
  m.keys["tokenizer.ggml.tokens"] = tokens;
  m.keys["tokenizer.ggml.token_type"] = std::vector<int32_t>(tokens.size(), 1);  // normal
  m.keys["tokenizer.ggml.merges"] = merges;
  if (tok.kind() == "gpt2") {
    m.keys["tokenizer.ggml.bos_token_id"] = (uint32_t)data::GPT2Tokenizer::kEndOfText;
    m.keys["tokenizer.ggml.eos_token_id"] = (uint32_t)data::GPT2Tokenizer::kEndOfText;
  }
}

// The large matrices llama.cpp's converter stores in half precision.
bool half_precision_candidate(const std::string& name) {
  for (const char* part : {"token_embd", "output.weight", "position_embd", "attn_qkv.weight", "attn_q.weight",
                           "attn_k.weight", "attn_v.weight", "attn_output.weight", "ffn_up.weight", "ffn_down.weight",
                           "ffn_gate.weight", "ssm_in.weight", "ssm_x.weight", "ssm_out.weight"})
    if (name.find(part) != std::string::npos) return true;
  return false;
}

}  // namespace

void export_gguf(const nn::GPT& model, const data::Tokenizer& tok, const std::string& path, const std::string& type) {
  TAPELM_CHECK(type == "f32" || type == "f16" || type == "bf16",
               "export --format gguf: --gguf-type {} (f32, f16 or bf16)", type);
  const nn::ModelConfig& c = model.config;
  const std::string cls = hugging_face_class(c);  // the architectures are the transformers classes'
  Source s;
  for (const auto& p : model.state_dict())
    s.tensors[p.name] = p.tensor.device() == Device::cpu ? p.tensor : p.tensor.to(Device::cpu);
  Model m;
  if (cls == "GPT2LMHeadModel") gpt2(m, c, s);
  if (cls == "LlamaForCausalLM") llama(m, c, s);
  if (cls == "MambaForCausalLM" || cls == "Mamba2ForCausalLM") mamba(m, c, s, cls == "Mamba2ForCausalLM");
  const GgmlType half = type == "f16" ? GgmlType::f16 : GgmlType::bf16;
  for (GgufTensor& t : m.tensors)
    if (type != "f32" && t.shape.size() == 2 && half_precision_candidate(t.name)) t.type = half;
  m.keys["general.architecture"] = m.arch;
  m.keys["general.name"] = std::string("tapelm ") + c.mixer;
  m.keys["general.file_type"] = (uint32_t)(type == "f32" ? 0 : type == "f16" ? 1 : 32);  // llama_ftype
  m.keys["general.alignment"] = kAlignment;
  add_tokenizer(m, tok);

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  TAPELM_CHECK(f, "export --format gguf: cannot write {}: {}", tmp, std::strerror(errno));
  try {
    Writer w(f);
    w.put("GGUF", 4);
    w.raw<uint32_t>(3);
    w.raw<uint64_t>(m.tensors.size());
    w.raw<uint64_t>(m.keys.size());
    for (const auto& [key, value] : m.keys) w.string(key), w.value(value);
    uint64_t offset = 0;
    for (const GgufTensor& t : m.tensors) {
      w.string(t.name);
      w.raw<uint32_t>(t.shape.size());
      for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) w.raw<uint64_t>(*it);  // innermost first
      w.raw<uint32_t>((uint32_t)t.type);
      w.raw<uint64_t>(offset);
      offset += (data_bytes(t) + kAlignment - 1) / kAlignment * kAlignment;
    }
    w.pad();
    for (const GgufTensor& t : m.tensors) {
      if (t.type == GgmlType::f32) {
        w.put(t.values.data(), t.values.size() * 4);
      } else {
        std::vector<uint16_t> h(t.values.size());
        for (size_t i = 0; i < h.size(); ++i)
          h[i] = t.type == GgmlType::f16 ? to_f16(t.values[i]) : to_bf16(t.values[i]);
        w.put(h.data(), h.size() * 2);
      }
      w.pad();
    }
    TAPELM_CHECK(std::fflush(f) == 0 && ::fsync(fileno(f)) == 0, "export --format gguf: cannot write {}", tmp);
  } catch (...) {
    std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  TAPELM_CHECK(std::fclose(f) == 0, "export --format gguf: cannot write {}", tmp);
  std::filesystem::rename(tmp, path);
}

}  // namespace tapelm::train
