// Position encodings. All take explicit position ids [B, T] (int32), computed
// from the padding mask so that a left-padded sequence sees the same positions
// as the unpadded one (HF's convention): position = number of real tokens
// before this one, plus those already in a decoding state.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "nn/constant_tensor.h"
#include "nn/module.h"

namespace tapelm::nn {

// pad_mask: [B, T] bool, true at padding (may be undefined); offsets[b]: real
// tokens already consumed by sequence b (decoding), or empty for zeros.
Tensor position_ids(int64_t batch, int64_t T, const Tensor& pad_mask, const std::vector<int32_t>& offsets = {});

// "Attention is all you need" §3.5: PE(p, 2i) = sin(p / 10000^(2i/d)),
// PE(p, 2i+1) = cos(p / 10000^(2i/d)). Fixed: [n_pos, dim]. With
// `concatenated`, the sines fill the first half and the cosines the second
// (FLASH-pytorch's ScaledSinuEmbedding: cat(sin, cos)); dim must then be even.
Tensor sinusoidal_table(int64_t n_pos, int64_t dim, DType dtype, bool concatenated = false);

// An absolute position embedding, added to the token embedding (the model's
// "transformer.wpe"): positions [B,T] int32 -> [B,T,dim], in the dtype and
// on the device of `like` (the token embeddings it is added to).
class PositionEmbedding : public Module {
 public:
  virtual Tensor forward(const Tensor& positions, const Tensor& like) const = 0;
};

// GPT-2's learned table, `weight` [n_pos, dim], N(0, 0.02²).
class LearnedPositionEmbedding : public PositionEmbedding {
 public:
  LearnedPositionEmbedding(int64_t n_pos, int64_t dim, Generator& gen);
  Tensor forward(const Tensor& positions, const Tensor& like) const override;
  Tensor weight;
};

// The fixed sinusoid table above (interleaved sin, cos); no parameter.
class SinusoidalPositionEmbedding : public PositionEmbedding {
 public:
  SinusoidalPositionEmbedding(int64_t n_pos, int64_t dim);
  Tensor forward(const Tensor& positions, const Tensor& like) const override;

 private:
  ConstantTensor table_;  // [n_pos, dim]
};

// FLASH-pytorch's ScaledSinuEmbedding (the FLASH paper's absolute position):
// the concatenated sinusoid above times one learned scalar `scale`.
// FLASH-pytorch starts scale at 1 beside a token embedding of std 1; the
// model starts it at its token embedding's std (GPT-2's 0.02), which keeps
// that ratio (at 1 the positions drown the tokens: a FLASH model stayed at
// the unigram loss, 3.34 after 300 steps against 2.25 with learned positions).
class ScaledSinusoidalEmbedding : public PositionEmbedding {
 public:
  ScaledSinusoidalEmbedding(int64_t n_pos, int64_t dim, double scale_init);
  Tensor forward(const Tensor& positions, const Tensor& like) const override;
  Tensor scale;

 private:
  ConstantTensor table_;  // [n_pos, dim]
};

// The absolute embedding of a config's `position`: learned, sinusoidal or
// scaled_sinusoidal (its scale starting at token_std); null for rope (applied
// inside the mixers) and none.
std::shared_ptr<PositionEmbedding> make_position_embedding(const std::string& kind, int64_t n_pos, int64_t dim,
                                                           double token_std, Generator& gen);

// Rotary position embedding (Su et al. 2021, RoFormer):
// x' = x·cos(pθ) + rotate(x)·sin(pθ), θ_i = base^(−2i/r) over the first r =
// rotary_dim features (the rest pass unchanged: GPT-J's partial rotary), in
// one of two layouts of the rotated pairs:
//   half (GPT-NeoX / LLaMA): pairs (i, i + r/2), rotate([x1, x2]) = [−x2, x1];
//   interleaved (RoFormer, rotary_embedding_torch): pairs (2i, 2i+1),
//     rotate(…, x_2i, x_2i+1, …) = (…, −x_2i+1, x_2i, …).
class Rotary {
 public:
  enum class Layout { half, interleaved };
  Rotary(int64_t rotary_dim, int64_t max_pos, double base = 10000.0, Layout layout = Layout::half);
  // x is [B,H,T,hd] (head_axis 1) or [B,T,H,hd] (head_axis 2), hd ≥ rotary_dim; positions [B,T].
  Tensor apply(const Tensor& x, const Tensor& positions, int64_t head_axis = 1) const;
  int64_t rotary_dim, max_pos;  // positions ≥ max_pos are computed when asked for
  double base;
  Layout layout;

 private:
  // cos and sin of p·θ_i for n positions, rows of rotary_dim (each θ_i at both features of its pair).
  void fill_angles(double* cos, double* sin, const int32_t* positions, int64_t n) const;
  ConstantTensor cos_, sin_;  // [max_pos, rotary_dim]
};

}  // namespace tapelm::nn
