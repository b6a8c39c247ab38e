// Position encodings. All take explicit position ids [B, T] (int32), computed
// from the padding mask so that a left-padded sequence sees the same positions
// as the unpadded one (HF's convention): position = number of real tokens
// before this one, plus those already in a decoding state.
#pragma once
#include <vector>

#include "autograd/tensor.h"
#include "nn/constant_tensor.h"

namespace tapelm::nn {

// pad_mask: [B, T] bool, true at padding (may be undefined); offsets[b]: real
// tokens already consumed by sequence b (decoding), or empty for zeros.
Tensor position_ids(int64_t batch, int64_t T, const Tensor& pad_mask, const std::vector<int32_t>& offsets = {});

// "Attention is all you need" §3.5: PE(p, 2i) = sin(p / 10000^(2i/d)),
// PE(p, 2i+1) = cos(p / 10000^(2i/d)). Fixed: [n_pos, dim].
Tensor sinusoidal_table(int64_t n_pos, int64_t dim, DType dtype);

// Rotary position embedding (Su et al. 2021, RoFormer), rotate-half layout as
// in GPT-NeoX / LLaMA: x' = x·cos(pθ) + rotate_half(x)·sin(pθ), θ_i = base^(−2i/d),
// rotate_half([x1, x2]) = [−x2, x1].
class Rotary {
 public:
  Rotary(int64_t head_dim, int64_t max_pos, double base = 10000.0);
  // x: [B, H, T, head_dim], positions: [B, T] int32.
  // x is [B,H,T,hd] (head_axis 1) or [B,T,H,hd] (head_axis 2); positions [B,T].
  Tensor apply(const Tensor& x, const Tensor& positions, int64_t head_axis = 1) const;
  int64_t head_dim, max_pos;  // positions ≥ max_pos are computed when asked for
  double base;

 private:
  // cos and sin of p·θ_i for n positions, rows of head_dim (both halves alike).
  void fill_angles(double* cos, double* sin, const int32_t* positions, int64_t n) const;
  ConstantTensor cos_, sin_;  // [max_pos, head_dim]
};

}  // namespace tapelm::nn
