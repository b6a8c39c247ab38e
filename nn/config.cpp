#include "nn/config.h"

#include <nlohmann/json.hpp>

namespace tapelm::nn {

// The upper bounds lie far above any model a CPU trains (GPT-3 has 96 layers
// of width 12,288): they keep every size derived from a config (a file's, say)
// far from int64 overflow.
const std::vector<ConfigField>& config_fields() {
  using C = ModelConfig;
  constexpr double big = double(int64_t(1) << 16);
  static const std::vector<ConfigField> fields{
      {.key = "vocab_size",
       .member = &C::vocab_size,
       .lo = 1,
       .hi = double(int64_t(1) << 24),
       .help = "Vocabulary size V (the tokenizer's)"},
      {.key = "block_size",
       .flag = "--context",
       .member = &C::block_size,
       .lo = 1,
       .hi = double(int64_t(1) << 20),
       .help = "Context length T (tokens)"},
      {.key = "n_layer", .flag = "--n-layer", .member = &C::n_layer, .lo = 1, .hi = 1024, .help = "Number of blocks"},
      {.key = "n_head", .flag = "--n-head", .member = &C::n_head, .lo = 1, .hi = big, .help = "Attention heads"},
      {.key = "n_embd", .flag = "--n-embd", .member = &C::n_embd, .lo = 1, .hi = big, .help = "Model width d"},
      {.key = "ffn_hidden",
       .flag = "--ffn-hidden",
       .member = &C::ffn_hidden,
       .lo = 0,
       .hi = double(int64_t(1) << 18),
       .help = "Feed-forward width (0 = 4·n_embd)"},
      // Its choices are the mixer table's (nn::check_config checks them).
      {.key = "mixer", .flag = "--mixer", .member = &C::mixer, .help = "Token mixer of every block"},
      {.key = "ffn",
       .flag = "--ffn",
       .member = &C::ffn,
       .choices = {"gelu", "relu", "swiglu"},
       .help = "Feed-forward kind"},
      {.key = "norm",
       .flag = "--norm",
       .member = &C::norm,
       .choices = {"layernorm", "rmsnorm", "dyt", "scalenorm"},
       .help = "Normalisation"},
      {.key = "final_norm",
       .flag = "--final-norm",
       .member = &C::final_norm,
       .choices = {"same", "layernorm", "rmsnorm", "dyt", "scalenorm"},
       .help = "Norm before the LM head (same: --norm's)"},
      {.key = "norm_eps",
       .flag = "--norm-eps",
       .member = &C::norm_eps,
       .lo = 0,
       .hi = 1,
       .help = "ε of every LayerNorm, RMSNorm and ScaleNorm (the mixers' per-head norms too)"},
      {.key = "position",
       .flag = "--position",
       .member = &C::position,
       .choices = {"learned", "sinusoidal", "scaled_sinusoidal", "rope", "none"},
       .help = "Positions"},
      {.key = "bias", .flag = "--bias", .member = &C::bias, .help = "Biases in linear and norm layers (true/false)"},
      {.key = "tie_weights",
       .flag = "--tie-weights",
       .member = &C::tie_weights,
       .help = "Tie the LM head to the token embedding (true/false)"},
      {.key = "dropout", .flag = "--dropout", .member = &C::dropout, .lo = 0, .hi = 1, .help = "Dropout probability"},
      {.key = "recurrent_form",
       .flag = "--recurrent-form",
       .member = &C::recurrent_form,
       .choices = {"auto", "chunkwise", "parallel", "recurrent"},
       .help = "Training form of recurrent mixers (auto: mamba's fused scan, else chunkwise)"},
      {.key = "chunk_size",
       .flag = "--chunk-size",
       .member = &C::chunk_size,
       .lo = 1,
       .hi = double(int64_t(1) << 20),
       .help = "Chunk size of the chunkwise form"},
      {.key = "feature_map",
       .flag = "--feature-map",
       .member = &C::feature_map,
       .choices = {"elu", "relu", "identity"},
       .help = "Linear attention feature map (elu: elu+1)"},
      {.key = "normalize",
       .flag = "--normalize",
       .member = &C::normalize,
       .help = "Linear attention: normalise by φ(q)ᵀz (true) or per-head RMSNorm (false)"},
      {.key = "gau_qk_dim",
       .flag = "--gau-qk-dim",
       .member = &C::gau_qk_dim,
       .lo = 1,
       .hi = big,
       .help = "GAU / FLASH: width s of the shared Z"},
      {.key = "gau_rotary_dim",
       .flag = "--gau-rotary-dim",
       .member = &C::gau_rotary_dim,
       .lo = 0,
       .hi = big,
       .help = "GAU / FLASH: rotate the first min(this, s) features of q and k (0: none)"},
      {.key = "gau_token_shift",
       .flag = "--gau-token-shift",
       .member = &C::gau_token_shift,
       .help = "GAU / FLASH: shift the first half of the normed input one token on (true/false)"},
      {.key = "d_state",
       .flag = "--d-state",
       .member = &C::d_state,
       .lo = 1,
       .hi = double(int64_t(1) << 12),
       .help = "Mamba / Mamba-2 SSM state size"},
      {.key = "d_conv",
       .flag = "--d-conv",
       .member = &C::d_conv,
       .lo = 1,
       .hi = 1024,
       .help = "Short causal convolution width (Mamba, Mamba-2, DeltaNet, Gated DeltaNet)"},
      {.key = "ssm_headdim",
       .flag = "--ssm-headdim",
       .member = &C::ssm_headdim,
       .lo = 1,
       .hi = big,
       .help = "Mamba-2 head dimension"},
  };
  return fields;
}

void ModelConfig::validate() const {
  check_fields(*this, config_fields(), "config");
  TAPELM_CHECK(n_embd % n_head == 0, "config: n_embd {} is not divisible by n_head {}", n_embd, n_head);
  TAPELM_CHECK(position != "rope" || (n_embd / n_head) % 2 == 0, "config: rope needs an even head dimension, got {}",
               n_embd / n_head);
  TAPELM_CHECK(position != "scaled_sinusoidal" || n_embd % 2 == 0,
               "config: scaled_sinusoidal positions need an even n_embd (sines, then cosines), got {}", n_embd);
}

std::string ModelConfig::to_json() const { return fields_to_json(*this, config_fields()).dump(); }

ModelConfig ModelConfig::from_json(const std::string& text) {
  ModelConfig c = fields_from_json_text(config_fields(), text, "config");
  c.validate();
  return c;
}

}  // namespace tapelm::nn
