// The mixer table: every token mixer the model knows, one entry each, in the
// order --help and `compare` list them. The model's factory, the config's
// checks, the FLOP report and `compare`'s width rule all read it, so a new
// mixer is one file (its module and FLOP formula) plus one entry here; see
// CONTRIBUTING.md.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "nn/config.h"
#include "nn/mixer.h"
#include "nn/position.h"

namespace tapelm::nn {

// What a factory gets to build one layer's mixer.
struct MixerArgs {
  const ModelConfig& config;
  RecurrenceForm form;             // its training form, resolved (training_form)
  std::shared_ptr<Rotary> rotary;  // the model's RoPE table (position "rope"), else null
  Generator& gen;                  // initialisation
  Generator* dropout_gen;          // dropout masks
  double proj_std;                 // init std of residual output projections (GPT-2: 0.02/√(2·n_layer))
};

struct MixerSpec {
  std::string name;
  std::string family;  // attention | linear attention | state space | gated attention unit
  std::string paper;   // where its equations come from
  bool has_ffn;        // false: its block replaces attention and the FFN (GAU, FLASH, Mamba)
  // True: --recurrent-form picks its training form, and decoding carries a state
  // of bounded size. False: one quadratic form, decoding caches keys and values.
  bool recurrent;
  RecurrenceForm auto_form;  // the form of --recurrent-form auto: the fastest on a CPU
  std::function<std::shared_ptr<TokenMixer>(const MixerArgs&)> make;
  // Forward FLOPs of the mixer's sequence term (its work beyond the
  // projections) for b sequences of length s in the training form `form`,
  // and the formula in words.
  std::function<int64_t(const ModelConfig&, RecurrenceForm form, int64_t b, int64_t s, std::string* formula)>
      sequence_flops;
  bool sequence_is_gemm;  // the sequence term runs as GEMMs (it counts with the matmul FLOPs)
  // Checks that join config fields, for this mixer (throws Error); may be empty.
  std::function<void(const ModelConfig&)> validate;
  // n_embd must be a multiple of this (besides 2·n_head), for `compare`'s widths; may be empty (1).
  std::function<int64_t(const ModelConfig&)> width_multiple;
  // Its reference language model: sets the fields where that model differs
  // from the config's defaults (nanoGPT's GPT); may be empty. See with_recipe.
  std::function<void(ModelConfig&)> recipe;
};

const std::vector<MixerSpec>& mixer_table();
// The entry of `name`; an Error listing the mixers if there is none.
const MixerSpec& mixer_spec(const std::string& name);
std::string mixer_names();  // "attention, linear, ..."

// Every check of c: its own (ModelConfig::validate), that its mixer is in the
// table, and the mixer's checks that join fields. Throws Error naming the field.
void check_config(const ModelConfig& c);

// c with its mixer's recipe applied to every field not in `given` (config keys
// the user set: flags or a --config file); the widths it reads are c's.
ModelConfig with_recipe(ModelConfig c, const std::vector<std::string>& given);

// The feed-forward width of a SwiGLU block as fla and LLaMA size it: ⅔ of
// hidden_ratio·d (the parameters of a GELU block that wide), rounded up to a
// multiple of 256 (fla/modules/mlp.py's GatedMLP).
int64_t swiglu_hidden(int64_t n_embd, int64_t hidden_ratio = 4);

// The form a recurrent mixer trains in: config.recurrent_form, with auto
// resolved through the table. The model resolves it once and hands it to the
// mixer's factory (MixerArgs::form) and FLOP formula.
RecurrenceForm training_form(const ModelConfig& c);

}  // namespace tapelm::nn
