// The attention core of GAU and FLASH (Hua et al. 2022, "Transformer Quality
// in Linear Time", §2 and §3), fused. Per row, positions are grouped into
// chunks of chunk_len by position id (FLASH: its group size; chunk_len 0: one
// chunk, GAU). A query at index t, position p_t, reads
//
//   o_t = Σ_{u ≤ t, same chunk} relu(q_t·k_u·scale + b[Δ_tu])² · v_u      (quadratic, §2)
//       + Σ_{u in earlier chunks} (ql_t·kl_u) · norm · v_u                (linear, §3.2)
//
// over keys u that are not padding (a padded position is a query but never a
// key), with Δ_tu = min(p_t − p_u, D − 1) indexing a learned relative-position
// bias b [D] (the FLASH paper's; undefined: none). The linear part reads
// S_c = Σ_{u in chunks before c} kl_u v_uᵀ, so a chunk costs O(m²·(s+e)) for
// its m positions plus O(m·s·e) for S: linear in T. Forms (the same numbers):
//   chunkwise  each chunk at once, S carried across chunks (FLASH's form);
//   recurrent  position by position against the chunk's keys so far (decoding);
//   parallel   one T×T masked score matrix per row, both parts (O(T²)).
// With a state (inference), the keys, values and S of the current chunk carry
// over between calls. Backward (all forms, chunk by chunk in reverse), with
// R = relu(QKᵀ·scale + B) masked, P = R², O = P V + norm·QL S_c:
//   dV = Pᵀ dO + KL dS_{c+1},  dP = dO Vᵀ,  dA = 2·R ⊙ dP,  db[Δ] = Σ_{Δ_tu = Δ} dA_tu,
//   dQ = scale·dA K,  dK = scale·dAᵀ Q,  dQL = norm·dO S_cᵀ,  dKL = V dS_{c+1}ᵀ,
//   dS_c = dS_{c+1} + norm·QLᵀ dO.
#include <Eigen/Core>
#include <algorithm>
#include <cstring>
#include <vector>

#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/ops/recurrence_common.h"
#include "autograd/ops_reference.h"

namespace tapelm {

namespace {

using namespace detail;

struct Dims {
  int64_t B, steps, s, e;  // rows, sequence length, query/key width, value width
  bool linear;             // ql, kl given (FLASH)
  int64_t D;               // length of the relative-position bias (0: none)
  int64_t chunk_len;       // positions per chunk (0: one chunk)
  double scale, norm;
  int64_t chunk_of(int32_t position) const { return chunk_len > 0 ? position / chunk_len : 0; }
};

// One row of every input as raw pointers (bias: the same for every row).
template <class T>
struct Row {
  const T *q, *k, *v, *ql, *kl, *bias;
  const int32_t* pos;
  const uint8_t* pad;
};

// The rows at `index` of a row-major buffer of width w.
template <class T>
Mat<T> gather(const T* p, int64_t w, const std::vector<int64_t>& index) {
  Mat<T> m(index.size(), w);
  for (size_t i = 0; i < index.size(); ++i) m.row(i) = CMapV<T>(p + index[i] * w, w).transpose();
  return m;
}

// Where queries or keys sit: their indices in the call (−1: a key carried
// from an earlier call) and their position ids.
struct Places {
  std::vector<int64_t> index, position;
  void push(int64_t i, int64_t p) { index.push_back(i), position.push_back(p); }
};

// The bias index of a query at position pq reading a key at pk.
inline int64_t distance(const Dims& d, int64_t pq, int64_t pk) { return std::min(pq - pk, d.D - 1); }

// The quadratic scores R = relu(Q Kᵀ·scale + b[Δ]) of queries over keys with
// key index ≤ query index, else 0.
template <class T>
Mat<T> relu_scores(const Mat<T>& Q, const Mat<T>& K, const Places& qs, const Places& ks, const Row<T>& r,
                   const Dims& d) {
  Mat<T> R = (Q * K.transpose()) * T(d.scale);
  for (int64_t i = 0; i < R.rows(); ++i)
    for (int64_t j = 0; j < R.cols(); ++j) {
      if (ks.index[j] > qs.index[i]) {
        R(i, j) = 0;
        continue;
      }
      if (d.D > 0) R(i, j) += r.bias[distance(d, qs.position[i], ks.position[j])];
      R(i, j) = std::max(R(i, j), T(0));
    }
  return R;
}

// The running context of a row: S over finished chunks, and the real keys of
// the current chunk (k, kl, v and their places).
template <class T>
struct Context {
  Mat<T> S, K, KL, V;
  Places keys;
  int64_t chunk = -1;
};

// Indices [p0, p1), all of one chunk, as a block against the context.
template <class T>
int64_t forward_block(const Row<T>& r, const Dims& d, int64_t p0, int64_t p1, Context<T>& ctx, T* out) {
  const int64_t c = d.chunk_of(r.pos[p0]);
  int64_t flops = 0;
  if (c != ctx.chunk) {  // a new chunk: fold the finished one into S
    if (d.linear && ctx.K.rows() > 0) {
      ctx.S.noalias() += ctx.KL.transpose() * ctx.V;
      flops += 2 * ctx.K.rows() * d.s * d.e;
    }
    ctx.K.resize(0, d.s), ctx.KL.resize(0, d.s), ctx.V.resize(0, d.e), ctx.keys = {};
    ctx.chunk = c;
  }
  Places qs;
  std::vector<int64_t> keys;
  for (int64_t p = p0; p < p1; ++p) {
    qs.push(p, r.pos[p]);
    if (!r.pad[p]) keys.push_back(p), ctx.keys.push(p, r.pos[p]);
  }
  const int64_t n0 = ctx.K.rows(), m = keys.size();
  auto append = [&](Mat<T>& buf, const T* src, int64_t w) {
    buf.conservativeResize(n0 + m, w);
    for (int64_t i = 0; i < m; ++i) buf.row(n0 + i) = CMapV<T>(src + keys[i] * w, w).transpose();
  };
  append(ctx.K, r.k, d.s);
  append(ctx.V, r.v, d.e);
  if (d.linear) append(ctx.KL, r.kl, d.s);
  const Mat<T> R = relu_scores(gather(r.q, d.s, qs.index), ctx.K, qs, ctx.keys, r, d);
  MapM<T> O(out + p0 * d.e, p1 - p0, d.e);
  O.noalias() = R.array().square().matrix() * ctx.V;
  const int64_t nq = p1 - p0, nk = ctx.K.rows();
  flops += 2 * nq * nk * (d.s + d.e) + 4 * nq * nk;
  if (d.linear) {
    O.noalias() += (gather(r.ql, d.s, qs.index) * ctx.S) * T(d.norm);
    flops += 2 * nq * d.s * d.e;
  }
  return flops;
}

// The parallel form of one row: every part as T×T masked scores.
template <class T>
int64_t forward_parallel(const Row<T>& r, const Dims& d, T* out) {
  Places qs, ks;
  for (int64_t p = 0; p < d.steps; ++p) {
    qs.push(p, r.pos[p]);
    if (!r.pad[p]) ks.push(p, r.pos[p]);
  }
  const Mat<T> K = gather(r.k, d.s, ks.index), V = gather(r.v, d.e, ks.index);
  Mat<T> A = relu_scores(CMapM<T>(r.q, d.steps, d.s).eval(), K, qs, ks, r, d).array().square();
  Mat<T> L = d.linear ? Mat<T>((CMapM<T>(r.ql, d.steps, d.s) * gather(r.kl, d.s, ks.index).transpose()) * T(d.norm))
                      : Mat<T>::Zero(d.steps, ks.index.size());
  for (int64_t t = 0; t < d.steps; ++t)
    for (size_t j = 0; j < ks.index.size(); ++j) {
      const int64_t ct = d.chunk_of(r.pos[t]), cu = d.chunk_of(ks.position[j]);
      if (cu != ct) A(t, j) = 0;
      if (d.linear && cu < ct) A(t, j) += L(t, j);
    }
  MapM<T>(out, d.steps, d.e).noalias() = A * V;
  const int64_t n = ks.index.size();
  return 2 * d.steps * n * (d.s + d.e) + (d.linear ? 2 * d.steps * n * d.s : 0) + 5 * d.steps * n;
}

// The backward of one row, chunk by chunk in reverse (see the header); adds
// the bias gradient into db [D].
template <class T>
int64_t backward_row(const Row<T>& r, const Dims& d, const T* dO, T* dq, T* dk, T* dv, T* dql, T* dkl, T* db) {
  // Chunks are contiguous index ranges; S entering each one.
  std::vector<std::pair<int64_t, int64_t>> chunks;
  for (int64_t p = 0; p < d.steps; ++p)
    if (p == 0 || d.chunk_of(r.pos[p]) != d.chunk_of(r.pos[p - 1]))
      chunks.push_back({p, p + 1});
    else
      chunks.back().second = p + 1;
  std::vector<Places> keys(chunks.size());
  std::vector<Mat<T>> entry(chunks.size(), Mat<T>::Zero(d.linear ? d.s : 0, d.linear ? d.e : 0));
  Mat<T> S = Mat<T>::Zero(d.linear ? d.s : 0, d.linear ? d.e : 0);
  for (size_t c = 0; c < chunks.size(); ++c) {
    for (int64_t p = chunks[c].first; p < chunks[c].second; ++p)
      if (!r.pad[p]) keys[c].push(p, r.pos[p]);
    if (!d.linear) continue;
    entry[c] = S;
    S.noalias() += gather(r.kl, d.s, keys[c].index).transpose() * gather(r.v, d.e, keys[c].index);
  }
  int64_t flops = 0;
  Mat<T> dS = Mat<T>::Zero(S.rows(), S.cols());  // ∂L/∂S entering the chunk after this one
  for (int64_t c = (int64_t)chunks.size() - 1; c >= 0; --c) {
    const auto [a, b] = chunks[c];
    Places qs;
    for (int64_t p = a; p < b; ++p) qs.push(p, r.pos[p]);
    const std::vector<int64_t>& kp = keys[c].index;
    const int64_t nq = b - a, nk = kp.size();
    const Mat<T> Q = CMapM<T>(r.q + a * d.s, nq, d.s), K = gather(r.k, d.s, kp), V = gather(r.v, d.e, kp);
    const Mat<T> G = CMapM<T>(dO + a * d.e, nq, d.e);
    const Mat<T> R = relu_scores(Q, K, qs, keys[c], r, d);
    Mat<T> dV = R.array().square().matrix().transpose() * G;
    const Mat<T> dA = (G * V.transpose()).array() * R.array() * T(2);
    MapM<T>(dq + a * d.s, nq, d.s).noalias() = (dA * K) * T(d.scale);
    Mat<T> dK = (dA.transpose() * Q) * T(d.scale);
    flops += 2 * nq * nk * (2 * d.e + 2 * d.s) + 4 * nq * nk;
    if (d.D > 0) {
      for (int64_t i = 0; i < nq; ++i)  // causal pairs only: a later key's distance is negative
        for (int64_t j = 0; j < nk && kp[j] <= qs.index[i]; ++j)
          db[distance(d, qs.position[i], keys[c].position[j])] += dA(i, j);
      flops += nq * nk;
    }
    Mat<T> dKL;
    if (d.linear) {
      const Mat<T> KL = gather(r.kl, d.s, kp);
      dV.noalias() += KL * dS;
      dKL = V * dS.transpose();
      MapM<T>(dql + a * d.s, nq, d.s).noalias() = (G * entry[c].transpose()) * T(d.norm);
      dS.noalias() += (CMapM<T>(r.ql + a * d.s, nq, d.s).transpose() * G) * T(d.norm);
      flops += 8 * std::max(nq, nk) * d.s * d.e;
    }
    for (int64_t i = 0; i < nk; ++i) {
      Eigen::Map<Vec<T>>(dk + kp[i] * d.s, d.s) = dK.row(i).transpose();
      Eigen::Map<Vec<T>>(dv + kp[i] * d.e, d.e) = dV.row(i).transpose();
      if (d.linear) Eigen::Map<Vec<T>>(dkl + kp[i] * d.s, d.s) = dKL.row(i).transpose();
    }
  }
  return flops;
}

Dims check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& ql, const Tensor& kl,
                  const Tensor& bias, const Tensor& position, const Tensor& key_pad, int64_t chunk_len, double scale,
                  double norm) {
  const char* op = "gau_attention";
  TAPELM_CHECK(
      q.dim() == 3 && k.shape() == q.shape() && v.dim() == 3 && v.size(0) == q.size(0) && v.size(1) == q.size(1),
      "{}: expects q, k [B,T,s], v [B,T,e]; got q {}, k {}, v {}", op, q.str_shape(), k.str_shape(), v.str_shape());
  TAPELM_CHECK(ql.defined() == kl.defined() && (!ql.defined() || (ql.shape() == q.shape() && kl.shape() == q.shape())),
               "{}: ql and kl must both be [B,T,s] {} or both undefined; got ql {}, kl {}", op, q.str_shape(),
               ql.defined() ? ql.str_shape() : "undefined", kl.defined() ? kl.str_shape() : "undefined");
  TAPELM_CHECK(!bias.defined() || (bias.dim() == 1 && bias.numel() > 0),
               "{}: the relative-position bias must be a non-empty vector [D], got {}", op, bias.str_shape());
  const Shape bt{q.size(0), q.size(1)};
  TAPELM_CHECK(
      position.dtype() == DType::i32 && position.shape() == bt && key_pad.dtype() == DType::b8 && key_pad.shape() == bt,
      "{}: expects position int32 and key_pad bool [B,T] {}; got {} {} and {} {}", op, shape_str(bt),
      dtype_name(position.dtype()), position.str_shape(), dtype_name(key_pad.dtype()), key_pad.str_shape());
  TAPELM_CHECK(chunk_len >= 0, "{}: chunk length {} is negative", op, chunk_len);
  for (const Tensor* t : {&k, &v, &ql, &kl, &bias})
    TAPELM_CHECK(!t->defined() || t->dtype() == q.dtype(), "{}: dtypes differ", op);
  const int32_t* p = position.data<int32_t>();
  for (int64_t i = 0; i < position.numel(); ++i)
    TAPELM_CHECK(p[i] >= 0 && (i % q.size(1) == 0 || p[i] >= p[i - 1]),
                 "{}: positions must be non-negative and non-decreasing along each row", op);
  return {q.size(0), q.size(1), q.size(2), v.size(2), ql.defined(), bias.defined() ? bias.numel() : 0,
          chunk_len, scale,     norm};
}

template <class T>
Row<T> row_of(const Dims& d, int64_t b, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& ql,
              const Tensor& kl, const Tensor& bias, const Tensor& position, const Tensor& key_pad) {
  return {q.data<T>() + b * d.steps * d.s,
          k.data<T>() + b * d.steps * d.s,
          v.data<T>() + b * d.steps * d.e,
          d.linear ? ql.data<T>() + b * d.steps * d.s : nullptr,
          d.linear ? kl.data<T>() + b * d.steps * d.s : nullptr,
          d.D > 0 ? bias.data<T>() : nullptr,
          position.data<int32_t>() + b * d.steps,
          key_pad.data<uint8_t>() + b * d.steps};
}

}  // namespace

int64_t GauAttentionState::bytes() const {
  int64_t n = 0;
  for (const auto* list : {&S, &keys, &linear_keys, &values, &key_positions})
    for (const Tensor& t : *list) n += t.nbytes();
  return n;
}

Tensor gau_attention(const GauAttentionInputs& in, RecurrenceForm form, GauAttentionState* state) {
  if (op_device("gau_attention", {&in.q, &in.k, &in.v, &in.ql, &in.kl, &in.bias}) == Device::cuda) {
    // The carried state stays on the host, where the fallback runs.
    return cpu_fallback("gau_attention", {in.q, in.k, in.v, in.ql, in.kl, in.bias, in.position, in.key_pad},
                        [&](const std::vector<Tensor>& c) {
                          GauAttentionInputs h = in;
                          h.q = c[0], h.k = c[1], h.v = c[2], h.ql = c[3], h.kl = c[4], h.bias = c[5],
                          h.position = c[6], h.key_pad = c[7];
                          return gau_attention(h, form, state);
                        });
  }

  const Tensor &q = in.q, &k = in.k, &v = in.v, &ql = in.ql, &kl = in.kl, &bias = in.bias, &position = in.position,
               &key_pad = in.key_pad;
  const int64_t chunk_len = in.chunk_len;
  const double scale = in.scale, norm = in.norm;
  const Dims d = check_inputs(q, k, v, ql, kl, bias, position, key_pad, chunk_len, scale, norm);
  if (state) {
    bool any_grad = false;
    for (const Tensor* t : {&q, &k, &v, &ql, &kl, &bias}) any_grad = any_grad || (t->defined() && t->requires_grad());
    TAPELM_CHECK(!grad_enabled() || !any_grad,
                 "gau_attention: a carried state is for inference; run it under NoGradGuard");
    if (state->chunk.empty()) {
      state->chunk.assign(d.B, -1);
      for (auto* list : {&state->S, &state->keys, &state->linear_keys, &state->values, &state->key_positions})
        list->resize(d.B);
    }
    TAPELM_CHECK((int64_t)state->chunk.size() == d.B, "gau_attention: the state is for batch {}, got {}",
                 state->chunk.size(), d.B);
  }
  Tensor o = zeros({d.B, d.steps, d.e}, q.dtype());
  std::vector<int64_t> row_flops(d.B, 0);
  dispatch_float("gau_attention", q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    for_each_slice(d.B, [&](int64_t b) {
      const Row<T> r = row_of<T>(d, b, q, k, v, ql, kl, bias, position, key_pad);
      T* out = o.data<T>() + b * d.steps * d.e;
      if (form == RecurrenceForm::parallel && !state) {
        row_flops[b] = forward_parallel(r, d, out);
        return;
      }
      Context<T> ctx;
      ctx.S = Mat<T>::Zero(d.linear ? d.s : 0, d.linear ? d.e : 0);
      ctx.K.resize(0, d.s), ctx.KL.resize(0, d.s), ctx.V.resize(0, d.e);
      auto load = [&](const Tensor& t, Mat<T>& m, int64_t w) {
        if (t.defined()) m = CMapM<T>(t.data<T>(), t.numel() / w, w);
      };
      if (state) {
        load(state->S[b], ctx.S, std::max<int64_t>(d.e, 1));
        load(state->keys[b], ctx.K, d.s), load(state->linear_keys[b], ctx.KL, d.s), load(state->values[b], ctx.V, d.e);
        if (state->key_positions[b].defined())
          for (int64_t i = 0; i < state->key_positions[b].numel(); ++i)
            ctx.keys.push(-1, state->key_positions[b].data<int32_t>()[i]);
        ctx.chunk = state->chunk[b];
        TAPELM_CHECK(d.steps == 0 || d.chunk_of(r.pos[0]) >= ctx.chunk,
                     "gau_attention: positions go back past the state's");
      }
      for (int64_t p0 = 0; p0 < d.steps;) {
        int64_t p1 = p0 + 1;
        if (form != RecurrenceForm::recurrent)
          while (p1 < d.steps && d.chunk_of(r.pos[p1]) == d.chunk_of(r.pos[p0])) ++p1;
        row_flops[b] += forward_block(r, d, p0, p1, ctx, out);
        p0 = p1;
      }
      if (state) {
        auto save = [&](const Mat<T>& m, Tensor& t) {
          t = Tensor::empty({m.rows(), m.cols()}, q.dtype());
          if (m.size()) std::memcpy(t.data<T>(), m.data(), m.size() * sizeof(T));
        };
        save(ctx.S, state->S[b]), save(ctx.K, state->keys[b]), save(ctx.KL, state->linear_keys[b]);
        save(ctx.V, state->values[b]);
        Tensor& kp = state->key_positions[b];
        kp = Tensor::empty({(int64_t)ctx.keys.position.size()}, DType::i32);
        for (size_t i = 0; i < ctx.keys.position.size(); ++i) kp.data<int32_t>()[i] = (int32_t)ctx.keys.position[i];
        state->chunk[b] = ctx.chunk;
      }
    });
  });
  int64_t flops = 0;
  for (int64_t f : row_flops) flops += f;
  FlopCounter::add("gau_attention", flops);
  return record("gau_attention", o, {q, k, v, ql, kl, bias}, [=](const Tensor& dO) -> std::vector<Tensor> {
    Tensor dq = zeros(q.shape(), q.dtype()), dk = zeros(k.shape(), k.dtype()), dv = zeros(v.shape(), v.dtype());
    Tensor dql = d.linear ? zeros(q.shape(), q.dtype()) : Tensor(),
           dkl = d.linear ? zeros(q.shape(), q.dtype()) : Tensor();
    Tensor db_rows = d.D > 0 ? zeros({d.B, d.D}, q.dtype()) : Tensor();  // one slot per row, summed in row order
    std::vector<int64_t> bwd_flops(d.B, 0);
    dispatch_float("gau_attention", q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      for_each_slice(d.B, [&](int64_t b) {
        const int64_t qs = b * d.steps * d.s;
        bwd_flops[b] =
            backward_row(row_of<T>(d, b, q, k, v, ql, kl, bias, position, key_pad), d, dO.data<T>() + b * d.steps * d.e,
                         dq.data<T>() + qs, dk.data<T>() + qs, dv.data<T>() + b * d.steps * d.e,
                         d.linear ? dql.data<T>() + qs : nullptr, d.linear ? dkl.data<T>() + qs : nullptr,
                         d.D > 0 ? db_rows.data<T>() + b * d.D : nullptr);
      });
    });
    int64_t total = 0;
    for (int64_t f : bwd_flops) total += f;
    FlopCounter::add("gau_attention", total);
    return {dq, dk, dv, dql, dkl, d.D > 0 ? sum(db_rows, {0}) : Tensor()};
  });
}

Tensor gau_attention_reference(const GauAttentionInputs& in) {
  const Tensor &q = in.q, &k = in.k, &v = in.v, &ql = in.ql, &kl = in.kl, &bias = in.bias, &position = in.position,
               &key_pad = in.key_pad;
  const int64_t chunk_len = in.chunk_len;
  const double scale = in.scale, norm = in.norm;
  const Dims d = check_inputs(q, k, v, ql, kl, bias, position, key_pad, chunk_len, scale, norm);
  Tensor quad_mask = Tensor::empty({d.B, d.steps, d.steps}, DType::b8),
         lin_mask = Tensor::empty({d.B, d.steps, d.steps}, DType::b8),
         bias_index = zeros({d.B, d.steps, d.steps}, DType::i32);
  const int32_t* p = position.data<int32_t>();
  const uint8_t* pad = key_pad.data<uint8_t>();
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t t = 0; t < d.steps; ++t)
      for (int64_t u = 0; u < d.steps; ++u) {
        const int64_t pt = p[b * d.steps + t], pu = p[b * d.steps + u], ct = d.chunk_of(pt), cu = d.chunk_of(pu);
        const bool key = !pad[b * d.steps + u], quad = key && u <= t && cu == ct;
        const int64_t at = (b * d.steps + t) * d.steps + u;
        quad_mask.data<uint8_t>()[at] = !quad;
        lin_mask.data<uint8_t>()[at] = !(key && cu < ct);
        if (quad && d.D > 0) bias_index.data<int32_t>()[at] = (int32_t)distance(d, pt, pu);
      }
  Tensor scores = mul_scalar(matmul(q, k, false, true), scale);
  if (d.D > 0) scores = add(scores, reshape(embedding(reshape(bias, {d.D, 1}), bias_index), {d.B, d.steps, d.steps}));
  Tensor a = masked_fill(square(relu(scores)), quad_mask, 0.0);
  if (d.linear) a = add(a, masked_fill(mul_scalar(matmul(ql, kl, false, true), norm), lin_mask, 0.0));
  return matmul(a, v);
}

}  // namespace tapelm
