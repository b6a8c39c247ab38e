#include "nn/config.h"

#include <nlohmann/json.hpp>

#include "autograd/error.h"
#include "autograd/json_int.h"

namespace tapelm::nn {

const std::vector<MixerKind>& mixer_kinds() {
  static const std::vector<MixerKind> kinds{
      {"attention", true}, {"linear", true}, {"retnet", true}, {"gated_retention", true},
      {"gla", true},       {"deltanet", true}, {"gated_deltanet", true}, {"gau", false},
      {"flash", false},    {"mamba", false},   {"mamba2", false}};
  return kinds;
}

std::string mixer_names() {
  std::string names;
  for (auto& k : mixer_kinds()) names += (names.empty() ? "" : ", ") + std::string(k.name);
  return names;
}

static const MixerKind* find_mixer(const std::string& name) {
  for (auto& k : mixer_kinds())
    if (name == k.name) return &k;
  return nullptr;
}

bool ModelConfig::has_ffn() const {
  const MixerKind* k = find_mixer(mixer);
  return !k || k->has_ffn;
}

// Upper bounds far above any model a CPU trains (GPT-3 has 96 layers of width
// 12,288): they keep every size derived from a config (a file's, say) far
// from int64 overflow.
static void check_range(const char* field, int64_t value, int64_t lo, int64_t hi) {
  TAPELM_CHECK(value >= lo && value <= hi, "config: {} must be in [{}, {}], got {}", field, lo, hi, value);
}

void ModelConfig::validate() const {
  check_range("vocab_size", vocab_size, 1, int64_t(1) << 24);
  check_range("block_size (context)", block_size, 1, int64_t(1) << 20);
  check_range("n_layer", n_layer, 1, 1024);
  check_range("n_embd", n_embd, 1, int64_t(1) << 16);
  check_range("n_head", n_head, 1, n_embd);
  check_range("ffn_hidden", ffn_hidden, 0, int64_t(1) << 18);
  check_range("chunk_size", chunk_size, 1, int64_t(1) << 20);
  check_range("gau_qk_dim", gau_qk_dim, 1, int64_t(1) << 16);
  check_range("d_state", d_state, 1, int64_t(1) << 12);
  check_range("d_conv", d_conv, 1, 1024);
  check_range("ssm_headdim", ssm_headdim, 1, int64_t(1) << 16);
  TAPELM_CHECK(n_embd % n_head == 0, "config: n_embd {} is not divisible by n_head {}", n_embd, n_head);
  TAPELM_CHECK(find_mixer(mixer), "config: unknown mixer '{}' (available: {})", mixer, mixer_names());
  TAPELM_CHECK(recurrent_form == "auto" || recurrent_form == "chunkwise" || recurrent_form == "parallel" ||
                   recurrent_form == "recurrent",
               "config: unknown recurrent_form '{}' (auto, chunkwise, parallel, recurrent)", recurrent_form);
  TAPELM_CHECK(mixer != "mamba2" || (2 * n_embd) % ssm_headdim == 0,
               "config: mamba2 needs 2·n_embd ({}) divisible by ssm_headdim {}", 2 * n_embd, ssm_headdim);
  TAPELM_CHECK(feature_map == "elu" || feature_map == "relu" || feature_map == "identity",
               "config: unknown feature_map '{}' (elu, relu, identity)", feature_map);
  TAPELM_CHECK((mixer != "retnet" && mixer != "gated_retention") || (n_embd / n_head) % 2 == 0,
               "config: {} applies rotary positions and needs an even head dimension, got {}", mixer, n_embd / n_head);
  TAPELM_CHECK(ffn == "gelu" || ffn == "relu" || ffn == "swiglu",
               "config: unknown ffn '{}' (gelu, relu, swiglu)", ffn);
  TAPELM_CHECK(norm == "layernorm" || norm == "rmsnorm" || norm == "dyt",
               "config: unknown norm '{}' (layernorm, rmsnorm, dyt)", norm);
  TAPELM_CHECK(position == "learned" || position == "sinusoidal" || position == "rope" ||
                   position == "none",
               "config: unknown position '{}' (learned, sinusoidal, rope, none)", position);
  TAPELM_CHECK(position != "rope" || (n_embd / n_head) % 2 == 0,
               "config: rope needs an even head dimension, got {}", n_embd / n_head);
  TAPELM_CHECK(dropout >= 0 && dropout < 1, "config: dropout must be in [0, 1), got {}", dropout);
}

std::string ModelConfig::to_json() const {
  nlohmann::json j = {{"vocab_size", vocab_size}, {"block_size", block_size},
                      {"n_layer", n_layer},       {"n_head", n_head},
                      {"n_embd", n_embd},         {"ffn_hidden", ffn_hidden},
                      {"mixer", mixer},           {"ffn", ffn},
                      {"norm", norm},             {"position", position},
                      {"bias", bias},             {"tie_weights", tie_weights},
                      {"dropout", dropout},       {"recurrent_form", recurrent_form},
                      {"chunk_size", chunk_size}, {"feature_map", feature_map},
                      {"normalize", normalize},   {"gau_qk_dim", gau_qk_dim},
                      {"d_state", d_state},       {"d_conv", d_conv},
                      {"ssm_headdim", ssm_headdim}};
  return j.dump();
}

ModelConfig ModelConfig::from_json(const std::string& text) {
  ModelConfig c;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(fmt::format("config: not valid JSON: {}", e.what()));
  }
  TAPELM_CHECK(j.is_object(), "config: not a JSON object: {}", j.dump());
  auto get = [&](const char* key, auto& field) {
    if (!j.contains(key)) return;
    using Field = std::remove_reference_t<decltype(field)>;
    const nlohmann::json& v = j.at(key);
    const auto bad = [&] { return Error(fmt::format("config: bad value for '{}': {}", key, v.dump())); };
    if constexpr (std::is_same_v<Field, int64_t>) {
      const auto i = json_int64(v);  // not get_to: a float such as 1e30 would be cast with UB
      if (!i) throw bad();
      field = *i;
    } else {
      try {
        v.get_to(field);
      } catch (const std::exception&) {
        throw bad();
      }
    }
  };
  get("vocab_size", c.vocab_size);
  get("block_size", c.block_size);
  get("n_layer", c.n_layer);
  get("n_head", c.n_head);
  get("n_embd", c.n_embd);
  get("ffn_hidden", c.ffn_hidden);
  get("mixer", c.mixer);
  get("ffn", c.ffn);
  get("norm", c.norm);
  get("position", c.position);
  get("bias", c.bias);
  get("tie_weights", c.tie_weights);
  get("dropout", c.dropout);
  get("recurrent_form", c.recurrent_form);
  get("chunk_size", c.chunk_size);
  get("feature_map", c.feature_map);
  get("normalize", c.normalize);
  get("gau_qk_dim", c.gau_qk_dim);
  get("d_state", c.d_state);
  get("d_conv", c.d_conv);
  get("ssm_headdim", c.ssm_headdim);
  c.validate();
  return c;
}

}  // namespace tapelm::nn
