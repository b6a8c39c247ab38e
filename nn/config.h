// The model configuration. Defaults are nanoGPT's GPT (learned positions,
// LayerNorm with bias, GELU MLP of width 4·d, softmax attention with a fused
// qkv projection, head tied to the token embedding). This file knows no
// module: what a field means to a mixer, and the checks that need the mixer
// table, are in nn/mixers.h (check_config).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "autograd/fields.h"

namespace tapelm::nn {

struct ModelConfig {
  // The model's shape.
  int64_t vocab_size = 65;
  int64_t block_size = 64;  // context length
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t n_embd = 128;
  int64_t ffn_hidden = 0;           // 0 = 4·n_embd
  std::string mixer = "attention";  // an entry of the mixer table (nn/mixers.h)
  // The block around the mixer.
  std::string ffn = "gelu";          // gelu | relu | swiglu
  std::string norm = "layernorm";    // layernorm | rmsnorm | dyt | scalenorm
  std::string final_norm = "same";   // the norm before the LM head: same (as norm) | one of norm's
  double norm_eps = 1e-5;            // ε of every LayerNorm, RMSNorm and ScaleNorm (fla's models: 1e-6)
  std::string position = "learned";  // learned | sinusoidal | scaled_sinusoidal | rope | none
  bool bias = true;                  // biases in Linear and norm layers
  bool tie_weights = true;           // lm_head.weight is transformer.wte.weight
  double dropout = 0.0;
  // Recurrent mixers. Training form: auto (the mixer table's choice: the
  // fused scan for mamba, chunkwise otherwise) | chunkwise | parallel | recurrent.
  std::string recurrent_form = "auto";
  int64_t chunk_size = 64;
  // Linear attention (nn/linear_attention.h).
  std::string feature_map = "elu";  // elu (elu+1) | relu | identity
  bool normalize = true;            // divide by φ(q)ᵀz (else per-head RMSNorm)
  // GAU / FLASH (nn/gau.h).
  int64_t gau_qk_dim = 128;      // width s of the shared Z
  int64_t gau_rotary_dim = 0;    // RoPE on the first min(this, s) features of q, k (0: none)
  bool gau_token_shift = false;  // the first half of its input comes from the token before
  // Mamba / Mamba-2 (nn/mamba.h), and the short convolutions of DeltaNet and Gated DeltaNet.
  int64_t d_state = 16;      // SSM state size N
  int64_t d_conv = 4;        // causal convolution kernel
  int64_t ssm_headdim = 32;  // Mamba-2: head dimension P

  int64_t hidden() const { return ffn_hidden > 0 ? ffn_hidden : 4 * n_embd; }
  // The checks this config can make alone (each field's domain, and the joins
  // of fields that need no mixer); throws Error naming the first bad field.
  // nn::check_config adds the mixer's own checks.
  void validate() const;
  std::string to_json() const;
  // The fields of a JSON object (a missing key keeps its default), validated.
  static ModelConfig from_json(const std::string& json);
};

// Every field of ModelConfig, declared once: its JSON key, command-line flag,
// range or allowed values, and help. The JSON round trip, validate()'s
// per-field checks, the tool's flags and --help all read this table; adding a
// field means a member above and a row in config_fields().
using ConfigField = Field<ModelConfig>;
const std::vector<ConfigField>& config_fields();

}  // namespace tapelm::nn
