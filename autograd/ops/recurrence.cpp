// The linear-recurrence core shared by the linear-attention family
// (linear attention, RetNet, gated retention, GLA), Mamba-2 (a scalar decay
// per head and step) and Mamba's non-fused forms (one head per channel, K = N,
// V = 1): per batch and head, a
// state S_t ∈ R^{K×V} that is decayed per key dimension, written, and read:
//
//   S_t = diag(exp g_t) · S_{t−1} + k_t v_tᵀ,      o_t = S_tᵀ q_t          (1)
//
// g_t ≤ 0 is the log-decay: 0 (linear attention), a constant per head
// (RetNet), one value per head and step (gated retention, last dim 1), or a
// vector over the key dimension (GLA). Three forward forms compute (1):
//   recurrent  — the loop itself, O(T·K·V);
//   parallel   — o_t = Σ_{s≤t} (Σ_i q_ti k_si e^{L_ti − L_si}) v_s with
//                L = cumsum(g): the masked "attention" form, O(T²·(K+V));
//   chunkwise  — within a chunk of C steps the parallel form, across chunks
//                the state: linear in T (Yang et al. 2023, GLA, §3).
// Decays are always taken as differences of cumulative sums inside a chunk
// (e^{L_t − L_s} ≤ 1), never as ratios of products, so nothing overflows.
//
// All forms share one backward, the reverse recurrence of (1) with
//   G_t = q_t do_tᵀ + diag(exp g_{t+1}) G_{t+1}      (∂L/∂S_t, incl. the future)
//   dq_t = S_t do_t,  dk_t = G_t v_t,  dv_t = G_tᵀ k_t,
//   dg_t[i] = e^{g_ti} Σ_j G_t[i,j] S_{t−1}[i,j]      (summed over i if g is per head)
// where the states S_t are recomputed chunk by chunk from checkpoints taken
// every `chunk` steps, so memory stays O((T/C)·K·V).
#include <Eigen/Core>
#include <algorithm>
#include <cmath>

#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/ops/recurrence_common.h"
#include "autograd/ops_reference.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {

using namespace detail;

struct Dims {
  int64_t BH, steps, K, V, GK;  // slices, sequence length, widths; GK = K (vector decay) or 1 (per head and step)
};

// One (batch, head) slice of every input, as raw pointers.
template <class T>
struct Slice {
  const T *q, *k, *v, *g;
  T* o;
  T* state;  // K×V initial state in, final state out (may be null)
};

// Slice bh of the inputs; o and state (forward only) may be null.
template <class T>
Slice<T> slice_at(const Dims& d, int64_t bh, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                  Tensor* o = nullptr, Tensor* state = nullptr) {
  return {q.data<T>() + bh * d.steps * d.K,
          k.data<T>() + bh * d.steps * d.K,
          v.data<T>() + bh * d.steps * d.V,
          g.data<T>() + bh * d.steps * d.GK,
          o ? o->data<T>() + bh * d.steps * d.V : nullptr,
          state ? state->data<T>() + bh * d.K * d.V : nullptr};
}

template <class T>
inline T decay_at(const T* g, int64_t t, int64_t i, int64_t GK) {
  return g[t * GK + (GK == 1 ? 0 : i)];
}

// ---- forward forms ---------------------------------------------------------

// One step of (1): S ← diag(exp g_t) S + k_t v_tᵀ.
template <class T, class M>
void advance(const Slice<T>& s, const Dims& d, int64_t t, M& S) {
  for (int64_t i = 0; i < d.K; ++i) S.row(i) *= std::exp(decay_at(s.g, t, i, d.GK));
  S.noalias() += CMapV<T>(s.k + t * d.K, d.K) * CMapV<T>(s.v + t * d.V, d.V).transpose();
}

// The recurrent form's step: advance, then read o_t = S_tᵀ q_t.
template <class T>
void forward_step(const Slice<T>& s, const Dims& d, int64_t t, Mat<T>& S) {
  advance(s, d, t, S);
  Eigen::Map<Vec<T>>(s.o + t * d.V, d.V).noalias() = S.transpose() * CMapV<T>(s.q + t * d.K, d.K);
}

// Positions [t0, t1) as one block: intra-block masked form plus the read of
// the incoming state S; then S advances to the end of the block. With
// t0 = 0, t1 = T this is the parallel form; with blocks of C the chunkwise one.
template <class T>
void forward_block(const Slice<T>& s, const Dims& d, int64_t t0, int64_t t1, Mat<T>& S) {
  const int64_t C = t1 - t0, K = d.K, V = d.V;
  Mat<T> L(C, K);  // cumulative log-decay from the block start, inclusive
  for (int64_t i = 0; i < K; ++i) {
    T acc = 0;
    for (int64_t t = 0; t < C; ++t) L(t, i) = acc += decay_at(s.g, t0 + t, i, d.GK);
  }
  CMapM<T> Q(s.q + t0 * K, C, K), Kb(s.k + t0 * K, C, K), Vb(s.v + t0 * V, C, V);
  MapM<T> O(s.o + t0 * V, C, V);
  // Intra-block scores A[t,u] = Σ_i q_ti k_ui e^{L_ti − L_ui}, u ≤ t.
  Mat<T> A = Mat<T>::Zero(C, C);
  if (d.GK == 1) {
    A.noalias() = Q * Kb.transpose();
    for (int64_t t = 0; t < C; ++t)
      for (int64_t u = 0; u < C; ++u) A(t, u) = u <= t ? A(t, u) * std::exp(L(t, 0) - L(u, 0)) : T(0);
  } else {
    for (int64_t t = 0; t < C; ++t)
      for (int64_t u = 0; u <= t; ++u) {
        T a = 0;
        for (int64_t i = 0; i < K; ++i) a += Q(t, i) * Kb(u, i) * std::exp(L(t, i) - L(u, i));
        A(t, u) = a;
      }
  }
  O.noalias() = A * Vb;
  // Read of the incoming state: (q_t ⊙ e^{L_t})ᵀ S.
  Mat<T> Qd = Q.array() * L.array().exp();
  O.noalias() += Qd * S;
  // Advance: S ← diag(e^{L_last}) S + Σ_u (k_u ⊙ e^{L_last − L_u}) v_uᵀ.
  Mat<T> Kd(C, K);
  for (int64_t t = 0; t < C; ++t)
    for (int64_t i = 0; i < K; ++i) Kd(t, i) = Kb(t, i) * std::exp(L(C - 1, i) - L(t, i));
  for (int64_t i = 0; i < K; ++i) S.row(i) *= std::exp(L(C - 1, i));
  S.noalias() += Kd.transpose() * Vb;
}

int64_t forward_flops(const Dims& d, RecurrenceForm form, int64_t chunk) {
  const int64_t K = d.K, V = d.V, steps = d.steps;
  if (form == RecurrenceForm::recurrent)
    return d.BH * steps * (K * V /*decay*/ + 2 * K * V /*write*/ + 2 * K * V /*read*/);
  const int64_t C = block_length(form, chunk, steps);
  int64_t total = 0;
  for (int64_t t0 = 0; t0 < steps; t0 += C) {
    const int64_t c = std::min(steps, t0 + C) - t0, pairs = c * (c + 1) / 2;
    total += pairs * (d.GK == 1 ? 2 * K + 2 : 4 * K)  // scores with decay
             + pairs * 2 * V                          // A·V
             + 2 * c * K * V                          // read of the state
             + 2 * c * K * V + K * V;                 // advance the state
  }
  return d.BH * total;
}

// ---- backward (shared by all forms) ---------------------------------------

// The backward of one slice: the reverse recurrence above, G = ∂L/∂S_t carried from t+1 down to t.
template <class T>
void backward_slice(const Slice<T>& s, const T* dO, T* dq, T* dk, T* dv, T* dg, const Dims& d, int64_t chunk,
                    ReverseWorkspace<T>& ws) {
  const int64_t K = d.K, V = d.V, steps = d.steps;
  Mat<T> G = Mat<T>::Zero(K, V);  // ∂L/∂S_t, accumulated backwards
  run_reverse<T>(
      K, V, steps, chunk, ws, [&](int64_t t, auto& S) { advance(s, d, t, S); },
      [&](int64_t t, const MapM<T>& S_prev, const MapM<T>& S_t) {
        if (t + 1 < steps)  // the future's gradient reaches S_t through the decay of step t+1
          for (int64_t i = 0; i < K; ++i) G.row(i) *= std::exp(decay_at(s.g, t + 1, i, d.GK));
        CMapV<T> q(s.q + t * K, K), k(s.k + t * K, K), v(s.v + t * V, V), g_out(dO + t * V, V);
        G.noalias() += q * g_out.transpose();
        Eigen::Map<Vec<T>>(dq + t * K, K).noalias() = S_t * g_out;
        Eigen::Map<Vec<T>>(dk + t * K, K).noalias() = G * v;
        Eigen::Map<Vec<T>>(dv + t * V, V).noalias() = G.transpose() * k;
        if (d.GK == 1) {
          dg[t] = std::exp(s.g[t]) * (G.array() * S_prev.array()).sum();
        } else {
          for (int64_t i = 0; i < K; ++i)
            dg[t * K + i] = std::exp(s.g[t * K + i]) * (G.row(i).array() * S_prev.row(i).array()).sum();
        }
      });
}

Dims check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g) {
  const char* op = "gated_recurrence";
  TAPELM_CHECK(q.dim() == 4 && k.shape() == q.shape() && v.dim() == 4 && g.dim() == 4,
               "{}: expects q, k [B,H,T,K], v [B,H,T,V], g [B,H,T,K|1]; got q {}, k {}, v {}, g {}", op, q.str_shape(),
               k.str_shape(), v.str_shape(), g.str_shape());
  TAPELM_CHECK(v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2) && g.size(0) == q.size(0) &&
                   g.size(1) == q.size(1) && g.size(2) == q.size(2) && (g.size(3) == q.size(3) || g.size(3) == 1),
               "{}: shapes do not agree: q {}, k {}, v {}, g {}", op, q.str_shape(), k.str_shape(), v.str_shape(),
               g.str_shape());
  TAPELM_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype() && q.dtype() == g.dtype(), "{}: dtypes differ", op);
  return {q.size(0) * q.size(1), q.size(2), q.size(3), v.size(3), g.size(3)};
}

// On the GPU: the chunkwise and parallel forms run as products of chunks
// (gated_recurrence_chunks; the parallel form is one chunk over the
// sequence); the recurrent form, and any form with a carried state, the
// recurrent kernel (autograd/cuda/recurrence.cu), which books the
// recurrent form's FLOPs, the work it does.
Tensor gated_recurrence_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, Tensor* state,
                             const Dims& d) {
  TAPELM_CHECK(q.dtype() == DType::f32, "gated_recurrence: cuda tensors must be float32, got {}",
               dtype_name(q.dtype()));
  TAPELM_CHECK(cuda::gated_recurrence_supported(d.K), "gated_recurrence: key width {} on cuda (at most 1024)", d.K);
  if (state)
    prepare_state("gated_recurrence", state, {q.size(0), q.size(1), d.K, d.V}, q.dtype(), {q, k, v, g}, Device::cuda);
  const cuda::RecurrenceShape shape{d.BH, d.steps, d.K, d.V, d.GK};
  Tensor o = Tensor::empty({q.size(0), q.size(1), d.steps, d.V}, q.dtype(), Device::cuda);
  cuda::gated_recurrence_forward(q.cuda_data<float>(), k.cuda_data<float>(), v.cuda_data<float>(), g.cuda_data<float>(),
                                 o.cuda_data<float>(), state ? state->cuda_data<float>() : nullptr, shape);
  FlopCounter::add("gated_recurrence", forward_flops(d, RecurrenceForm::recurrent, 1));
  return record("gated_recurrence", o, {q, k, v, g}, [q, k, v, g, d, shape](const Tensor& dO) -> std::vector<Tensor> {
    Tensor dq = Tensor::empty_like(q), dk = Tensor::empty_like(k);
    Tensor dv = Tensor::empty_like(v), dg = Tensor::empty_like(g);
    cuda::gated_recurrence_backward(q.cuda_data<float>(), k.cuda_data<float>(), v.cuda_data<float>(),
                                    g.cuda_data<float>(), dO.cuda_data<float>(), dq.cuda_data<float>(),
                                    dk.cuda_data<float>(), dv.cuda_data<float>(), dg.cuda_data<float>(), shape);
    FlopCounter::add("gated_recurrence", d.BH * d.steps * d.K * d.V * (3 + 12));
    return {dq, dk, dv, dg};
  });
}

}  // namespace

namespace detail {

// The chunkwise form as products of chunks, for the GPU: its tensor cores do
// the work the recurrent kernel does one step at a time (Yang et al. 2023,
// GLA §3; Mamba-2's SSD). Per chunk of C steps with L the cumulative
// log-decay inside it (L_t − L_s ≤ 0 for s ≤ t, so every exp ≤ 1):
//   O = A V + (Q ⊙ e^{L}) S_in,   A_{t,s} = Σ_k q_{t,k} k_{s,k} e^{L_{t,k} − L_{s,k}} (s ≤ t)
//   ΔS = (K ⊙ e^{L_C − L})ᵀ V,   S_in(n) = Σ_{m<n} diag(e^{Λ_{n−1} − Λ_m}) ΔS_m
// with Λ the cumulative sum of the chunks' total decays: the carry between
// chunks is one more product, lower-triangular over the T/C chunks, per
// decay column. A decay per step (g [B,H,T,1]: RetNet, gated retention,
// linear attention, Mamba-2) makes A = (Q Kᵀ) ⊙ e^{L_t − L_s}, a product; a
// decay per key (GLA) computes A exactly with decay_scores. Made of recorded
// ops (their backwards are the gradient). T is padded with zeros to whole
// chunks (a zero key writes nothing, a zero decay keeps the state).
// The products run in fp32 whatever the model's precision: the states, the
// decays and their sums stay float32, as fla and mamba_ssm keep them (see
// kChunkProducts in recurrence_common.h).
Tensor gated_recurrence_chunks(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, int64_t C) {
  const PrecisionScope fp32_products(kChunkProducts);
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), K = q.size(3), V = v.size(3), GK = g.size(3);
  const int64_t N = ceil_div(T, C), Tp = N * C;
  auto padded = [&](const Tensor& x) {
    if (Tp == T) return x;
    return concat({x, zeros({B, H, Tp - T, x.size(3)}, x.dtype(), x.device())}, 2);
  };
  const Tensor Q = reshape(padded(q), {B, H, N, C, K}), Kc = reshape(padded(k), {B, H, N, C, K}),
               Vc = reshape(padded(v), {B, H, N, C, V});
  const Tensor L = cumsum(reshape(padded(g), {B, H, N, C, GK}), -2);  // inclusive, from each chunk's start
  const Tensor scores =
      GK == 1
          ? mul(matmul(Q, Kc, false, true),
                exp(masked_fill(sub(L, reshape(L, {B, H, N, 1, C})), above_diagonal(C, false, q.device()), -INFINITY)))
          : decay_scores(Q, Kc, L);
  const Tensor intra = matmul(scores, Vc);                                     // [B,H,N,C,V]
  const Tensor L_end = slice(L, -2, C - 1, C);                                 // [B,H,N,1,GK]
  const Tensor writes = matmul(mul(Kc, exp(sub(L_end, L))), Vc, true, false);  // ΔS [B,H,N,K,V]
  const Tensor ends = permute(reshape(L_end, {B, H, N, GK}), {0, 1, 3, 2});    // [B,H,GK,N]
  const Tensor Lambda = cumsum(ends, -1), before = sub(Lambda, ends);          // Λ_n, Λ_{n−1}
  const Tensor carry = exp(
      masked_fill(sub(unsqueeze(before, -1), unsqueeze(Lambda, -2)), above_diagonal(N, true, q.device()), -INFINITY));
  // ΔS's rows grouped by their decay column: [B,H,GK,N,(K/GK)·V].
  const Tensor grouped = permute(reshape(writes, {B, H, N, GK, K / GK * V}), {0, 1, 3, 2, 4});
  const Tensor S_in = reshape(permute(matmul(carry, grouped), {0, 1, 3, 2, 4}), {B, H, N, K, V});
  const Tensor inter = matmul(mul(Q, exp(L)), S_in);
  const Tensor o = reshape(add(intra, inter), {B, H, Tp, V});
  return Tp == T ? o : slice(o, 2, 0, T);
}

}  // namespace detail

Tensor gated_recurrence(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, RecurrenceForm form,
                        int64_t chunk, Tensor* state) {
  const Device device = op_device("gated_recurrence", {&q, &k, &v, &g});
  const Dims d = check_inputs(q, k, v, g);
  TAPELM_CHECK(chunk > 0, "gated_recurrence: chunk size must be positive, got {}", chunk);
  if (device == Device::cuda) {
    if (form != RecurrenceForm::recurrent && !state && d.steps > 0)
      return detail::gated_recurrence_chunks(q, k, v, g, std::min(block_length(form, chunk, d.steps), d.steps));
    return gated_recurrence_cuda(q, k, v, g, state, d);
  }
  if (state) prepare_state("gated_recurrence", state, {q.size(0), q.size(1), d.K, d.V}, q.dtype(), {q, k, v, g});
  Tensor o = Tensor::empty({q.size(0), q.size(1), d.steps, d.V}, q.dtype());
  dispatch_float("gated_recurrence", q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    for_each_slice(d.BH, [&](int64_t bh) {
      const Slice<T> s = slice_at<T>(d, bh, q, k, v, g, &o, state);
      run_forward<T>(
          form, chunk, s.state, d.K, d.V, d.steps, [&](int64_t t, Mat<T>& S) { forward_step(s, d, t, S); },
          [&](int64_t t0, int64_t t1, Mat<T>& S) { forward_block(s, d, t0, t1, S); });
    });
  });
  FlopCounter::add("gated_recurrence", forward_flops(d, form, chunk));
  const int64_t bwd_chunk = form == RecurrenceForm::chunkwise ? chunk : 64;
  return record(
      "gated_recurrence", o, {q, k, v, g}, [q, k, v, g, d, bwd_chunk](const Tensor& dO) -> std::vector<Tensor> {
        Tensor dq = Tensor::empty(q.shape(), q.dtype()), dk = Tensor::empty(k.shape(), k.dtype());
        Tensor dv = Tensor::empty(v.shape(), v.dtype()), dg = Tensor::empty(g.shape(), g.dtype());
        dispatch_float("gated_recurrence", q.dtype(), [&](auto tag) {
          using T = decltype(tag);
          for_each_slice(d.BH, [&](int64_t bh) {
            ReverseWorkspace<T> ws;
            backward_slice(slice_at<T>(d, bh, q, k, v, g), dO.data<T>() + bh * d.steps * d.V,
                           dq.data<T>() + bh * d.steps * d.K, dk.data<T>() + bh * d.steps * d.K,
                           dv.data<T>() + bh * d.steps * d.V, dg.data<T>() + bh * d.steps * d.GK, d, bwd_chunk, ws);
          });
        });
        // Recompute pass (3KV per step) + reverse pass (decay KV, G += 2KV, dq/dk/dv 6KV, dg 3KV).
        FlopCounter::add("gated_recurrence", d.BH * d.steps * d.K * d.V * (3 + 12));
        return {dq, dk, dv, dg};
      });
}

Tensor gated_recurrence_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g) {
  const Dims d = check_inputs(q, k, v, g);
  const int64_t B = q.size(0), H = q.size(1);
  Tensor S = zeros({B, H, d.K, d.V}, q.dtype());
  std::vector<Tensor> outs;
  for (int64_t t = 0; t < d.steps; ++t) {
    auto at = [&](const Tensor& x) { return slice(x, 2, t, t + 1); };  // [B,H,1,·]
    Tensor decay = exp(transpose(at(g), 2, 3));                        // [B,H,K|1,1]
    S = add(mul(S, decay), matmul(at(k), at(v), true, false));         // kᵀv: [B,H,K,V]
    outs.push_back(matmul(at(q), S));                                  // [B,H,1,V]
  }
  return concat(outs, 2);
}

int64_t gated_recurrence_flops(int64_t b, int64_t s, int64_t H, int64_t K, int64_t V, RecurrenceForm form,
                               int64_t chunk, std::string* f) {
  if (form == RecurrenceForm::recurrent) {
    *f = fmt::format("4·b·s·H·K·V: read and write of the K×V state per token (H {}, K {}, V {})", H, K, V);
    return 4 * b * s * H * K * V;
  }
  const int64_t C = form == RecurrenceForm::parallel ? s : std::min(chunk, s);
  *f = fmt::format(
      "b·s·H·((C+1)·(K+V) + 4·K·V): causal half of QKᵀ and AV inside chunks of C, "
      "state read and update (H {}, K {}, V {}, C {})",
      H, K, V, C);
  return b * s * H * ((C + 1) * (K + V) + 4 * K * V);
}

}  // namespace tapelm
