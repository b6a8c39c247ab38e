#include "nn/mamba.h"

#include <cmath>

namespace tapelm::nn {

Mamba::Mamba(const ModelConfig& c, RecurrenceForm form, Generator& gen, double proj_std)
    : dim(c.n_embd),
      d_inner(2 * c.n_embd),
      d_state(c.d_state),
      d_conv(c.d_conv),
      dt_rank((c.n_embd + 15) / 16),
      form(form),
      chunk(c.chunk_size) {
  in_proj = register_module("in_proj", std::make_shared<Linear>(dim, 2 * d_inner, false, gen));
  conv1d = register_module("conv1d", std::make_shared<ShortConvolution>(d_inner, d_conv, /*bias=*/true, gen));
  x_proj = register_module("x_proj", std::make_shared<Linear>(d_inner, dt_rank + 2 * d_state, false, gen));
  dt_proj = register_module("dt_proj", std::make_shared<Linear>(dt_rank, d_inner, true, gen));
  const double bound = 1.0 / std::sqrt((double)dt_rank);  // as mamba_simple: U(±dt_rank^−½)
  dt_proj->weight.copy_(uniform(dt_proj->weight.shape(), gen, -bound, bound));
  dt_proj->bias.copy_(dt_bias_init(d_inner, gen));
  Tensor a = Tensor::empty({d_inner, d_state}, DType::f32);  // S4D-real: A = −(1..N)
  for (int64_t i = 0; i < d_inner; ++i)
    for (int64_t n = 0; n < d_state; ++n) a.set_flat(i * d_state + n, std::log((double)(n + 1)));
  A_log = register_parameter("A_log", a, /*weight_decay=*/false);
  D = register_parameter("D", ones({d_inner}), false);
  out_proj = register_module("out_proj", std::make_shared<Linear>(d_inner, dim, false, gen, proj_std));
}

std::unique_ptr<MixerState> Mamba::init_state(int64_t) const { return std::make_unique<MambaState>(); }

Tensor Mamba::forward(const Tensor& x, const MixerContext& ctx, MixerState* state) {
  TAPELM_CHECK(x.dim() == 3 && x.size(2) == dim, "mamba: expects [B,T,{}], got {}", dim, x.str_shape());
  const int64_t B = x.size(0), T = x.size(1);
  MambaState* st = state_as<MambaState>(state, "mamba");
  Tensor pad = ctx.pad_mask.defined() ? reshape(ctx.pad_mask, {B, T, 1}) : Tensor();
  auto unpad = [&](const Tensor& t) { return pad.defined() ? masked_fill(t, pad, 0.0) : t; };
  auto parts = split(in_proj->forward(x), {d_inner, d_inner}, -1);
  const Tensor &conv_in = parts[0], &z = parts[1];
  Tensor u = silu(conv1d->forward(unpad(conv_in), st ? &st->conv : nullptr));  // padding: zero conv input
  const RecurrenceForm run_form = st && T == 1 ? RecurrenceForm::recurrent : form;
  auto dbc = split(x_proj->forward(u), {dt_rank, d_state, d_state}, -1);
  Tensor delta = unpad(softplus(dt_proj->forward(dbc[0])));  // [B,T,Di]; padding: Δ = 0
  Tensor A = neg(exp(A_log));                                // [Di,N]
  Tensor scan;
  if (run_form == RecurrenceForm::recurrent) {
    // The fused selective scan (fast on a CPU).
    Tensor* scan_state = nullptr;
    if (st) {  // keep the SSM state as [B,Di,N] for the scan
      if (st->S.defined()) st->S = reshape(st->S, {B, d_inner, d_state});
      scan_state = &st->S;
    }
    scan = selective_scan(u, delta, A, dbc[1], dbc[2], scan_state);
    if (st) st->S = reshape(st->S, {B, d_inner, d_state, 1});
  } else {
    // The same recurrence on the shared core: one head per channel, K = N, V = 1.
    auto per_channel = [&](const Tensor& t) { return expand(unsqueeze(t, 1), {B, d_inner, T, d_state}); };
    Tensor q = per_channel(dbc[2]), k = per_channel(dbc[1]);                                  // C_t, B_t
    Tensor v = unsqueeze(permute(mul(delta, u), {0, 2, 1}), -1);                              // [B,Di,T,1]
    Tensor log_decay = permute(mul(unsqueeze(delta, -1), A), {0, 2, 1, 3});                   // [B,Di,T,N]
    Tensor h = gated_recurrence(q, k, v, log_decay, run_form, chunk, st ? &st->S : nullptr);  // [B,Di,T,1]
    scan = permute(squeeze(h, -1), {0, 2, 1});
  }
  Tensor y = mul(add(scan, mul(u, D)), silu(z));
  return out_proj->forward(y);
}

int64_t mamba_sequence_flops(const ModelConfig& c, RecurrenceForm form, int64_t b, int64_t s, std::string* f) {
  const int64_t Di = 2 * c.n_embd, N = c.d_state;
  if (form != RecurrenceForm::recurrent) return gated_recurrence_flops(b, s, Di, N, 1, form, c.chunk_size, f);
  *f = fmt::format(
      "7·b·s·d_inner·N: discretisation (ΔA, ΔB·u), state update and read-out C·h of the "
      "selective scan (d_inner {}, N {})",
      Di, N);
  return 7 * b * s * Di * N;
}

}  // namespace tapelm::nn
