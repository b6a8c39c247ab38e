#include "nn/linear_attention.h"

#include <cmath>

#include "nn/ssm.h"

namespace tapelm::nn {

namespace {
// x / ‖x‖ over the last axis (DeltaNet's q, k normalisation).
Tensor l2_normalize(const Tensor& x) { return div(x, sqrt(add_scalar(sum(square(x), {-1}, true), 1e-6))); }

constexpr double kTau = 16.0;      // decay temperature of gated retention and GLA
constexpr int64_t kGateRank = 16;  // GLA's low-rank decay projection
constexpr double kNormalizerEps = 1e-6;

Tensor logsigmoid(const Tensor& x) { return neg(softplus(neg(x))); }
}  // namespace

const LinearRecipe& recipe_of(const std::string& kind) {
  using D = DecayKind;
  static const std::vector<LinearRecipe> recipes{
      {.kind = "linear"},
      {.kind = "retnet",
       .decay = D::fixed,
       .rotary = true,
       .output_gate = true,
       .expand_v = 2.0,
       .norm_name = "g_norm_swish_gate"},
      {.kind = "gated_retention",
       .decay = D::per_head,
       .rotary = true,
       .rotary_layout = Rotary::Layout::interleaved,
       .output_gate = true,
       .norm_name = "o_norm",
       .norm_affine = false},
      {.kind = "gla", .decay = D::per_key, .output_gate = true, .expand_k = 0.5, .norm_name = "g_norm_swish_gate"},
      {.kind = "deltanet", .delta_rule = true, .short_conv = true, .norm_name = "o_norm"},
      {.kind = "gated_deltanet",
       .decay = D::mamba2,
       .delta_rule = true,
       .output_gate = true,
       .short_conv = true,
       .expand_k = 0.75,
       .expand_v = 1.5,
       .norm_name = "o_norm"},
  };
  for (const LinearRecipe& r : recipes)
    if (r.kind == kind) return r;
  throw Error(fmt::format("LinearRecurrentMixer: unknown kind '{}'", kind));
}

LinearWidths linear_widths(const ModelConfig& c) {
  const LinearRecipe& r = recipe_of(c.mixer);
  auto width = [&](double expand, const char* what) {
    const double w = expand * (double)c.n_embd;
    const int64_t n = std::llround(w);
    TAPELM_CHECK(std::abs(w - (double)n) < 1e-9 && n % c.n_head == 0,
                 "config: {} has {} width {}·n_embd = {}, which must be a whole multiple of n_head {}", c.mixer, what,
                 expand, w, c.n_head);
    return n;
  };
  const LinearWidths w{width(r.expand_k, "key"), width(r.expand_v, "value")};
  TAPELM_CHECK(!r.rotary || (w.key / c.n_head) % 2 == 0,
               "config: {} applies rotary positions and needs an even key head dimension, got {}", c.mixer,
               w.key / c.n_head);
  return w;
}

int64_t linear_width_multiple(const ModelConfig& c) {
  // The widths that pass form a subgroup of the integers (each condition says
  // n_embd·p/q ∈ n_head·ℤ), so they are the multiples of the smallest one.
  // With expansions in quarters, 8·n_head always passes (8·n_head·p/4 = 2·n_head·p,
  // an even head too); a recipe row outside that rule meets the error below.
  ModelConfig t = c;
  for (t.n_embd = 1; t.n_embd <= 16 * c.n_head; ++t.n_embd) {
    try {
      linear_widths(t);
      return t.n_embd;
    } catch (const Error&) {
    }
  }
  throw Error(fmt::format("config: {} allows no width up to {} with n_head {}", c.mixer, 16 * c.n_head, c.n_head));
}

int64_t RecurrentState::bytes() const {
  int64_t n = 0;
  for (const Tensor* t : {&S, &q_conv, &k_conv, &v_conv}) n += t->nbytes();
  return n;
}

LinearRecurrentMixer::LinearRecurrentMixer(const ModelConfig& c, RecurrenceForm form, Generator& gen, double proj_std)
    : recipe(recipe_of(c.mixer)),
      kind(c.mixer),
      dim(c.n_embd),
      n_head(c.n_head),
      key_dim(linear_widths(c).key),
      value_dim(linear_widths(c).value),
      head_k(key_dim / n_head),
      head_v(value_dim / n_head),
      form(form),
      chunk(c.chunk_size),
      feature_map_(c.feature_map),
      normalize_(c.normalize) {
  q_proj = register_module("q_proj", std::make_shared<Linear>(dim, key_dim, false, gen));
  k_proj = register_module("k_proj", std::make_shared<Linear>(dim, key_dim, false, gen));
  v_proj = register_module("v_proj", std::make_shared<Linear>(dim, value_dim, false, gen));
  if (recipe.decay == DecayKind::mamba2) {  // fla's GatedDeltaNet: A ~ U(0, 16), Δ's bias as Mamba-2's
    a_proj = register_module("a_proj", std::make_shared<Linear>(dim, n_head, false, gen));
    A_log = register_parameter("A_log", log(uniform({n_head}, gen, 0.0, 16.0)).detach(), /*weight_decay=*/false);
    dt_bias = register_parameter("dt_bias", dt_bias_init(n_head, gen), /*weight_decay=*/false);
  }
  if (recipe.delta_rule) b_proj = register_module("b_proj", std::make_shared<Linear>(dim, n_head, false, gen));
  if (recipe.short_conv) {
    q_conv1d = register_module("q_conv1d", std::make_shared<ShortConvolution>(key_dim, c.d_conv, false, gen));
    k_conv1d = register_module("k_conv1d", std::make_shared<ShortConvolution>(key_dim, c.d_conv, false, gen));
    v_conv1d = register_module("v_conv1d", std::make_shared<ShortConvolution>(value_dim, c.d_conv, false, gen));
  }
  if (recipe.output_gate) g_proj = register_module("g_proj", std::make_shared<Linear>(dim, value_dim, false, gen));
  if (recipe.decay == DecayKind::per_head)
    gk_proj_0 = register_module("gk_proj", std::make_shared<Linear>(dim, n_head, recipe.gate_bias, gen));
  if (recipe.decay == DecayKind::per_key) {
    gk_proj_0 = register_module("gk_proj.0", std::make_shared<Linear>(dim, kGateRank, false, gen));
    gk_proj_1 = register_module("gk_proj.1", std::make_shared<Linear>(kGateRank, key_dim, true, gen));
  }
  if (!normalized_linear())
    out_norm = register_module(recipe.norm_name, std::make_shared<RMSNorm>(head_v, c.norm_eps, recipe.norm_affine));
  o_proj = register_module("o_proj", std::make_shared<Linear>(value_dim, dim, false, gen, proj_std));
  if (recipe.rotary) rotary_ = std::make_shared<Rotary>(head_k, c.block_size, 10000.0, recipe.rotary_layout);
  if (recipe.decay == DecayKind::fixed) {
    Tensor log_gamma = Tensor::empty({1, n_head, 1, 1}, DType::f64);
    for (int64_t h = 0; h < n_head; ++h) log_gamma.set_flat(h, std::log(1.0 - std::pow(2.0, -5.0 - h)));
    retnet_log_gamma_ = ConstantTensor(log_gamma);
  }
}

std::unique_ptr<MixerState> LinearRecurrentMixer::init_state(int64_t) const {
  return std::make_unique<RecurrentState>();
}

Tensor LinearRecurrentMixer::split_heads(const Tensor& t, int64_t B, int64_t T) const {
  return permute(reshape(t, {B, T, n_head, -1}), {0, 2, 1, 3});
}

void LinearRecurrentMixer::short_convolutions(Tensor& q, Tensor& k, Tensor& v, const Tensor& pad,
                                              RecurrentState* st) const {
  auto conv = [&](const ShortConvolution& c, const Tensor& t, Tensor* cache) {
    return silu(c.forward(pad.defined() ? masked_fill(t, pad, 0.0) : t, cache));  // padding: zero input
  };
  q = conv(*q_conv1d, q, st ? &st->q_conv : nullptr);
  k = conv(*k_conv1d, k, st ? &st->k_conv : nullptr);
  v = conv(*v_conv1d, v, st ? &st->v_conv : nullptr);
}

Tensor LinearRecurrentMixer::forward(const Tensor& x, const MixerContext& ctx, MixerState* state) {
  TAPELM_CHECK(x.dim() == 3 && x.size(2) == dim, "{}: expects [B,T,{}], got {}", kind, dim, x.str_shape());
  const int64_t B = x.size(0), T = x.size(1);
  RecurrentState* st = state_as<RecurrentState>(state, kind);
  Tensor q = q_proj->forward(x), k = k_proj->forward(x), v = v_proj->forward(x);
  if (recipe.short_conv)
    short_convolutions(q, k, v, ctx.pad_mask.defined() ? reshape(ctx.pad_mask, {B, T, 1}) : Tensor(), st);
  q = split_heads(q, B, T), k = split_heads(k, B, T), v = split_heads(v, B, T);
  Tensor beta;  // delta rule's write strength [B,H,T,1]
  if (recipe.delta_rule) {
    q = mul_scalar(l2_normalize(q), 1.0 / std::sqrt((double)head_k));
    k = l2_normalize(k);
    beta = sigmoid(split_heads(b_proj->forward(x), B, T));
  } else if (kind == "linear") {
    auto phi = [&](const Tensor& t) {
      if (feature_map_ == "elu") return add_scalar(elu(t), 1.0);
      if (feature_map_ == "relu") return relu(t);
      return t;
    };
    q = phi(q);
    k = phi(k);
    if (normalize_) v = concat({v, ones({B, n_head, T, 1}, x.dtype(), x.device())}, -1);  // last column accumulates z
  } else {
    if (rotary_) {
      q = rotary_->apply(q, ctx.positions);
      k = rotary_->apply(k, ctx.positions);
    }
    q = mul_scalar(q, 1.0 / std::sqrt((double)head_k));
  }
  Tensor log_decay;  // [B,H,T,1] or [B,H,T,K]
  switch (recipe.decay) {
    case DecayKind::none:
      log_decay = zeros({B, n_head, T, 1}, x.dtype(), x.device());
      break;
    case DecayKind::fixed:
      log_decay = expand(retnet_log_gamma_.like(x), {B, n_head, T, 1});
      break;
    case DecayKind::per_head:
      log_decay = mul_scalar(logsigmoid(split_heads(gk_proj_0->forward(x), B, T)), 1.0 / kTau);
      break;
    case DecayKind::per_key:
      log_decay = mul_scalar(logsigmoid(split_heads(gk_proj_1->forward(gk_proj_0->forward(x)), B, T)), 1.0 / kTau);
      break;
    case DecayKind::mamba2:  // −exp(A_log)·softplus(x W_a + dt_bias), [B,T,H] -> [B,H,T,1]
      log_decay = split_heads(mul(softplus(add(a_proj->forward(x), dt_bias)), neg(exp(A_log))), B, T);
      break;
  }
  if (ctx.pad_mask.defined()) {  // padding: no write (k = 0), no decay (g = 0)
    Tensor pad = reshape(ctx.pad_mask, {B, 1, T, 1});
    k = masked_fill(k, pad, 0.0);
    log_decay = masked_fill(log_decay, pad, 0.0);
    if (beta.defined()) beta = masked_fill(beta, pad, 0.0);
  }
  Tensor* carried = st ? &st->S : nullptr;
  const RecurrenceForm run_form = st && T == 1 ? RecurrenceForm::recurrent : form;
  Tensor y = recipe.delta_rule ? delta_rule(q, k, v, beta, log_decay, run_form, chunk, carried)
                               : gated_recurrence(q, k, v, log_decay, run_form, chunk, carried);
  if (normalized_linear()) {
    Tensor num = slice(y, -1, 0, head_v), den = slice(y, -1, head_v, head_v + 1);
    y = div(num, add_scalar(den, kNormalizerEps));
  } else {
    y = out_norm->forward(y);
  }
  y = reshape(permute(y, {0, 2, 1, 3}), {B, T, value_dim});
  if (recipe.output_gate) y = mul(silu(g_proj->forward(x)), y);
  return o_proj->forward(y);
}

int64_t linear_recurrent_sequence_flops(const ModelConfig& c, RecurrenceForm form, int64_t b, int64_t s,
                                        std::string* f) {
  const LinearWidths w = linear_widths(c);
  const int64_t H = c.n_head, K = w.key / H, V = w.value / H;
  if (!recipe_of(c.mixer).delta_rule) return gated_recurrence_flops(b, s, H, K, V, form, c.chunk_size, f);
  if (form == RecurrenceForm::recurrent) {
    *f = fmt::format("7·b·s·H·K·V: read (2KV), decay (KV), error and write (4KV) of the state (K {}, V {})", K, V);
    return 7 * b * s * H * K * V;
  }
  const int64_t C = form == RecurrenceForm::parallel ? s : std::min(c.chunk_size, s);
  *f = fmt::format(
      "b·s·H·(C·(4K + 3V) + 6·K·V): KKᵀ, QKᵀ, the triangular solve and output inside "
      "chunks of C (WY form), state read and update (K {}, V {}, C {})",
      K, V, C);
  return b * s * H * (C * (4 * K + 3 * V) + 6 * K * V);
}

}  // namespace tapelm::nn
