#include "nn/mamba.h"

#include <cmath>

#include "autograd/ops.h"
#include "nn/linear_attention.h"
#include "nn/mixers.h"

namespace tapelm::nn {

Tensor dt_bias_init(int64_t n, Generator& gen) {
  Tensor b = Tensor::empty({n}, DType::f32);
  for (int64_t i = 0; i < n; ++i) {
    double dt = std::exp(std::log(0.001) + gen.uniform() * (std::log(0.1) - std::log(0.001)));
    dt = std::max(dt, 1e-4);
    b.set_flat(i, dt + std::log(-std::expm1(-dt)));
  }
  return b;
}

int64_t MambaState::bytes() const {
  int64_t n = 0;
  for (const Tensor* t : {&conv, &S}) n += t->nbytes();
  return n;
}

Mamba::Mamba(const ModelConfig& c, Generator& gen, double proj_std)
    : version(c.mixer == "mamba2" ? 2 : 1),
      dim(c.n_embd),
      d_inner(2 * c.n_embd),
      d_state(c.d_state),
      d_conv(c.d_conv),
      dt_rank((c.n_embd + 15) / 16),
      head_dim(c.ssm_headdim),
      n_head(version == 2 ? 2 * c.n_embd / c.ssm_headdim : 2 * c.n_embd),
      conv_channels(version == 2 ? 2 * c.n_embd + 2 * c.d_state : 2 * c.n_embd),
      form(training_form(c)),
      chunk(c.chunk_size) {
  TAPELM_CHECK(version == 1 || d_inner % head_dim == 0, "mamba2: d_inner {} is not divisible by ssm_headdim {}",
               d_inner, head_dim);
  const int64_t in_out = version == 1 ? 2 * d_inner : 2 * d_inner + 2 * d_state + n_head;
  in_proj = register_module("in_proj", std::make_shared<Linear>(dim, in_out, false, gen));
  conv1d = register_module("conv1d", std::make_shared<ShortConvolution>(conv_channels, d_conv, /*bias=*/true, gen));
  if (version == 1) {
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
  } else {
    dt_bias = register_parameter("dt_bias", dt_bias_init(n_head, gen), false);
    A_log = register_parameter("A_log", log(uniform({n_head}, gen, 1.0, 16.0)).detach(), false);
    D = register_parameter("D", ones({n_head}), false);
    norm = register_module("norm", std::make_shared<RMSNorm>(d_inner));
  }
  out_proj = register_module("out_proj", std::make_shared<Linear>(d_inner, dim, false, gen, proj_std));
}

std::unique_ptr<MixerState> Mamba::init_state(int64_t) const { return std::make_unique<MambaState>(); }

Tensor Mamba::forward(const Tensor& x, const MixerContext& ctx, MixerState* state) {
  TAPELM_CHECK(x.dim() == 3 && x.size(2) == dim, "mamba: expects [B,T,{}], got {}", dim, x.str_shape());
  const int64_t B = x.size(0), T = x.size(1);
  MambaState* st = nullptr;
  if (state) {
    st = dynamic_cast<MambaState*>(state);
    TAPELM_CHECK(st, "mamba: the decoding state is not a MambaState");
  }
  Tensor pad = ctx.pad_mask.defined() ? reshape(ctx.pad_mask, {B, T, 1}) : Tensor();
  auto unpad = [&](const Tensor& t) { return pad.defined() ? masked_fill(t, pad, 0.0) : t; };
  Tensor proj = in_proj->forward(x);
  Tensor z, conv_in, dt_raw;
  if (version == 1) {
    auto parts = split(proj, {d_inner, d_inner}, -1);
    conv_in = parts[0], z = parts[1];
  } else {
    auto parts = split(proj, {d_inner, conv_channels, n_head}, -1);
    z = parts[0], conv_in = parts[1], dt_raw = parts[2];
  }
  Tensor u = silu(conv1d->forward(unpad(conv_in), st ? &st->conv : nullptr));  // padding: zero conv input
  Tensor y;
  const RecurrenceForm run_form = st && T == 1 ? RecurrenceForm::recurrent : form;
  Tensor* carried = st ? &st->S : nullptr;
  if (version == 1) {
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
      Tensor q = per_channel(dbc[2]), k = per_channel(dbc[1]);                    // C_t, B_t
      Tensor v = unsqueeze(permute(mul(delta, u), {0, 2, 1}), -1);                // [B,Di,T,1]
      Tensor log_decay = permute(mul(unsqueeze(delta, -1), A), {0, 2, 1, 3});     // [B,Di,T,N]
      Tensor h = gated_recurrence(q, k, v, log_decay, run_form, chunk, carried);  // [B,Di,T,1]
      scan = permute(squeeze(h, -1), {0, 2, 1});
    }
    y = add(scan, mul(u, D));
    y = mul(y, silu(z));
  } else {
    auto xbc = split(u, {d_inner, d_state, d_state}, -1);
    Tensor delta = unpad(softplus(add(dt_raw, dt_bias)));  // [B,T,H]
    Tensor A = neg(exp(A_log));                            // [H]
    auto shared = [&](const Tensor& t) { return expand(unsqueeze(t, 1), {B, n_head, T, d_state}); };
    Tensor xh = permute(reshape(xbc[0], {B, T, n_head, head_dim}), {0, 2, 1, 3});  // [B,H,T,P]
    Tensor dt_h = unsqueeze(permute(delta, {0, 2, 1}), -1);                        // [B,H,T,1]
    Tensor log_decay = mul(dt_h, reshape(A, {1, n_head, 1, 1}));
    Tensor h = gated_recurrence(shared(xbc[2]), shared(xbc[1]), mul(xh, dt_h), log_decay, run_form, chunk, carried);
    h = add(h, mul(xh, reshape(D, {1, n_head, 1, 1})));
    y = reshape(permute(h, {0, 2, 1, 3}), {B, T, d_inner});
    y = norm->forward(mul(y, silu(z)));  // gated RMSNorm (norm after the gate)
  }
  return out_proj->forward(y);
}

int64_t mamba_sequence_flops(const ModelConfig& c, int64_t b, int64_t s, std::string* f) {
  const int64_t Di = 2 * c.n_embd, N = c.d_state;
  const RecurrenceForm form = training_form(c);
  if (c.mixer == "mamba2") return gated_core_flops(b, s, Di / c.ssm_headdim, N, c.ssm_headdim, form, c.chunk_size, f);
  if (form != RecurrenceForm::recurrent) return gated_core_flops(b, s, Di, N, 1, form, c.chunk_size, f);
  *f = fmt::format(
      "7·b·s·d_inner·N: discretisation (ΔA, ΔB·u), state update and read-out C·h of the "
      "selective scan (d_inner {}, N {})",
      Di, N);
  return 7 * b * s * Di * N;
}

}  // namespace tapelm::nn
