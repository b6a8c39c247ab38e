// GGUF, llama.cpp's model file (version 3, ggml's docs/gguf.md): the magic
// "GGUF", the version, the tensor and key counts; typed key-value metadata
// (the architecture's hyper-parameters, the tokenizer); each tensor's name,
// dimensions (innermost first), type and offset; then the data, every tensor
// aligned to 32 bytes.
//
// export_gguf writes a model for llama.cpp's architectures gpt2, llama, mamba
// and mamba2 (the transformers classes of train/hugging_face.h), under
// llama.cpp's tensor names and in its layouts, as its converter
// (convert_hf_to_gguf.py) writes them: Llama's q and k rows permuted to
// ggml's interleaved RoPE pairs, Mamba's A_log as A = −exp(A_log), the
// convolutions as [channels, kernel]. Weights are f32, or f16 / bf16 for the
// large matrices (norms, biases and the SSM's small tensors stay f32, as
// llama.cpp's converter keeps them). The tokenizer goes into the metadata as
// byte-level BPE (tokenizer.ggml.model "gpt2"): GPT-2's and tapelm's BPE with
// their merges, byte and char tokens as their bytes' characters.
#pragma once
#include <string>

#include "data/tokenizer.h"
#include "nn/model.h"

namespace tapelm::train {

// type: "f32", "f16" or "bf16". Written to path.tmp, then renamed.
void export_gguf(const nn::GPT& model, const data::Tokenizer& tokenizer, const std::string& path,
                 const std::string& type = "f32");

}  // namespace tapelm::train
