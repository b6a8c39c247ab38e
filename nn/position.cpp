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

Tensor sinusoidal_table(int64_t n_pos, int64_t dim, DType dtype) {
  Tensor t = Tensor::empty({n_pos, dim}, DType::f64);
  double* p = t.data<double>();
  for (int64_t pos = 0; pos < n_pos; ++pos)
    for (int64_t i = 0; i < dim; i += 2) {
      double angle = pos / std::pow(10000.0, (double)i / dim);
      p[pos * dim + i] = std::sin(angle);
      if (i + 1 < dim) p[pos * dim + i + 1] = std::cos(angle);
    }
  return t.to(dtype);
}

Rotary::Rotary(int64_t hd, int64_t mp, double b) : head_dim(hd), max_pos(mp), base(b) {
  TAPELM_CHECK(hd % 2 == 0, "Rotary: head dimension {} must be even", hd);
  Tensor cos = Tensor::empty({mp, hd}, DType::f64), sin = Tensor::empty({mp, hd}, DType::f64);
  std::vector<int32_t> all(mp);
  for (int64_t q = 0; q < mp; ++q) all[q] = (int32_t)q;
  fill_angles(cos.data<double>(), sin.data<double>(), all.data(), mp);
  cos_ = ConstantTensor(cos);
  sin_ = ConstantTensor(sin);
}

void Rotary::fill_angles(double* cos, double* sin, const int32_t* positions, int64_t n) const {
  const int64_t half = head_dim / 2;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < half; ++i) {
      const double theta = positions[r] * std::pow(base, -2.0 * i / head_dim);
      for (int64_t j : {i, i + half}) {
        cos[r * head_dim + j] = std::cos(theta);
        sin[r * head_dim + j] = std::sin(theta);
      }
    }
}

Tensor Rotary::apply(const Tensor& x, const Tensor& positions, int64_t head_axis) const {
  TAPELM_CHECK(x.dim() == 4 && x.size(-1) == head_dim && (head_axis == 1 || head_axis == 2),
               "Rotary: expects [B,H,T,{0}] (head_axis 1) or [B,T,H,{0}] (head_axis 2), got {1}", head_dim,
               x.str_shape());
  // [B, T, hd] -> [B, 1, T, hd] or [B, T, 1, hd], broadcast over heads.
  const int32_t* p = positions.data<int32_t>();
  Tensor cos, sin;  // [B, T, hd]
  if (std::all_of(p, p + positions.numel(), [&](int32_t q) { return q < max_pos; })) {
    cos = embedding(cos_.as(x.dtype()), positions), sin = embedding(sin_.as(x.dtype()), positions);
  } else {  // past the table (a recurrent model decoding beyond its context): these rows only
    cos = Tensor::empty({positions.numel(), head_dim}, DType::f64), sin = Tensor::empty(cos.shape(), DType::f64);
    fill_angles(cos.data<double>(), sin.data<double>(), p, positions.numel());
    cos = reshape(cos.to(x.dtype()), {positions.size(0), positions.size(1), head_dim});
    sin = reshape(sin.to(x.dtype()), {positions.size(0), positions.size(1), head_dim});
  }
  cos = unsqueeze(cos, head_axis), sin = unsqueeze(sin, head_axis);
  const int64_t half = head_dim / 2;
  Tensor x1 = slice(x, -1, 0, half), x2 = slice(x, -1, half, head_dim);
  Tensor rotated = concat({neg(x2), x1}, -1);
  return add(mul(x, cos), mul(rotated, sin));
}

}  // namespace tapelm::nn
