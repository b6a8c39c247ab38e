#include "nn/config.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "autograd/error.h"
#include "autograd/json_int.h"
#include "nn/mixers.h"

namespace tapelm::nn {

bool ModelConfig::has_ffn() const {
  for (const MixerSpec& m : mixer_table())
    if (m.name == mixer) return m.has_ffn;
  return true;  // an unknown mixer: validate() says so
}

// The upper bounds lie far above any model a CPU trains (GPT-3 has 96 layers
// of width 12,288): they keep every size derived from a config (a file's, say)
// far from int64 overflow.
const std::vector<ConfigField>& config_fields() {
  using C = ModelConfig;
  static const std::vector<ConfigField> fields = [] {
    std::vector<std::string> mixers;
    for (const MixerSpec& m : mixer_table()) mixers.push_back(m.name);
    const double big = double(int64_t(1) << 16);
    return std::vector<ConfigField>{
        {"vocab_size", "", &C::vocab_size, 1, double(int64_t(1) << 24), {}, "Vocabulary size V (the tokenizer's)"},
        {"block_size", "--context", &C::block_size, 1, double(int64_t(1) << 20), {}, "Context length T (tokens)"},
        {"n_layer", "--n-layer", &C::n_layer, 1, 1024, {}, "Number of blocks"},
        {"n_head", "--n-head", &C::n_head, 1, big, {}, "Attention heads"},
        {"n_embd", "--n-embd", &C::n_embd, 1, big, {}, "Model width d"},
        {"ffn_hidden",
         "--ffn-hidden",
         &C::ffn_hidden,
         0,
         double(int64_t(1) << 18),
         {},
         "Feed-forward width (0 = 4·n_embd)"},
        {"mixer", "--mixer", &C::mixer, 0, 0, mixers, "Token mixer of every block"},
        {"ffn", "--ffn", &C::ffn, 0, 0, {"gelu", "relu", "swiglu"}, "Feed-forward kind"},
        {"norm", "--norm", &C::norm, 0, 0, {"layernorm", "rmsnorm", "dyt", "scalenorm"}, "Normalisation"},
        {"final_norm",
         "--final-norm",
         &C::final_norm,
         0,
         0,
         {"same", "layernorm", "rmsnorm", "dyt", "scalenorm"},
         "Norm before the LM head (same: --norm's)"},
        {"position",
         "--position",
         &C::position,
         0,
         0,
         {"learned", "sinusoidal", "scaled_sinusoidal", "rope", "none"},
         "Positions"},
        {"bias", "--bias", &C::bias, 0, 0, {}, "Biases in linear and norm layers (true/false)"},
        {"tie_weights",
         "--tie-weights",
         &C::tie_weights,
         0,
         0,
         {},
         "Tie the LM head to the token embedding (true/false)"},
        {"dropout", "--dropout", &C::dropout, 0, 1, {}, "Dropout probability"},
        {"recurrent_form",
         "--recurrent-form",
         &C::recurrent_form,
         0,
         0,
         {"auto", "chunkwise", "parallel", "recurrent"},
         "Training form of recurrent mixers (auto: mamba's fused scan, else chunkwise)"},
        {"chunk_size",
         "--chunk-size",
         &C::chunk_size,
         1,
         double(int64_t(1) << 20),
         {},
         "Chunk size of the chunkwise form"},
        {"feature_map",
         "--feature-map",
         &C::feature_map,
         0,
         0,
         {"elu", "relu", "identity"},
         "Linear attention feature map (elu: elu+1)"},
        {"normalize",
         "--normalize",
         &C::normalize,
         0,
         0,
         {},
         "Linear attention: normalise by φ(q)ᵀz (true) or per-head RMSNorm (false)"},
        {"gau_qk_dim", "--gau-qk-dim", &C::gau_qk_dim, 1, big, {}, "GAU / FLASH: width s of the shared Z"},
        {"gau_rotary_dim",
         "--gau-rotary-dim",
         &C::gau_rotary_dim,
         0,
         big,
         {},
         "GAU / FLASH: rotate the first min(this, s) features of q and k (0: none)"},
        {"gau_token_shift",
         "--gau-token-shift",
         &C::gau_token_shift,
         0,
         0,
         {},
         "GAU / FLASH: shift the first half of the normed input one token on (true/false)"},
        {"d_state", "--d-state", &C::d_state, 1, double(int64_t(1) << 12), {}, "Mamba / Mamba-2 SSM state size"},
        {"d_conv",
         "--d-conv",
         &C::d_conv,
         1,
         1024,
         {},
         "short causal convolution width (Mamba, Mamba-2, DeltaNet, Gated DeltaNet)"},
        {"ssm_headdim", "--ssm-headdim", &C::ssm_headdim, 1, big, {}, "Mamba-2 head dimension"},
    };
  }();
  return fields;
}

void ModelConfig::validate() const {
  for (const ConfigField& f : config_fields()) {
    std::visit(
        [&](auto member) {
          using T = std::remove_cvref_t<decltype(this->*member)>;
          const T& v = this->*member;
          if constexpr (std::is_same_v<T, int64_t>) {
            TAPELM_CHECK(v >= (int64_t)f.lo && v <= (int64_t)f.hi, "config: {} must be in [{}, {}], got {}", f.key,
                         (int64_t)f.lo, (int64_t)f.hi, v);
          } else if constexpr (std::is_same_v<T, double>) {
            TAPELM_CHECK(v >= f.lo && v < f.hi, "config: {} must be in [{}, {}), got {}", f.key, f.lo, f.hi, v);
          } else if constexpr (std::is_same_v<T, std::string>) {
            TAPELM_CHECK(f.choices.empty() || std::find(f.choices.begin(), f.choices.end(), v) != f.choices.end(),
                         "config: unknown {} '{}' (available: {})", f.key, v, fmt::join(f.choices, ", "));
          }
        },
        f.member);
  }
  // Checks that join fields.
  TAPELM_CHECK(n_embd % n_head == 0, "config: n_embd {} is not divisible by n_head {}", n_embd, n_head);
  if (const MixerSpec& m = mixer_spec(mixer); m.validate) m.validate(*this);
  TAPELM_CHECK(position != "rope" || (n_embd / n_head) % 2 == 0, "config: rope needs an even head dimension, got {}",
               n_embd / n_head);
  TAPELM_CHECK(position != "scaled_sinusoidal" || n_embd % 2 == 0,
               "config: scaled_sinusoidal positions need an even n_embd (sines, then cosines), got {}", n_embd);
}

std::string ModelConfig::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const ConfigField& f : config_fields()) std::visit([&](auto member) { j[f.key] = this->*member; }, f.member);
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
  for (const ConfigField& f : config_fields()) {
    if (!j.contains(f.key)) continue;  // an older checkpoint: the default
    const nlohmann::json& v = j.at(f.key);
    const auto bad = [&] { return Error(fmt::format("config: bad value for '{}': {}", f.key, v.dump())); };
    std::visit(
        [&](auto member) {
          auto& field = c.*member;
          using T = std::remove_reference_t<decltype(field)>;
          if constexpr (std::is_same_v<T, int64_t>) {
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
        },
        f.member);
  }
  c.validate();
  return c;
}

}  // namespace tapelm::nn
