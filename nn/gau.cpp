#include "nn/gau.h"

#include <cmath>
#include <cstring>

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

int64_t FlashState::bytes() const {
  int64_t total = 0;
  for (auto& t : S) total += t.numel() * (int64_t)dtype_size(t.dtype());
  for (auto* list : {&kq, &kl, &v})
    for (auto& row : *list)
      for (auto& t : row) total += t.numel() * (int64_t)dtype_size(t.dtype());
  return total;
}

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

std::unique_ptr<MixerState> GatedAttentionUnit::init_state(int64_t batch) const {
  if (!mixed_chunk) return std::make_unique<AttentionCache>();
  auto st = std::make_unique<FlashState>();
  st->S.resize(batch);
  st->kq.resize(batch);
  st->kl.resize(batch);
  st->v.resize(batch);
  st->chunk_id.assign(batch, -1);
  return st;
}

// The parallel form: both parts as [B,T,T] masked matrices built from chunk ids.
Tensor GatedAttentionUnit::flash_masked(const Tensor& u, const Tensor& v, const std::vector<Tensor>& qk,
                                        const Tensor& pad, const Tensor& positions) const {
  const int64_t B = u.size(0), T = u.size(1);
  Tensor quad_mask = Tensor::empty({B, T, T}, DType::b8), lin_mask = Tensor::empty({B, T, T}, DType::b8);
  const int32_t* pos = positions.data<int32_t>();
  const uint8_t* pm = pad.data<uint8_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t s = 0; s < T; ++s) {
        const int64_t ct = pos[b * T + t] / chunk, cs = pos[b * T + s] / chunk;
        const bool key_ok = !pm[b * T + s];
        quad_mask.data<uint8_t>()[(b * T + t) * T + s] = !(key_ok && s <= t && cs == ct);
        lin_mask.data<uint8_t>()[(b * T + t) * T + s] = !(key_ok && s < t && cs < ct);
      }
  Tensor quad =
      mul_scalar(square(relu(mul_scalar(matmul(qk[0], qk[1], false, true), 1.0 / std::sqrt((double)qk_dim)))), 1.0 / n);
  Tensor lin = mul_scalar(matmul(qk[2], qk[3], false, true), 1.0 / n);
  Tensor a = add(masked_fill(quad, quad_mask, 0.0), masked_fill(lin, lin_mask, 0.0));
  return mul(u, matmul(a, v));
}

// The chunkwise form for sequences whose real tokens sit at their own index
// (no or right padding): [B,G,C,·] blocks, an exclusive cumsum of K'ᵀV over G.
Tensor GatedAttentionUnit::flash_chunked(const Tensor& u, const Tensor& v, const std::vector<Tensor>& qk,
                                         const Tensor& pad) const {
  const int64_t B = u.size(0), T = u.size(1), G = (T + chunk - 1) / chunk, Tp = G * chunk;
  auto extend = [&](const Tensor& x) {  // zero-fill up to a multiple of the chunk
    return Tp == T ? x : concat({x, zeros({B, Tp - T, x.size(2)}, x.dtype())}, 1);
  };
  Tensor pad_p = Tp == T ? pad : concat({pad, full({B, Tp - T}, 1, DType::b8)}, 1);
  auto blocks = [&](const Tensor& x) { return reshape(extend(x), {B, G, chunk, x.size(2)}); };
  Tensor qq = blocks(qk[0]), kq = blocks(qk[1]), ql = blocks(qk[2]), vb = blocks(v);
  Tensor kl = blocks(masked_fill(qk[3], reshape(pad, {B, T, 1}), 0.0));  // padding writes nothing
  Tensor mask = Tensor::empty({B, G, chunk, chunk}, DType::b8);
  const uint8_t* pm = pad_p.data<uint8_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < G; ++g)
      for (int64_t t = 0; t < chunk; ++t)
        for (int64_t s = 0; s < chunk; ++s)
          mask.data<uint8_t>()[((b * G + g) * chunk + t) * chunk + s] = s > t || pm[b * Tp + g * chunk + s];
  Tensor quad =
      mul_scalar(square(relu(mul_scalar(matmul(qq, kq, false, true), 1.0 / std::sqrt((double)qk_dim)))), 1.0 / n);
  Tensor quad_o = matmul(masked_fill(quad, mask, 0.0), vb);  // [B,G,C,e]
  Tensor kv = matmul(kl, vb, true, false);                   // [B,G,s,e]
  Tensor before = sub(cumsum(kv, 1), kv);                    // Σ over earlier chunks
  Tensor lin_o = mul_scalar(matmul(ql, before), 1.0 / n);
  Tensor o = slice(reshape(add(quad_o, lin_o), {B, Tp, expansion}), 1, 0, T);
  return mul(u, o);
}

// Recurrent decoding, token by token and row by row (inference only).
Tensor GatedAttentionUnit::flash_decode(const Tensor& u, const Tensor& v, const std::vector<Tensor>& qk,
                                        const Tensor& pad, const Tensor& positions, MixerState* state) const {
  auto* st = dynamic_cast<FlashState*>(state);
  TAPELM_CHECK(st, "flash: the decoding state is not a FlashState");
  const int64_t B = u.size(0), T = u.size(1);
  const DType dt = u.dtype();
  Tensor out = zeros({B, T, expansion}, dt);
  auto at = [](const Tensor& x, int64_t b, int64_t t) {
    return reshape(slice(slice(x, 0, b, b + 1), 1, t, t + 1), {x.size(2)});
  };
  for (int64_t b = 0; b < B; ++b) {
    if (!st->S[b].defined()) st->S[b] = zeros({qk_dim, expansion}, dt);
    for (int64_t t = 0; t < T; ++t) {
      if (pad.data<uint8_t>()[b * T + t]) continue;  // padding: no state change
      const int64_t c = positions.data<int32_t>()[b * T + t] / chunk;
      if (c != st->chunk_id[b]) {  // a new chunk: fold the finished one into S
        for (size_t i = 0; i < st->kl[b].size(); ++i)
          st->S[b] = add(st->S[b], matmul(reshape(st->kl[b][i], {qk_dim, 1}), reshape(st->v[b][i], {1, expansion})));
        st->kq[b].clear(), st->kl[b].clear(), st->v[b].clear();
        st->chunk_id[b] = c;
      }
      st->kq[b].push_back(at(qk[1], b, t));
      st->kl[b].push_back(at(qk[3], b, t));
      st->v[b].push_back(at(v, b, t));
      Tensor q = reshape(at(qk[0], b, t), {1, qk_dim});
      Tensor keys = reshape(concat(st->kq[b], 0), {(int64_t)st->kq[b].size(), qk_dim});
      Tensor vals = reshape(concat(st->v[b], 0), {(int64_t)st->v[b].size(), expansion});
      Tensor w =
          mul_scalar(square(relu(mul_scalar(matmul(q, keys, false, true), 1.0 / std::sqrt((double)qk_dim)))), 1.0 / n);
      Tensor o = add(matmul(w, vals), mul_scalar(matmul(reshape(at(qk[2], b, t), {1, qk_dim}), st->S[b]), 1.0 / n));
      Tensor row = reshape(mul(at(u, b, t), reshape(o, {expansion})), {1, 1, expansion});
      // write the row into out[b, t]
      std::memcpy((char*)out.raw_data() + (b * T + t) * expansion * dtype_size(dt), row.raw_data(),
                  expansion * dtype_size(dt));
    }
  }
  return out;
}

Tensor GatedAttentionUnit::forward(const Tensor& x, const MixerContext& ctx, MixerState* state) {
  TAPELM_CHECK(x.dim() == 3 && x.size(2) == dim, "gau: expects [B,T,{}], got {}", dim, x.str_shape());
  const int64_t B = x.size(0), T = x.size(1);
  std::vector<Tensor> uv = tapelm::chunk(silu(to_hidden->forward(x)), 2, -1);
  Tensor z = silu(to_qk->forward(x));  // [B,T,s]
  auto row = [&](const Tensor& p, int64_t i) { return reshape(slice(p, 0, i, i + 1), {qk_dim}); };
  Tensor q = add(mul(z, row(gamma, 0)), row(beta, 0));
  Tensor k = add(mul(z, row(gamma, 1)), row(beta, 1));
  Tensor v = uv[1];
  Tensor pad = ctx.pad_mask.defined() ? ctx.pad_mask : zeros({B, T}, DType::b8);
  if (mixed_chunk) {
    std::vector<Tensor> qk{q, k, add(mul(z, row(gamma, 2)), row(beta, 2)), add(mul(z, row(gamma, 3)), row(beta, 3))};
    Tensor o;
    if (state) {
      o = flash_decode(uv[0], v, qk, pad, ctx.positions, state);
    } else {
      bool aligned = form == RecurrenceForm::chunkwise;  // real tokens at their own index?
      const int32_t* pos = ctx.positions.data<int32_t>();
      for (int64_t i = 0; aligned && i < B * T; ++i) aligned = pad.data<uint8_t>()[i] || pos[i] == i % T;
      o = aligned ? flash_chunked(uv[0], v, qk, pad) : flash_masked(uv[0], v, qk, pad, ctx.positions);
    }
    return to_out->forward(o);
  }
  int64_t past = 0;
  if (state) {  // the whole cache buffer; unused slots are masked
    auto* cache = dynamic_cast<AttentionCache*>(state);
    TAPELM_CHECK(cache, "gau: the decoding state is not an AttentionCache");
    past = cache->length;
    cache->append(k, v, pad);
    k = cache->k, v = cache->v, pad = cache->key_pad;
  }
  const int64_t Tk = k.size(1);
  Tensor scores = mul_scalar(matmul(q, k, false, true), 1.0 / std::sqrt((double)qk_dim));  // [B,T,Tk]
  Tensor a = mul_scalar(square(relu(scores)), 1.0 / (double)n);
  a = masked_fill(a, reshape(attention_mask(B, T, Tk, pad, past), {B, T, Tk}), 0.0);
  return to_out->forward(mul(uv[0], matmul(a, v)));
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
