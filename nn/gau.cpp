#include "nn/gau.h"

#include <cmath>

#include "autograd/ops.h"

namespace tapelm::nn {

namespace {
// Registers qk_offset_scale.{gamma,beta} under a child named as in FLASH-pytorch.
struct OffsetScale : Module {
  Tensor gamma, beta;
  OffsetScale(int64_t heads, int64_t dim, Generator& gen) {
    gamma = register_parameter("gamma", randn({heads, dim}, gen, DType::f32, 0.0, 0.02));
    beta = register_parameter("beta", zeros({heads, dim}));
  }
};
}  // namespace

GatedAttentionUnit::GatedAttentionUnit(const ModelConfig& c, Generator& gen, double proj_std)
    : dim(c.n_embd), expansion(2 * c.n_embd), qk_dim(c.gau_qk_dim), n(c.block_size) {
  to_hidden = register_module("to_hidden", std::make_shared<Linear>(dim, 2 * expansion, true, gen));
  to_qk = register_module("to_qk", std::make_shared<Linear>(dim, qk_dim, true, gen));
  auto os = register_module("qk_offset_scale", std::make_shared<OffsetScale>(2, qk_dim, gen));
  gamma = os->gamma;
  beta = os->beta;
  to_out = register_module("to_out", std::make_shared<Linear>(expansion, dim, true, gen, proj_std));
}

std::unique_ptr<MixerState> GatedAttentionUnit::init_state(int64_t) const { return std::make_unique<AttentionCache>(); }

Tensor GatedAttentionUnit::forward(const Tensor& x, const MixerContext& ctx, MixerState* state) {
  TAPELM_CHECK(x.dim() == 3 && x.size(2) == dim, "gau: expects [B,T,{}], got {}", dim, x.str_shape());
  const int64_t B = x.size(0), T = x.size(1);
  std::vector<Tensor> uv = chunk(silu(to_hidden->forward(x)), 2, -1);
  Tensor z = silu(to_qk->forward(x));  // [B,T,s]
  auto row = [&](const Tensor& p, int64_t i) { return reshape(slice(p, 0, i, i + 1), {qk_dim}); };
  Tensor q = add(mul(z, row(gamma, 0)), row(beta, 0));
  Tensor k = add(mul(z, row(gamma, 1)), row(beta, 1));
  Tensor v = uv[1];
  Tensor pad = ctx.pad_mask.defined() ? ctx.pad_mask : zeros({B, T}, DType::b8);
  if (state) {
    auto* cache = dynamic_cast<AttentionCache*>(state);
    TAPELM_CHECK(cache, "gau: the decoding state is not an AttentionCache");
    if (cache->k.defined()) {
      k = concat({cache->k, k}, 1);
      v = concat({cache->v, v}, 1);
      pad = concat({cache->key_pad, pad}, 1);
    }
    cache->k = k.detach();
    cache->v = v.detach();
    cache->key_pad = pad;
  }
  const int64_t Tk = k.size(1);
  Tensor scores = mul_scalar(matmul(q, k, false, true), 1.0 / std::sqrt((double)qk_dim));  // [B,T,Tk]
  Tensor a = mul_scalar(square(relu(scores)), 1.0 / (double)n);
  a = masked_fill(a, reshape(attention_mask(B, T, Tk, pad), {B, T, Tk}), 0.0);
  return to_out->forward(mul(uv[0], matmul(a, v)));
}

}  // namespace tapelm::nn
