#include "nn/mamba2.h"

#include <cmath>

namespace tapelm::nn {

Mamba2::Mamba2(const ModelConfig& c, RecurrenceForm form, Generator& gen, double proj_std)
    : dim(c.n_embd),
      d_inner(2 * c.n_embd),
      d_state(c.d_state),
      d_conv(c.d_conv),
      head_dim(c.ssm_headdim),
      n_head(2 * c.n_embd / c.ssm_headdim),
      conv_channels(2 * c.n_embd + 2 * c.d_state),
      form(form),
      chunk(c.chunk_size) {
  TAPELM_CHECK(d_inner % head_dim == 0, "mamba2: d_inner {} is not divisible by ssm_headdim {}", d_inner, head_dim);
  // in_proj gives z, then the conv's channels (x, B, C), then Δ per head.
  in_proj = register_module("in_proj", std::make_shared<Linear>(dim, 2 * d_inner + 2 * d_state + n_head, false, gen));
  conv1d = register_module("conv1d", std::make_shared<ShortConvolution>(conv_channels, d_conv, /*bias=*/true, gen));
  dt_bias = register_parameter("dt_bias", dt_bias_init(n_head, gen), false);
  A_log = register_parameter("A_log", log(uniform({n_head}, gen, 1.0, 16.0)).detach(), false);
  D = register_parameter("D", ones({n_head}), false);
  norm = register_module("norm", std::make_shared<RMSNorm>(d_inner, c.norm_eps));
  out_proj = register_module("out_proj", std::make_shared<Linear>(d_inner, dim, false, gen, proj_std));
}

std::unique_ptr<MixerState> Mamba2::init_state(int64_t) const { return std::make_unique<MambaState>(); }

Tensor Mamba2::forward(const Tensor& x, const MixerContext& ctx, MixerState* state) {
  TAPELM_CHECK(x.dim() == 3 && x.size(2) == dim, "mamba2: expects [B,T,{}], got {}", dim, x.str_shape());
  const int64_t B = x.size(0), T = x.size(1);
  MambaState* st = state_as<MambaState>(state, "mamba2");
  Tensor pad = ctx.pad_mask.defined() ? reshape(ctx.pad_mask, {B, T, 1}) : Tensor();
  auto unpad = [&](const Tensor& t) { return pad.defined() ? masked_fill(t, pad, 0.0) : t; };
  auto parts = split(in_proj->forward(x), {d_inner, conv_channels, n_head}, -1);
  const Tensor &z = parts[0], &conv_in = parts[1], &dt_raw = parts[2];
  Tensor u = silu(conv1d->forward(unpad(conv_in), st ? &st->conv : nullptr));  // padding: zero conv input
  const RecurrenceForm run_form = st && T == 1 ? RecurrenceForm::recurrent : form;
  auto xbc = split(u, {d_inner, d_state, d_state}, -1);
  Tensor delta = unpad(softplus(add(dt_raw, dt_bias)));  // [B,T,H]
  Tensor A = neg(exp(A_log));                            // [H]
  auto shared = [&](const Tensor& t) { return expand(unsqueeze(t, 1), {B, n_head, T, d_state}); };
  Tensor xh = permute(reshape(xbc[0], {B, T, n_head, head_dim}), {0, 2, 1, 3});  // [B,H,T,P]
  Tensor dt_h = unsqueeze(permute(delta, {0, 2, 1}), -1);                        // [B,H,T,1]
  Tensor log_decay = mul(dt_h, reshape(A, {1, n_head, 1, 1}));
  Tensor h = gated_recurrence(shared(xbc[2]), shared(xbc[1]), mul(xh, dt_h), log_decay, run_form, chunk,
                              st ? &st->S : nullptr);
  h = add(h, mul(xh, reshape(D, {1, n_head, 1, 1})));
  Tensor y = reshape(permute(h, {0, 2, 1, 3}), {B, T, d_inner});
  y = norm->forward(mul(y, silu(z)));  // gated RMSNorm (norm after the gate)
  return out_proj->forward(y);
}

int64_t mamba2_sequence_flops(const ModelConfig& c, RecurrenceForm form, int64_t b, int64_t s, std::string* f) {
  const int64_t Di = 2 * c.n_embd;
  return gated_recurrence_flops(b, s, Di / c.ssm_headdim, c.d_state, c.ssm_headdim, form, c.chunk_size, f);
}

}  // namespace tapelm::nn
