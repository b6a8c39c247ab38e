#include "nn/gau.h"

#include <algorithm>
#include <cmath>

#include "autograd/ops.h"
#include "nn/token_shift.h"

namespace tapelm::nn {

namespace {
// qk_offset_scale.{gamma,beta}: γ ~ N(0, 0.02), β = 0 (the paper's and FLASH-pytorch's init).
struct OffsetScale : Module {
  Tensor gamma, beta;
  OffsetScale(int64_t heads, int64_t dim, Generator& gen) {
    gamma = register_parameter("gamma", randn({heads, dim}, gen, DType::f32, 0.0, 0.02));
    beta = register_parameter("beta", zeros({heads, dim}));
  }
};

// rel_pos_bias.weight [D]: one learned score bias per distance 0 … D−1 (the
// paper's Toeplitz rel_pos_bias, causal half), init N(0, 0.02) as the paper's.
struct RelativePositionBias : Module {
  Tensor weight;
  RelativePositionBias(int64_t distances, Generator& gen) {
    weight = register_parameter("weight", randn({distances}, gen, DType::f32, 0.0, 0.02));
  }
};
}  // namespace

LinearSiLU::LinearSiLU(int64_t in, int64_t out, Generator& gen) {
  linear = register_module("0", std::make_shared<Linear>(in, out, true, gen));
}

GatedAttentionUnit::GatedAttentionUnit(const ModelConfig& c, RecurrenceForm form, Generator& gen, double proj_std)
    : mixed_chunk(c.mixer == "flash"),
      dim(c.n_embd),
      expansion(2 * c.n_embd),
      qk_dim(c.gau_qk_dim),
      n(c.block_size),
      chunk(c.chunk_size),
      form(form),
      token_shift(c.gau_token_shift) {
  to_hidden = register_module("to_hidden", std::make_shared<LinearSiLU>(dim, 2 * expansion, gen));
  to_qk = register_module("to_qk", std::make_shared<LinearSiLU>(dim, qk_dim, gen));
  auto os = register_module("qk_offset_scale", std::make_shared<OffsetScale>(mixed_chunk ? 4 : 2, qk_dim, gen));
  gamma = os->gamma;
  beta = os->beta;
  rel_pos_bias = register_module("rel_pos_bias", std::make_shared<RelativePositionBias>(group(), gen))->weight;
  to_out = register_module("to_out", std::make_shared<Linear>(expansion, dim, true, gen, proj_std));
  if (c.gau_rotary_dim > 0)
    rotary = std::make_shared<Rotary>(std::min(c.gau_rotary_dim, qk_dim), n, 10000.0, Rotary::Layout::interleaved);
}

void gau_validate(const ModelConfig& c) {
  const int64_t r = std::min(c.gau_rotary_dim, c.gau_qk_dim);
  TAPELM_CHECK(r % 2 == 0, "config: gau_rotary_dim rotates min({}, gau_qk_dim {}) = {} features, which must be even",
               c.gau_rotary_dim, c.gau_qk_dim, r);
}

int64_t GauState::bytes() const { return core.bytes() + shifted.nbytes(); }

std::unique_ptr<MixerState> GatedAttentionUnit::init_state(int64_t) const { return std::make_unique<GauState>(); }

Tensor GatedAttentionUnit::forward(const Tensor& x, const MixerContext& ctx, MixerState* state) {
  TAPELM_CHECK(x.dim() == 3 && x.size(2) == dim, "gau: expects [B,T,{}], got {}", dim, x.str_shape());
  const int64_t B = x.size(0), T = x.size(1);
  GauState* st = state_as<GauState>(state, "gau");
  GauAttentionState* carried = st ? &st->core : nullptr;
  const Tensor in = token_shift ? shift_tokens(x, ctx.pad_mask, st ? &st->shifted : nullptr) : x;
  std::vector<Tensor> hidden =
      tapelm::chunk(to_hidden->forward(in), 2, -1);  // (value v, gate u), FLASH-pytorch's order
  Tensor z = to_qk->forward(in);                     // [B,T,s]
  auto head = [&](int64_t i) {                       // Z ⊙ γ_i + β_i, rotated
    Tensor h = add(mul(z, reshape(slice(gamma, 0, i, i + 1), {qk_dim})), reshape(slice(beta, 0, i, i + 1), {qk_dim}));
    return rotary ? squeeze(rotary->apply(unsqueeze(h, 2), ctx.positions, 2), 2) : h;
  };
  Tensor pad = ctx.pad_mask.defined() ? ctx.pad_mask : zeros({B, T}, DType::b8);
  const RecurrenceForm run_form = state && T == 1 ? RecurrenceForm::recurrent : form;
  // Rows of qk_offset_scale: GAU (q, k); FLASH (quad_q, lin_q, quad_k, lin_k).
  const int64_t group_len = group();
  GauAttentionInputs core{
      .v = hidden[0], .bias = rel_pos_bias, .position = ctx.positions, .key_pad = pad, .scale = 1.0 / group_len};
  if (mixed_chunk)
    core.q = head(0), core.ql = head(1), core.k = head(2), core.kl = head(3), core.chunk_len = group_len,
    core.norm = 1.0 / group_len;
  else
    core.q = head(0), core.k = head(1);
  Tensor o = gau_attention(core, run_form, carried);
  return to_out->forward(mul(hidden[1], o));
}

int64_t gau_sequence_flops(const ModelConfig& c, RecurrenceForm form, int64_t b, int64_t s, std::string* f) {
  const int64_t e = 2 * c.n_embd, qk = c.gau_qk_dim;
  if (c.mixer == "gau") {
    *f = fmt::format("2·b·s²·(qk + e): QKᵀ and AV of one head over the full s×s square (qk {}, e {})", qk, e);
    return 2 * b * s * s * (qk + e);
  }
  if (form != RecurrenceForm::chunkwise) {
    *f = fmt::format("2·b·s²·(2·qk + e): quadratic and linear scores and AV over s×s (qk {}, e {})", qk, e);
    return 2 * b * s * s * (2 * qk + e);
  }
  // Chunks are C positions long, the last L = s mod C (or C): nothing is
  // computed for padding to a multiple of C, and the last chunk is never
  // folded into the linear state.
  const int64_t C = c.chunk_size, full = s / C, rest = s % C, last = rest ? rest : std::min(C, s);
  *f = fmt::format(
      "2·b·(⌊s/C⌋·C² + (s mod C)²)·(qk + e) + 2·b·(2s − L)·qk·e: quadratic part inside chunks of C, "
      "linear part's read-out at every position and kv of every chunk but the last (L long) (qk {}, e {}, C {})",
      qk, e, C);
  return 2 * b * (full * C * C + rest * rest) * (qk + e) + 2 * b * (2 * s - last) * qk * e;
}

}  // namespace tapelm::nn
