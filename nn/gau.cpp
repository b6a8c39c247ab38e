#include "nn/gau.h"

#include <cmath>

#include "autograd/ops.h"
#include "nn/mixers.h"

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
    : mixed_chunk(c.mixer == "flash"),
      dim(c.n_embd),
      expansion(2 * c.n_embd),
      qk_dim(c.gau_qk_dim),
      n(c.block_size),
      chunk(c.chunk_size),
      form(training_form(c)) {
  to_hidden = register_module("to_hidden", std::make_shared<Linear>(dim, 2 * expansion, true, gen));
  to_qk = register_module("to_qk", std::make_shared<Linear>(dim, qk_dim, true, gen));
  auto os = register_module("qk_offset_scale", std::make_shared<OffsetScale>(mixed_chunk ? 4 : 2, qk_dim, gen));
  gamma = os->gamma;
  beta = os->beta;
  to_out = register_module("to_out", std::make_shared<Linear>(expansion, dim, true, gen, proj_std));
}

std::unique_ptr<MixerState> GatedAttentionUnit::init_state(int64_t) const { return std::make_unique<GauState>(); }

Tensor GatedAttentionUnit::forward(const Tensor& x, const MixerContext& ctx, MixerState* state) {
  TAPELM_CHECK(x.dim() == 3 && x.size(2) == dim, "gau: expects [B,T,{}], got {}", dim, x.str_shape());
  const int64_t B = x.size(0), T = x.size(1);
  std::vector<Tensor> uv = tapelm::chunk(silu(to_hidden->forward(x)), 2, -1);  // (gate u, value v)
  Tensor z = silu(to_qk->forward(x));                                          // [B,T,s]
  auto head = [&](int64_t i) {                                                 // Z ⊙ γ_i + β_i
    return add(mul(z, reshape(slice(gamma, 0, i, i + 1), {qk_dim})), reshape(slice(beta, 0, i, i + 1), {qk_dim}));
  };
  Tensor pad = ctx.pad_mask.defined() ? ctx.pad_mask : zeros({B, T}, DType::b8);
  Tensor chunk_id = zeros({B, T}, DType::i32);  // GAU: one chunk
  if (mixed_chunk) {
    const int32_t* pos = ctx.positions.data<int32_t>();
    int32_t* c = chunk_id.data<int32_t>();
    for (int64_t i = 0; i < B * T; ++i) c[i] = pos[i] / (int32_t)chunk;
  }
  GauAttentionState* carried = nullptr;
  if (state) {
    auto* st = dynamic_cast<GauState*>(state);
    TAPELM_CHECK(st, "gau: the decoding state is not a GauState");
    carried = &st->core;
  }
  const RecurrenceForm run_form = state && T == 1 ? RecurrenceForm::recurrent : form;
  Tensor o = gau_attention(head(0), head(1), uv[1], mixed_chunk ? head(2) : Tensor(), mixed_chunk ? head(3) : Tensor(),
                           chunk_id, pad, 1.0 / std::sqrt((double)qk_dim), 1.0 / (double)n, run_form, carried);
  return to_out->forward(mul(uv[0], o));
}

int64_t gau_sequence_flops(const ModelConfig& c, int64_t b, int64_t s, std::string* f) {
  const int64_t e = 2 * c.n_embd, qk = c.gau_qk_dim;
  if (c.mixer == "gau") {
    *f = fmt::format("2·b·s²·(qk + e): QKᵀ and AV of one head over the full s×s square (qk {}, e {})", qk, e);
    return 2 * b * s * s * (qk + e);
  }
  if (training_form(c) != RecurrenceForm::chunkwise) {
    *f = fmt::format("2·b·s²·(2·qk + e): quadratic and linear scores and AV over s×s (qk {}, e {})", qk, e);
    return 2 * b * s * s * (2 * qk + e);
  }
  const int64_t C = c.chunk_size, sp = (s + C - 1) / C * C;
  *f = fmt::format(
      "2·b·s·C·(qk + e) + 4·b·s·qk·e: quadratic part inside chunks of C, linear part's "
      "kv and read-out (qk {}, e {}, C {}; s padded to a multiple of C)",
      qk, e, C);
  return 2 * b * sp * C * (qk + e) + 4 * b * sp * qk * e;
}

}  // namespace tapelm::nn
