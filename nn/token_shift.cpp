#include "nn/token_shift.h"

#include <vector>

#include "autograd/ops.h"

namespace tapelm::nn {

Tensor shift_tokens(const Tensor& x, const Tensor& pad, Tensor* last) {
  TAPELM_CHECK(x.dim() == 3, "shift_tokens: expects [B,T,d], got {}", x.str_shape());
  const int64_t B = x.size(0), T = x.size(1), d = x.size(2), h = (d + 1) / 2;
  TAPELM_CHECK(!pad.defined() || (pad.dtype() == DType::b8 && pad.shape() == (Shape{B, T})),
               "shift_tokens: pad must be bool [{},{}], got {}", B, T, pad.str_shape());
  Tensor before = last && last->defined() ? *last : zeros({B, 1, h}, x.dtype(), x.device());
  TAPELM_CHECK(before.numel() == B * h, "shift_tokens: the carried token holds {} values, expected [{},{}]",
               before.numel(), B, h);
  // Source rows per sequence: [before, x_0, …, x_{T−1}] (first halves); each
  // output row reads the last real one before it (row 0 when there is none).
  Tensor source = reshape(concat({reshape(before, {B, 1, h}), slice(x, 2, 0, h)}, 1), {B * (T + 1), h});
  Tensor ids = Tensor::empty({B, T}, DType::i32);
  std::vector<int32_t> final_row(B);
  const uint8_t* pm = pad.defined() ? pad.data<uint8_t>() : nullptr;
  for (int64_t b = 0; b < B; ++b) {
    int32_t row = (int32_t)(b * (T + 1));  // the carried token
    for (int64_t t = 0; t < T; ++t) {
      ids.data<int32_t>()[b * T + t] = row;
      if (!(pm && pm[b * T + t])) row = (int32_t)(b * (T + 1) + t + 1);
    }
    final_row[b] = row;
  }
  if (last) *last = embedding(source, from_ints(final_row, {B})).detach().clone();
  Tensor shifted = embedding(source, ids);  // [B,T,h]
  return h == d ? shifted : concat({shifted, slice(x, 2, h, d)}, 2);
}

}  // namespace tapelm::nn
