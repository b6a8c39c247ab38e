#include "nn/position.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/ops.h"

namespace tapelm::nn {

Tensor position_ids(int64_t B, int64_t T, const Tensor& pad_mask, const std::vector<int32_t>& offsets) {
  if (pad_mask.defined())
    TAPELM_CHECK(pad_mask.dtype() == DType::b8 && pad_mask.shape() == (Shape{B, T}),
                 "position_ids: pad_mask must be bool [{},{}], got {} {}", B, T, dtype_name(pad_mask.dtype()),
                 pad_mask.str_shape());
  Tensor pos = Tensor::empty({B, T}, DType::i32);
  int32_t* p = pos.data<int32_t>();
  const uint8_t* pm = pad_mask.defined() ? pad_mask.data<uint8_t>() : nullptr;
  for (int64_t b = 0; b < B; ++b) {
    int32_t seen = offsets.empty() ? 0 : offsets[b];
    for (int64_t t = 0; t < T; ++t) {
      bool pad = pm && pm[b * T + t];
      p[b * T + t] = pad ? std::max(seen - 1, 0) : seen;
      if (!pad) ++seen;
    }
  }
  return pos;
}

Tensor sinusoidal_table(int64_t n_pos, int64_t dim, DType dtype, bool concatenated) {
  TAPELM_CHECK(!concatenated || dim % 2 == 0, "sinusoidal_table: concatenated sin and cos need an even width, got {}",
               dim);
  Tensor t = Tensor::empty({n_pos, dim}, DType::f64);
  double* p = t.data<double>();
  for (int64_t pos = 0; pos < n_pos; ++pos)
    for (int64_t i = 0; i < dim; i += 2) {
      double angle = pos / std::pow(10000.0, (double)i / dim);
      const int64_t sin_at = concatenated ? i / 2 : i, cos_at = concatenated ? dim / 2 + i / 2 : i + 1;
      p[pos * dim + sin_at] = std::sin(angle);
      if (cos_at < dim) p[pos * dim + cos_at] = std::cos(angle);
    }
  return t.to(dtype);
}

LearnedPositionEmbedding::LearnedPositionEmbedding(int64_t n_pos, int64_t dim, Generator& gen) {
  weight = register_parameter("weight", randn({n_pos, dim}, gen, DType::f32, 0.0, 0.02));
}

Tensor LearnedPositionEmbedding::forward(const Tensor& positions, const Tensor&) const {
  return embedding(weight, positions);
}

SinusoidalPositionEmbedding::SinusoidalPositionEmbedding(int64_t n_pos, int64_t dim)
    : table_(sinusoidal_table(n_pos, dim, DType::f64)) {}

Tensor SinusoidalPositionEmbedding::forward(const Tensor& positions, const Tensor& like) const {
  return embedding(table_.like(like), positions);
}

std::shared_ptr<PositionEmbedding> make_position_embedding(const std::string& kind, int64_t n_pos, int64_t dim,
                                                           double token_std, Generator& gen) {
  if (kind == "learned") return std::make_shared<LearnedPositionEmbedding>(n_pos, dim, gen);
  if (kind == "sinusoidal") return std::make_shared<SinusoidalPositionEmbedding>(n_pos, dim);
  if (kind == "scaled_sinusoidal") return std::make_shared<ScaledSinusoidalEmbedding>(n_pos, dim, token_std);
  return nullptr;  // rope, none
}

ScaledSinusoidalEmbedding::ScaledSinusoidalEmbedding(int64_t n_pos, int64_t dim, double scale_init)
    : table_(sinusoidal_table(n_pos, dim, DType::f64, true)) {
  scale = register_parameter("scale", full({1}, scale_init));
}

Tensor ScaledSinusoidalEmbedding::forward(const Tensor& positions, const Tensor& like) const {
  return mul(embedding(table_.like(like), positions), scale);
}

Rotary::Rotary(int64_t rd, int64_t mp, double b, Layout l) : rotary_dim(rd), max_pos(mp), base(b), layout(l) {
  TAPELM_CHECK(rd % 2 == 0 && rd > 0, "Rotary: the rotated width {} must be even and positive", rd);
  Tensor cos = Tensor::empty({mp, rd}, DType::f64), sin = Tensor::empty({mp, rd}, DType::f64);
  std::vector<int32_t> all(mp);
  for (int64_t q = 0; q < mp; ++q) all[q] = (int32_t)q;
  fill_angles(cos.data<double>(), sin.data<double>(), all.data(), mp);
  cos_ = ConstantTensor(cos);
  sin_ = ConstantTensor(sin);
}

void Rotary::fill_angles(double* cos, double* sin, const int32_t* positions, int64_t n) const {
  const int64_t half = rotary_dim / 2;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < half; ++i) {
      const double theta = positions[r] * std::pow(base, -2.0 * i / rotary_dim);
      const int64_t a = layout == Layout::half ? i : 2 * i, b = layout == Layout::half ? i + half : 2 * i + 1;
      for (int64_t j : {a, b}) {
        cos[r * rotary_dim + j] = std::cos(theta);
        sin[r * rotary_dim + j] = std::sin(theta);
      }
    }
}

Tensor Rotary::apply(const Tensor& x, const Tensor& positions, int64_t head_axis) const {
  TAPELM_CHECK(x.dim() == 4 && x.size(-1) >= rotary_dim && (head_axis == 1 || head_axis == 2),
               "Rotary: expects [B,H,T,hd] (head_axis 1) or [B,T,H,hd] (head_axis 2) with hd >= {}, got {}", rotary_dim,
               x.str_shape());
  const int64_t hd = x.size(-1), r = rotary_dim;
  if (hd > r)  // partial rotary: the features past rotary_dim pass unchanged
    return concat({apply(slice(x, -1, 0, r), positions, head_axis), slice(x, -1, r, hd)}, -1);
  // [B, T, r] -> [B, 1, T, r] or [B, T, 1, r], broadcast over heads.
  const int32_t* p = positions.data<int32_t>();
  Tensor cos, sin;  // [B, T, r]
  if (std::all_of(p, p + positions.numel(), [&](int32_t q) { return q < max_pos; })) {
    cos = embedding(cos_.like(x), positions), sin = embedding(sin_.like(x), positions);
  } else {  // past the table (a recurrent model decoding beyond its context): these rows only
    cos = Tensor::empty({positions.numel(), r}, DType::f64), sin = Tensor::empty(cos.shape(), DType::f64);
    fill_angles(cos.data<double>(), sin.data<double>(), p, positions.numel());
    cos = reshape(cos.to(x.dtype()), {positions.size(0), positions.size(1), r});
    sin = reshape(sin.to(x.dtype()), {positions.size(0), positions.size(1), r});
  }
  cos = unsqueeze(cos, head_axis), sin = unsqueeze(sin, head_axis);
  Tensor rotated;
  if (layout == Layout::half) {
    Tensor x1 = slice(x, -1, 0, r / 2), x2 = slice(x, -1, r / 2, r);
    rotated = concat({neg(x2), x1}, -1);
  } else {  // pairs (2i, 2i+1): view as [..., r/2, 2]
    Shape pairs = x.shape();
    pairs.back() = r / 2;
    pairs.push_back(2);
    Tensor xp = reshape(x, pairs);
    rotated = reshape(concat({neg(slice(xp, -1, 1, 2)), slice(xp, -1, 0, 1)}, -1), x.shape());
  }
  return add(mul(x, cos), mul(rotated, sin));
}

}  // namespace tapelm::nn
