// Hugging Face transformers' model folders, both ways:
//   export_hugging_face: a model and its tokenizer to a folder that
//     AutoModelForCausalLM / AutoTokenizer.from_pretrained load with no custom
//     code (config.json, model.safetensors, the tokenizer's files);
//   import_hugging_face: such a folder to a model and tokenizer (`train
//     --init-from`), for the classes below.
// One table of architectures (hugging_face.cpp) says, per tapelm mixer, its
// transformers class, the config fields both ways, the checks that the model
// has the class's shape, and where each tensor goes (GPT-2's Conv1D stores
// its weights transposed; Llama's q, k, v are rows of tapelm's fused c_attn).
//   attention      GPT2LMHeadModel   (exact GELU: activation_function "gelu")
//   transformer++  LlamaForCausalLM  (half-rotated RoPE, base 10000)
//   mamba          MambaForCausalLM
//   mamba2         Mamba2ForCausalLM
// Tokenizers: GPT-2's as vocab.json + merges.txt; tapelm's char, byte and BPE
// as a tokenizer.json of the tokenizers library (char: WordLevel over single
// characters; byte and BPE: byte-level BPE, BPE's chunking as a Split regex),
// and tapelm's own description in tokenizer_config.json, read back on import.
#pragma once
#include <memory>
#include <string>

#include "data/tokenizer.h"
#include "nn/model.h"

namespace tapelm::train {

// The model's transformers class (GPT2LMHeadModel, LlamaForCausalLM,
// MambaForCausalLM, Mamba2ForCausalLM); an Error naming the mixer and the
// classes there are when it has none, or the field that differs from the
// class's shape. GGUF's architectures are these classes' (train/gguf.h).
std::string hugging_face_class(const nn::ModelConfig& config);

void export_hugging_face(const nn::GPT& model, const data::Tokenizer& tokenizer, const std::string& out);

struct HuggingFaceModel {
  nn::ModelConfig config;
  std::unique_ptr<nn::GPT> model;
  std::unique_ptr<data::Tokenizer> tokenizer;
};

// An Error naming the file for a missing or truncated file, an unknown
// architecture, a missing, unexpected or wrongly shaped tensor, or a config
// tapelm's model cannot follow. The model is built as `train` builds a fresh
// one (its config with `dropout`, from Generator(seed): the dropout stream is
// the seed's), then takes the folder's weights.
HuggingFaceModel import_hugging_face(const std::string& dir, double dropout = 0.0, uint64_t seed = 0);

}  // namespace tapelm::train
