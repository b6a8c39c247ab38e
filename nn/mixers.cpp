#include "nn/mixers.h"

#include <algorithm>
#include <numeric>

#include "nn/attention.h"
#include "nn/gau.h"
#include "nn/linear_attention.h"
#include "nn/mamba.h"

namespace tapelm::nn {

namespace {
std::shared_ptr<TokenMixer> make_attention(const MixerArgs& a) {
  const ModelConfig& c = a.config;
  return std::make_shared<MultiHeadAttention>(c.n_embd, c.n_head, c.bias, c.dropout, a.rotary, a.gen, a.dropout_gen,
                                              a.proj_std);
}
std::shared_ptr<TokenMixer> make_linear(const MixerArgs& a) {
  return std::make_shared<LinearRecurrentMixer>(a.config, a.gen, a.proj_std);
}
std::shared_ptr<TokenMixer> make_gau(const MixerArgs& a) {
  return std::make_shared<GatedAttentionUnit>(a.config, a.gen, a.proj_std);
}
std::shared_ptr<TokenMixer> make_mamba(const MixerArgs& a) {
  return std::make_shared<Mamba>(a.config, a.gen, a.proj_std);
}

// The linear family's key and value widths (fla's expand_k, expand_v).
void linear_family_widths(const ModelConfig& c) { linear_widths(c); }
void mamba2_heads(const ModelConfig& c) {
  TAPELM_CHECK((2 * c.n_embd) % c.ssm_headdim == 0, "config: mamba2 needs 2·n_embd ({}) divisible by ssm_headdim {}",
               2 * c.n_embd, c.ssm_headdim);
}
int64_t mamba2_width_multiple(const ModelConfig& c) {  // 2·d % P == 0
  return c.ssm_headdim / std::gcd(c.ssm_headdim, (int64_t)2);
}

// Transformer++ (the Mamba paper's baseline; LLaMA's recipe): rotary
// positions, SwiGLU, RMSNorm, no biases.
void transformer_pp(ModelConfig& c) {
  c.position = "rope", c.ffn = "swiglu", c.ffn_hidden = swiglu_hidden(c.n_embd), c.norm = "rmsnorm", c.bias = false;
}
// fla's language models of the linear-attention family (fla/models/*): no
// position embedding (RetNet and gated retention rotate q, k inside), RMSNorm,
// a SwiGLU MLP of fla's width, no biases.
void fla_model(ModelConfig& c) {
  c.position = "none", c.ffn = "swiglu", c.ffn_hidden = swiglu_hidden(c.n_embd), c.norm = "rmsnorm", c.bias = false;
}
// FLASH-pytorch's FLASHTransformer (the FLASH paper's model): scaled
// sinusoidal absolute positions, ScaleNorm before each layer and a LayerNorm
// before the head, token shift, RoPE on 32 features of q and k, groups of 256.
void flash_model(ModelConfig& c) {
  c.position = "scaled_sinusoidal", c.norm = "scalenorm", c.final_norm = "layernorm";
  c.gau_token_shift = true, c.gau_rotary_dim = 32;
  if (c.mixer == "flash") c.chunk_size = 256;
}
// mamba_ssm's MixerModel: no position embedding, RMSNorm, no biases.
void mamba_model(ModelConfig& c) { c.position = "none", c.norm = "rmsnorm", c.bias = false; }
}  // namespace

int64_t swiglu_hidden(int64_t n_embd) { return (n_embd * 8 / 3 + 255) / 256 * 256; }

ModelConfig with_recipe(ModelConfig c, const std::vector<std::string>& given) {
  const MixerSpec& m = mixer_spec(c.mixer);
  if (!m.recipe) return c;
  ModelConfig r = c;
  m.recipe(r);
  for (const ConfigField& f : config_fields())
    if (std::find(given.begin(), given.end(), f.key) == given.end())
      std::visit([&](auto member) { c.*member = r.*member; }, f.member);
  return c;
}

const std::vector<MixerSpec>& mixer_table() {
  using F = RecurrenceForm;
  const auto chunkwise = F::chunkwise;
  static const std::vector<MixerSpec> table{
      {"attention", "attention", "Vaswani et al. 2017; nanoGPT's GPT", true, false, F::parallel, make_attention,
       attention_sequence_flops, true, nullptr, nullptr, nullptr},
      {"transformer++", "attention", "Touvron et al. 2023 (LLaMA); the Mamba paper's baseline", true, false,
       F::parallel, make_attention, attention_sequence_flops, true, nullptr, nullptr, transformer_pp},
      {"linear", "linear attention", "Katharopoulos et al. 2020", true, true, chunkwise, make_linear,
       linear_recurrent_sequence_flops, false, linear_family_widths, linear_width_multiple, fla_model},
      {"retnet", "linear attention", "Sun et al. 2023", true, true, chunkwise, make_linear,
       linear_recurrent_sequence_flops, false, linear_family_widths, linear_width_multiple, fla_model},
      {"gated_retention", "linear attention", "Sun et al. 2024 (YOCO)", true, true, chunkwise, make_linear,
       linear_recurrent_sequence_flops, false, linear_family_widths, linear_width_multiple, fla_model},
      {"gla", "linear attention", "Yang et al. 2023", true, true, chunkwise, make_linear,
       linear_recurrent_sequence_flops, false, linear_family_widths, linear_width_multiple, fla_model},
      {"deltanet", "linear attention", "Schlag et al. 2021; Yang et al. 2024", true, true, chunkwise, make_linear,
       linear_recurrent_sequence_flops, false, linear_family_widths, linear_width_multiple, fla_model},
      {"gated_deltanet", "linear attention", "Yang et al. 2024b", true, true, chunkwise, make_linear,
       linear_recurrent_sequence_flops, false, linear_family_widths, linear_width_multiple, fla_model},
      {"gau", "gated attention unit", "Hua et al. 2022, §2", false, false, F::parallel, make_gau, gau_sequence_flops,
       true, gau_validate, nullptr, flash_model},
      {"flash", "gated attention unit", "Hua et al. 2022, §3", false, true, chunkwise, make_gau, gau_sequence_flops,
       true, gau_validate, nullptr, flash_model},
      {"mamba", "state space", "Gu & Dao 2023", false, true, F::recurrent, make_mamba, mamba_sequence_flops, false,
       nullptr, nullptr, mamba_model},
      {"mamba2", "state space", "Dao & Gu 2024", false, true, chunkwise, make_mamba, mamba_sequence_flops, false,
       mamba2_heads, mamba2_width_multiple, mamba_model},
  };
  return table;
}

const MixerSpec& mixer_spec(const std::string& name) {
  for (const MixerSpec& m : mixer_table())
    if (m.name == name) return m;
  throw Error(fmt::format("unknown mixer '{}' (available: {})", name, mixer_names()));
}

std::string mixer_names() {
  std::string names;
  for (const MixerSpec& m : mixer_table()) names += (names.empty() ? "" : ", ") + m.name;
  return names;
}

RecurrenceForm training_form(const ModelConfig& c) {
  if (c.recurrent_form == "parallel") return RecurrenceForm::parallel;
  if (c.recurrent_form == "recurrent") return RecurrenceForm::recurrent;
  if (c.recurrent_form == "chunkwise") return RecurrenceForm::chunkwise;
  return mixer_spec(c.mixer).auto_form;
}

const char* form_name(RecurrenceForm form) {
  switch (form) {
    case RecurrenceForm::recurrent:
      return "recurrent";
    case RecurrenceForm::parallel:
      return "parallel";
    case RecurrenceForm::chunkwise:
      return "chunkwise";
  }
  return "?";
}

}  // namespace tapelm::nn
