#include "nn/mixers.h"

#include <algorithm>
#include <numeric>

#include "nn/attention.h"
#include "nn/gau.h"
#include "nn/linear_attention.h"
#include "nn/mamba.h"
#include "nn/mamba2.h"

namespace tapelm::nn {

namespace {
std::shared_ptr<TokenMixer> make_attention(const MixerArgs& a) {
  const ModelConfig& c = a.config;
  return std::make_shared<MultiHeadAttention>(c.n_embd, c.n_head, c.bias, c.dropout, a.rotary, a.gen, a.dropout_gen,
                                              a.proj_std);
}
std::shared_ptr<TokenMixer> make_linear(const MixerArgs& a) {
  return std::make_shared<LinearRecurrentMixer>(a.config, a.form, a.gen, a.proj_std);
}
std::shared_ptr<TokenMixer> make_gau(const MixerArgs& a) {
  return std::make_shared<GatedAttentionUnit>(a.config, a.form, a.gen, a.proj_std);
}
std::shared_ptr<TokenMixer> make_mamba(const MixerArgs& a) {
  return std::make_shared<Mamba>(a.config, a.form, a.gen, a.proj_std);
}
std::shared_ptr<TokenMixer> make_mamba2(const MixerArgs& a) {
  return std::make_shared<Mamba2>(a.config, a.form, a.gen, a.proj_std);
}

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
// fla's language models of the linear-attention family (fla/models/*,
// their configuration_*.py defaults): no position embedding (RetNet and gated
// retention rotate q, k inside), RMSNorm with norm_eps 1e-6 (the per-head
// output norms too), a SwiGLU MLP of fla's width (hidden_ratio 4; RetNet's 2),
// no biases, an LM head of its own (tie_word_embeddings False).
void fla_model(ModelConfig& c) {
  c.position = "none", c.ffn = "swiglu", c.norm = "rmsnorm", c.norm_eps = 1e-6, c.bias = false, c.tie_weights = false;
  c.ffn_hidden = swiglu_hidden(c.n_embd, c.mixer == "retnet" ? 2 : 4);
}
// FLASH-pytorch's FLASHTransformer (the FLASH paper's model): scaled
// sinusoidal absolute positions, ScaleNorm before each layer and a LayerNorm
// before the head, token shift, RoPE on 32 features of q and k, groups of 256,
// an LM head of its own (to_logits).
void flash_model(ModelConfig& c) {
  c.position = "scaled_sinusoidal", c.norm = "scalenorm", c.final_norm = "layernorm", c.tie_weights = false;
  c.gau_token_shift = true, c.gau_rotary_dim = 32;
  if (c.mixer == "flash") c.chunk_size = 256;
}
// mamba_ssm's MixerModel: no position embedding, RMSNorm, no biases.
void mamba_model(ModelConfig& c) { c.position = "none", c.norm = "rmsnorm", c.bias = false; }

// An entry of the linear-attention family: one module (its row of
// recipe_of), fla's widths and fla's language model.
MixerSpec linear_family(const char* name, const char* paper) {
  return {.name = name,
          .family = "linear attention",
          .paper = paper,
          .has_ffn = true,
          .recurrent = true,
          .auto_form = RecurrenceForm::chunkwise,
          .make = make_linear,
          .sequence_flops = linear_recurrent_sequence_flops,
          .sequence_is_gemm = false,
          .validate = [](const ModelConfig& c) { linear_widths(c); },
          .width_multiple = linear_width_multiple,
          .recipe = fla_model};
}
}  // namespace

int64_t swiglu_hidden(int64_t n_embd, int64_t hidden_ratio) {
  return (n_embd * hidden_ratio * 2 / 3 + 255) / 256 * 256;
}

void check_config(const ModelConfig& c) {
  c.validate();
  if (const MixerSpec& m = mixer_spec(c.mixer); m.validate) m.validate(c);
}

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
  static const std::vector<MixerSpec> table{
      {.name = "attention",
       .family = "attention",
       .paper = "Vaswani et al. 2017; nanoGPT's GPT",
       .has_ffn = true,
       .recurrent = false,
       .auto_form = F::parallel,
       .make = make_attention,
       .sequence_flops = attention_sequence_flops,
       .sequence_is_gemm = true},
      {.name = "transformer++",
       .family = "attention",
       .paper = "Touvron et al. 2023 (LLaMA); the Mamba paper's baseline",
       .has_ffn = true,
       .recurrent = false,
       .auto_form = F::parallel,
       .make = make_attention,
       .sequence_flops = attention_sequence_flops,
       .sequence_is_gemm = true,
       .recipe = transformer_pp},
      linear_family("linear", "Katharopoulos et al. 2020"),
      linear_family("retnet", "Sun et al. 2023"),
      linear_family("gated_retention", "Sun et al. 2024 (YOCO)"),
      linear_family("gla", "Yang et al. 2023"),
      linear_family("deltanet", "Schlag et al. 2021; Yang et al. 2024"),
      linear_family("gated_deltanet", "Yang et al. 2024b"),
      {.name = "gau",
       .family = "gated attention unit",
       .paper = "Hua et al. 2022, §2",
       .has_ffn = false,
       .recurrent = false,
       .auto_form = F::parallel,
       .make = make_gau,
       .sequence_flops = gau_sequence_flops,
       .sequence_is_gemm = true,
       .validate = gau_validate,
       .recipe = flash_model},
      {.name = "flash",
       .family = "gated attention unit",
       .paper = "Hua et al. 2022, §3",
       .has_ffn = false,
       .recurrent = true,
       .auto_form = F::chunkwise,
       .make = make_gau,
       .sequence_flops = gau_sequence_flops,
       .sequence_is_gemm = true,
       .validate = gau_validate,
       .recipe = flash_model},
      {.name = "mamba",
       .family = "state space",
       .paper = "Gu & Dao 2023",
       .has_ffn = false,
       .recurrent = true,
       .auto_form = F::recurrent,
       .make = make_mamba,
       .sequence_flops = mamba_sequence_flops,
       .sequence_is_gemm = false,
       .recipe = mamba_model},
      {.name = "mamba2",
       .family = "state space",
       .paper = "Dao & Gu 2024",
       .has_ffn = false,
       .recurrent = true,
       .auto_form = F::chunkwise,
       .make = make_mamba2,
       .sequence_flops = mamba2_sequence_flops,
       .sequence_is_gemm = false,
       .validate = mamba2_heads,
       .width_multiple = mamba2_width_multiple,
       .recipe = mamba_model},
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

}  // namespace tapelm::nn
