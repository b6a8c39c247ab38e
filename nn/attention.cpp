#include "nn/attention.h"

#include <cmath>

#include "autograd/ops.h"

namespace tapelm::nn {

int64_t AttentionCache::bytes() const {
  if (!k.defined()) return 0;
  return (k.numel() + v.numel()) * (int64_t)dtype_size(k.dtype()) + key_pad.numel();
}

void AttentionCache::extend(Tensor& new_k, Tensor& new_v, Tensor& new_pad, int64_t time_axis) {
  if (k.defined()) {
    new_k = concat({k, new_k}, time_axis);
    new_v = concat({v, new_v}, time_axis);
    new_pad = concat({key_pad, new_pad}, 1);
  }
  k = new_k.detach();
  v = new_v.detach();
  key_pad = new_pad;
}

MultiHeadAttention::MultiHeadAttention(int64_t dim_, int64_t n_head_, bool bias, double dropout,
                                       std::shared_ptr<Rotary> rotary, Generator& gen,
                                       Generator* dropout_gen, double proj_std)
    : dim(dim_), n_head(n_head_), rotary_(std::move(rotary)) {
  TAPELM_CHECK(n_head > 0 && dim % n_head == 0,
               "MultiHeadAttention: n_embd {} is not divisible by n_head {}", dim, n_head);
  head_dim = dim / n_head;
  c_attn = register_module("c_attn", std::make_shared<Linear>(dim, 3 * dim, bias, gen));
  c_proj = register_module("c_proj", std::make_shared<Linear>(dim, dim, bias, gen, proj_std));
  attn_dropout = register_module("attn_dropout", std::make_shared<Dropout>(dropout, dropout_gen));
  resid_dropout = register_module("resid_dropout", std::make_shared<Dropout>(dropout, dropout_gen));
}

std::unique_ptr<MixerState> MultiHeadAttention::init_state(int64_t) const {
  return std::make_unique<AttentionCache>();
}

Tensor attention_mask(int64_t B, int64_t Tq, int64_t Tk, const Tensor& key_pad) {
  Tensor m = Tensor::empty({B, 1, Tq, Tk}, DType::b8);
  uint8_t* pm = m.data<uint8_t>();
  const uint8_t* kp = key_pad.defined() ? key_pad.data<uint8_t>() : nullptr;
  const int64_t past = Tk - Tq;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t j = 0; j < Tk; ++j)
        pm[(b * Tq + i) * Tk + j] = (j > past + i) || (kp && kp[b * Tk + j]);
  return m;
}

// Heads stay in the [B,T,H,hd] layout the projection gives (a free reshape):
// the fused attention op reads them in place. With attention dropout in
// training the probabilities must exist as a tensor, so that case runs the
// composed form (matmul, mask, softmax, dropout, matmul); both give the same
// numbers without dropout (tested).
Tensor MultiHeadAttention::forward(const Tensor& x, const MixerContext& ctx, MixerState* state) {
  TAPELM_CHECK(x.dim() == 3 && x.size(2) == dim, "MultiHeadAttention: expects [B,T,{}], got {}",
               dim, x.str_shape());
  const int64_t B = x.size(0), T = x.size(1);
  std::vector<Tensor> qkv = split(c_attn->forward(x), {dim, dim, dim}, -1);
  auto heads = [&](const Tensor& t) { return reshape(t, {B, T, n_head, head_dim}); };
  Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);
  if (rotary_) {
    q = rotary_->apply(q, ctx.positions, 2);
    k = rotary_->apply(k, ctx.positions, 2);
  }
  Tensor pad = ctx.pad_mask.defined() ? ctx.pad_mask : zeros({B, T}, DType::b8);
  if (state) {
    auto* cache = dynamic_cast<AttentionCache*>(state);
    TAPELM_CHECK(cache, "MultiHeadAttention: the decoding state is not an AttentionCache");
    cache->extend(k, v, pad, 1);
  }
  const int64_t Tk = k.size(1);
  const Tensor mask = attention_mask(B, T, Tk, pad);
  const double scale = 1.0 / std::sqrt((double)head_dim);
  Tensor y = attn_dropout->training() && attn_dropout->p > 0 ? composed_attention(q, k, v, mask, scale)
                                                              : scaled_dot_product_attention(q, k, v, mask, scale);
  return resid_dropout->forward(c_proj->forward(reshape(y, {B, T, dim})));
}

Tensor MultiHeadAttention::composed_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                              double scale) const {
  auto heads_first = [](const Tensor& t) { return permute(t, {0, 2, 1, 3}); };  // [B,H,T,hd]
  Tensor scores = mul_scalar(matmul(heads_first(q), heads_first(k), false, true), scale);
  Tensor att = attn_dropout->forward(softmax(masked_fill(scores, mask, -INFINITY)));
  return permute(matmul(att, heads_first(v)), {0, 2, 1, 3});
}

}  // namespace tapelm::nn
