#include "nn/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "autograd/cuda/runtime.h"
#include "autograd/ops.h"

namespace tapelm::nn {

int64_t AttentionCache::bytes() const {
  if (!k.defined()) return 0;
  const int64_t B = k.size(0), cap = k.size(1);
  return length * B * ((k.numel() + v.numel()) / (B * cap) * (int64_t)dtype_size(k.dtype()) + 1);
}

void AttentionCache::append(const Tensor& new_k, const Tensor& new_v, const Tensor& new_pad) {
  const int64_t B = new_k.size(0), T = new_k.size(1);
  TAPELM_CHECK(!k.defined() || (k.size(0) == B && new_k.dtype() == k.dtype()),
               "AttentionCache: batch {} {} does not match the cache's {}", B, dtype_name(new_k.dtype()),
               k.defined() ? k.str_shape() : "");
  // Copies rows [0, n) of each batch entry of src ([B, src_cap, row]) into dst ([B, dst_cap, row]) at `at`.
  // Keys and values live on the model's device; the padding flags on the host.
  auto copy_rows = [&](const Tensor& src, Tensor& dst, int64_t n, int64_t at) {
    TAPELM_CHECK(src.device() == dst.device(), "AttentionCache: {} rows for a {} cache", device_name(src.device()),
                 device_name(dst.device()));
    const int64_t row = src.numel() / (B * src.size(1)) * (int64_t)dtype_size(src.dtype());
    for (int64_t b = 0; b < B; ++b) {
      char* to = (char*)dst.address() + (b * dst.size(1) + at) * row;
      const char* from = (const char*)src.address() + b * src.size(1) * row;
      if (dst.is_cuda())
        cuda::copy_on_device(to, from, n * row);
      else
        std::memcpy(to, from, n * row);
    }
  };
  if (!k.defined() || length + T > k.size(1)) {
    const int64_t cap = std::max<int64_t>({16, length + T, k.defined() ? 2 * k.size(1) : 0});
    auto grow = [&](const Tensor& old, const Tensor& like) {
      Shape s = like.shape();
      s[1] = cap;
      Tensor t = zeros(s, like.dtype(), like.device());
      if (old.defined()) copy_rows(old, t, length, 0);
      return t;
    };
    Tensor pad = full({B, cap}, 1, DType::b8);
    if (key_pad.defined()) copy_rows(key_pad, pad, length, 0);
    k = grow(k, new_k);
    v = grow(v, new_v);
    key_pad = pad;
  }
  copy_rows(new_k, k, T, length);
  copy_rows(new_v, v, T, length);
  copy_rows(new_pad, key_pad, T, length);
  length += T;
}

MultiHeadAttention::MultiHeadAttention(int64_t dim_, int64_t n_head_, bool bias, double dropout,
                                       std::shared_ptr<Rotary> rotary, Generator& gen, Generator* dropout_gen,
                                       double proj_std)
    : dim(dim_), n_head(n_head_), rotary_(std::move(rotary)) {
  TAPELM_CHECK(n_head > 0 && dim % n_head == 0, "MultiHeadAttention: n_embd {} is not divisible by n_head {}", dim,
               n_head);
  head_dim = dim / n_head;
  c_attn = register_module("c_attn", std::make_shared<Linear>(dim, 3 * dim, bias, gen));
  c_proj = register_module("c_proj", std::make_shared<Linear>(dim, dim, bias, gen, proj_std));
  attn_dropout = register_module("attn_dropout", std::make_shared<Dropout>(dropout, dropout_gen));
  resid_dropout = register_module("resid_dropout", std::make_shared<Dropout>(dropout, dropout_gen));
}

// The causal and key-padding mask of self-attention over the context's input
// alone: one per forward, not one per layer.
namespace {
const Tensor& self_attention_mask(const MixerContext& ctx, int64_t B, int64_t T, Device device) {
  Tensor& m = ctx.self_attention_mask;
  if (!m.defined() || m.device() != device || m.size(0) != B || m.size(2) != T)
    m = attention_mask(B, T, T, ctx.pad_mask.defined() ? ctx.pad_mask : zeros({B, T}, DType::b8), 0, device);
  return m;
}
}  // namespace

std::unique_ptr<MixerState> MultiHeadAttention::init_state(int64_t) const { return std::make_unique<AttentionCache>(); }

// Heads stay in the [B,T,H,hd] layout the projection gives (a free reshape):
// the fused attention op reads them in place; without rotary positions or a
// cache it takes the projection whole (attention_qkv), so on the GPU not even
// the split into q, k and v is copied. With attention dropout in
// training the probabilities must exist as a tensor, so that case runs the
// composed form (matmul, mask, softmax, dropout, matmul); both give the same
// numbers without dropout (tested).
Tensor MultiHeadAttention::forward(const Tensor& x, const MixerContext& ctx, MixerState* state) {
  TAPELM_CHECK(x.dim() == 3 && x.size(2) == dim, "MultiHeadAttention: expects [B,T,{}], got {}", dim, x.str_shape());
  const int64_t B = x.size(0), T = x.size(1);
  const double scale = 1.0 / std::sqrt((double)head_dim);
  const bool composed = attn_dropout->training() && attn_dropout->p > 0;
  if (!rotary_ && !state && !composed) {  // self-attention over this input alone: q, k, v read packed
    const Tensor y = attention_qkv(c_attn->forward(x), n_head, self_attention_mask(ctx, B, T, x.device()), scale);
    return resid_dropout->forward(c_proj->forward(reshape(y, {B, T, dim})));
  }
  std::vector<Tensor> qkv = split(c_attn->forward(x), {dim, dim, dim}, -1);
  auto heads = [&](const Tensor& t) { return reshape(t, {B, T, n_head, head_dim}); };
  Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);
  if (rotary_) {
    q = rotary_->apply(q, ctx.positions, 2);
    k = rotary_->apply(k, ctx.positions, 2);
  }
  Tensor mask;
  if (auto* cache = state_as<AttentionCache>(state, "attention")) {  // the whole cache buffer; unused slots masked
    const int64_t past = cache->length;
    cache->append(k, v, ctx.pad_mask.defined() ? ctx.pad_mask : zeros({B, T}, DType::b8));
    k = cache->k, v = cache->v;
    mask = attention_mask(B, T, k.size(1), cache->key_pad, past, x.device());
  } else
    mask = self_attention_mask(ctx, B, T, x.device());
  Tensor y = composed ? composed_attention(q, k, v, mask, scale) : scaled_dot_product_attention(q, k, v, mask, scale);
  return resid_dropout->forward(c_proj->forward(reshape(y, {B, T, dim})));
}

Tensor MultiHeadAttention::composed_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                              double scale) const {
  auto heads_first = [](const Tensor& t) { return permute(t, {0, 2, 1, 3}); };  // [B,H,T,hd]
  Tensor scores = mul_scalar(matmul(heads_first(q), heads_first(k), false, true), scale);
  Tensor att = attn_dropout->forward(softmax(masked_fill(scores, mask, -INFINITY)));
  return permute(matmul(att, heads_first(v)), {0, 2, 1, 3});
}

int64_t attention_sequence_flops(const ModelConfig& c, RecurrenceForm, int64_t b, int64_t s, std::string* formula) {
  *formula = "4·b·s²·d: QKᵀ and AV over the full s×s square (the causal mask does not skip work)";
  return 4 * b * s * s * c.n_embd;
}

}  // namespace tapelm::nn
