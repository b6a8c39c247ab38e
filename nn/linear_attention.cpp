#include "nn/linear_attention.h"

#include <cmath>

namespace tapelm::nn {

namespace {
// x / ‖x‖ over the last axis (DeltaNet's q, k normalisation).
Tensor l2_normalize(const Tensor& x) { return div(x, sqrt(add_scalar(sum(square(x), {-1}, true), 1e-6))); }

constexpr double kTau = 16.0;      // decay temperature of gated retention and GLA
constexpr int64_t kGateRank = 16;  // GLA's low-rank decay projection
constexpr double kNormalizerEps = 1e-6;

Tensor logsigmoid(const Tensor& x) { return neg(softplus(neg(x))); }
}  // namespace

bool is_linear_recurrent_mixer(const std::string& kind) {
  return kind == "linear" || kind == "retnet" || kind == "gated_retention" || kind == "gla" || kind == "deltanet" ||
         kind == "gated_deltanet";
}

LinearRecurrentMixer::LinearRecurrentMixer(const ModelConfig& c, Generator& gen, double proj_std)
    : kind(c.mixer),
      dim(c.n_embd),
      n_head(c.n_head),
      head_dim(c.n_embd / c.n_head),
      chunk(c.chunk_size),
      feature_map_(c.feature_map),
      normalize_(c.normalize) {
  TAPELM_CHECK(is_linear_recurrent_mixer(kind), "LinearRecurrentMixer: unknown kind '{}'", kind);
  form = c.recurrent_form == "parallel"    ? RecurrenceForm::parallel
         : c.recurrent_form == "recurrent" ? RecurrenceForm::recurrent
                                           : RecurrenceForm::chunkwise;
  q_proj = register_module("q_proj", std::make_shared<Linear>(dim, dim, false, gen));
  k_proj = register_module("k_proj", std::make_shared<Linear>(dim, dim, false, gen));
  v_proj = register_module("v_proj", std::make_shared<Linear>(dim, dim, false, gen));
  const bool delta = kind == "deltanet" || kind == "gated_deltanet";
  if (delta) b_proj = register_module("b_proj", std::make_shared<Linear>(dim, n_head, false, gen));
  if (kind != "linear" && kind != "deltanet")
    g_proj = register_module("g_proj", std::make_shared<Linear>(dim, dim, false, gen));
  if (kind == "gated_retention" || kind == "gated_deltanet")
    gk_proj_0 = register_module("gk_proj", std::make_shared<Linear>(dim, n_head, true, gen));
  if (kind == "gla") {
    gk_proj_0 = register_module("gk_proj.0", std::make_shared<Linear>(dim, kGateRank, false, gen));
    gk_proj_1 = register_module("gk_proj.1", std::make_shared<Linear>(kGateRank, dim, true, gen));
  }
  if (kind != "linear" || !normalize_) g_norm = register_module("g_norm", std::make_shared<RMSNorm>(head_dim));
  o_proj = register_module("o_proj", std::make_shared<Linear>(dim, dim, false, gen, proj_std));
  if (kind == "retnet" || kind == "gated_retention") rotary_ = std::make_shared<Rotary>(head_dim, c.block_size);
  if (kind == "retnet") {
    Tensor log_gamma = Tensor::empty({1, n_head, 1, 1}, DType::f64);
    for (int64_t h = 0; h < n_head; ++h) log_gamma.set_flat(h, std::log(1.0 - std::pow(2.0, -5.0 - h)));
    retnet_log_gamma_ = ConstantTensor(log_gamma);
  }
}

std::unique_ptr<MixerState> LinearRecurrentMixer::init_state(int64_t) const {
  return std::make_unique<RecurrentState>();
}

Tensor LinearRecurrentMixer::heads(const Tensor& t, int64_t B, int64_t T) const {
  return permute(reshape(t, {B, T, n_head, -1}), {0, 2, 1, 3});
}

Tensor LinearRecurrentMixer::forward(const Tensor& x, const MixerContext& ctx, MixerState* state) {
  TAPELM_CHECK(x.dim() == 3 && x.size(2) == dim, "{}: expects [B,T,{}], got {}", kind, dim, x.str_shape());
  const int64_t B = x.size(0), T = x.size(1);
  Tensor q = heads(q_proj->forward(x), B, T), k = heads(k_proj->forward(x), B, T), v = heads(v_proj->forward(x), B, T);
  Tensor g;     // log-decay [B,H,T,1] or [B,H,T,K]
  Tensor beta;  // delta rule's write strength [B,H,T,1]
  if (kind == "deltanet" || kind == "gated_deltanet") {
    q = mul_scalar(l2_normalize(q), 1.0 / std::sqrt((double)head_dim));
    k = l2_normalize(k);
    beta = sigmoid(heads(b_proj->forward(x), B, T));
    g = kind == "gated_deltanet" ? mul_scalar(logsigmoid(heads(gk_proj_0->forward(x), B, T)), 1.0 / kTau)
                                 : zeros({B, n_head, T, 1}, x.dtype());
  } else if (kind == "linear") {
    auto phi = [&](const Tensor& t) {
      if (feature_map_ == "elu") return add_scalar(elu(t), 1.0);
      if (feature_map_ == "relu") return relu(t);
      return t;
    };
    q = phi(q);
    k = phi(k);
    g = zeros({B, n_head, T, 1}, x.dtype());
    if (normalize_) v = concat({v, ones({B, n_head, T, 1}, x.dtype())}, -1);  // last column accumulates z
  } else {
    if (rotary_) {
      q = rotary_->apply(q, ctx.positions);
      k = rotary_->apply(k, ctx.positions);
    }
    q = mul_scalar(q, 1.0 / std::sqrt((double)head_dim));
    if (kind == "retnet") {
      g = expand(retnet_log_gamma_.as(x.dtype()), {B, n_head, T, 1});
    } else if (kind == "gated_retention") {
      g = mul_scalar(logsigmoid(heads(gk_proj_0->forward(x), B, T)), 1.0 / kTau);  // [B,H,T,1]
    } else {                                                                       // gla
      g = mul_scalar(logsigmoid(heads(gk_proj_1->forward(gk_proj_0->forward(x)), B, T)), 1.0 / kTau);
    }
  }
  if (ctx.pad_mask.defined()) {  // padding: no write (k = 0), no decay (g = 0)
    Tensor pad = reshape(ctx.pad_mask, {B, 1, T, 1});
    k = masked_fill(k, pad, 0.0);
    g = masked_fill(g, pad, 0.0);
    if (beta.defined()) beta = masked_fill(beta, pad, 0.0);
  }
  Tensor* carried = nullptr;
  if (state) {
    auto* st = dynamic_cast<RecurrentState*>(state);
    TAPELM_CHECK(st, "{}: the decoding state is not a RecurrentState", kind);
    carried = &st->S;
  }
  const RecurrenceForm run_form = state && T == 1 ? RecurrenceForm::recurrent : form;
  Tensor y = beta.defined() ? delta_rule(q, k, v, beta, g, run_form, chunk, carried)
                            : gated_recurrence(q, k, v, g, run_form, chunk, carried);
  if (kind == "linear" && normalize_) {
    Tensor num = slice(y, -1, 0, head_dim), den = slice(y, -1, head_dim, head_dim + 1);
    y = div(num, add_scalar(den, kNormalizerEps));
  } else {
    y = g_norm->forward(y);
  }
  y = reshape(permute(y, {0, 2, 1, 3}), {B, T, dim});
  if (g_proj) y = mul(silu(g_proj->forward(x)), y);
  return o_proj->forward(y);
}

}  // namespace tapelm::nn
