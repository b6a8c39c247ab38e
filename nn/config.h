// The model configuration. Defaults are nanoGPT's GPT (learned positions,
// LayerNorm with bias, GELU MLP of width 4·d, softmax attention with a fused
// qkv projection, head tied to the token embedding).
#pragma once
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace tapelm::nn {

struct ModelConfig {
  int64_t vocab_size = 65;
  int64_t block_size = 64;  // context length
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t n_embd = 128;
  int64_t ffn_hidden = 0;            // 0 = 4·n_embd
  std::string mixer = "attention";   // an entry of the mixer table (nn/mixers.h)
  std::string ffn = "gelu";          // gelu | relu | swiglu
  std::string norm = "layernorm";    // layernorm | rmsnorm | dyt | scalenorm
  std::string final_norm = "same";   // the norm before the LM head: same (as norm) | one of norm's
  std::string position = "learned";  // learned | sinusoidal | scaled_sinusoidal | rope | none
  bool bias = true;                  // biases in Linear and norm layers
  bool tie_weights = true;           // lm_head.weight is transformer.wte.weight
  double dropout = 0.0;
  // Linear-attention family (nn/linear_attention.h).
  // Training form of recurrent mixers: auto (each mixer's fastest on a CPU:
  // the fused scan for mamba, chunkwise otherwise) | chunkwise | parallel | recurrent.
  std::string recurrent_form = "auto";
  int64_t chunk_size = 64;
  std::string feature_map = "elu";  // linear attention: elu (elu+1) | relu | identity
  bool normalize = true;            // linear attention: divide by φ(q)ᵀz (else per-head RMSNorm)
  int64_t gau_qk_dim = 128;         // GAU: width s of the shared Z
  int64_t gau_rotary_dim = 0;       // GAU: RoPE on the first min(this, s) features of q, k (0: none)
  bool gau_token_shift = false;     // GAU: the first half of its input comes from the token before
  int64_t d_state = 16;             // Mamba / Mamba-2: SSM state size N
  int64_t d_conv = 4;               // Mamba: causal conv kernel
  int64_t ssm_headdim = 32;         // Mamba-2: head dimension P
  // False for mixers whose blocks have no ln_2/mlp (the mixer table's has_ffn, nn/mixers.h).
  bool has_ffn() const;

  int64_t hidden() const { return ffn_hidden > 0 ? ffn_hidden : 4 * n_embd; }
  // Throws Error naming the first bad field.
  void validate() const;
  std::string to_json() const;
  static ModelConfig from_json(const std::string& json);
};

// Every field of ModelConfig, declared once: its JSON key, command-line flag,
// range or allowed values, and help. The JSON round trip, validate()'s
// per-field checks, the tool's flags and --help all read this table; adding a
// field means a member above and a row in config_fields().
struct ConfigField {
  using Member =
      std::variant<int64_t ModelConfig::*, double ModelConfig::*, bool ModelConfig::*, std::string ModelConfig::*>;
  std::string key;   // in checkpoints and --config files
  std::string flag;  // on the command line; empty where the run sets it (vocab_size)
  Member member;
  double lo = 0, hi = 0;             // numbers: in [lo, hi] (a double: [lo, hi))
  std::vector<std::string> choices;  // strings: one of these
  std::string help;
};
const std::vector<ConfigField>& config_fields();

}  // namespace tapelm::nn
