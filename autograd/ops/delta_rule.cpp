// The delta-rule core of DeltaNet (Schlag et al. 2021; Yang et al. 2024) and
// Gated DeltaNet (Yang et al. 2024b): per batch and head, a state S ∈ R^{K×V}
// from which the value stored at key k_t is erased before v_t is written:
//
//   S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,   o_t = S_tᵀ q_t      (1)
//
// with α_t = exp(g_t) (g = 0: plain DeltaNet). Equivalently S_t = α_t S_{t−1} +
// k_t u_tᵀ with pseudo-values u_t = β_t (v_t − α_t S_{t−1}ᵀ k_t).
// Forms:
//   recurrent  — (1) step by step;
//   chunkwise  — the WY/UT representation: within a chunk with incoming state
//                S₀ and cumulative log-decay L (γ_t = e^{L_t}), U solves the unit
//                lower-triangular system
//                  (I + diag(β) M) U = diag(β) (V − diag(γ) K S₀),
//                  M_ti = e^{L_t − L_i} k_t·k_i for i < t,
//                then O = diag(γ) Q S₀ + (QKᵀ ⊙ D)_{i≤t} U, D_ti = e^{L_t − L_i},
//                and S_C = γ_C S₀ + (K ⊙ e^{L_C − L})ᵀ U;
//   parallel   — the same with one chunk spanning the sequence.
// Backward (shared, exact): with P_t = α_t (I − β_t k_t k_tᵀ) (symmetric),
//   G_t = q_t do_tᵀ + P_{t+1} G_{t+1}
//   dq_t = S_t do_t,  dv_t = β_t Gᵀ k_t,
//   dβ_t = (Gᵀ k_t)·(v_t − α_t S_{t−1}ᵀ k_t),
//   dα_t = ⟨G, S_{t−1}⟩ − β_t (Gᵀ k_t)·(S_{t−1}ᵀ k_t),  dg_t = α_t dα_t,
//   dk_t = β_t G v_t − α_t β_t (G S_{t−1}ᵀ k_t + S_{t−1} Gᵀ k_t),
// states recomputed chunk by chunk from checkpoints.
#include <Eigen/Core>
#include <Eigen/Dense>
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
  int64_t BH, steps, K, V;  // slices (batch × heads), sequence length, key and value widths
};

template <class T>
struct Slice {
  const T *q, *k, *v, *beta, *g;
  T* o;
  T* state;
};

// Slice bh of the inputs; o and state (forward only) may be null.
template <class T>
Slice<T> slice_at(const Dims& d, int64_t bh, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta,
                  const Tensor& g, Tensor* o = nullptr, Tensor* state = nullptr) {
  return {q.data<T>() + bh * d.steps * d.K,
          k.data<T>() + bh * d.steps * d.K,
          v.data<T>() + bh * d.steps * d.V,
          beta.data<T>() + bh * d.steps,
          g.data<T>() + bh * d.steps,
          o ? o->data<T>() + bh * d.steps * d.V : nullptr,
          state ? state->data<T>() + bh * d.K * d.V : nullptr};
}

// One step of (1) on S.
template <class T, class M>
void delta_step(M& S, const T* k, const T* v, T beta, T alpha, int64_t K, int64_t V) {
  CMapV<T> kk(k, K), vv(v, V);
  Vec<T> u = beta * (vv - alpha * (S.transpose() * kk));
  S *= alpha;
  S.noalias() += kk * u.transpose();
}

// The recurrent form's step: (1), then read o_t = S_tᵀ q_t.
template <class T>
void forward_step(const Slice<T>& s, const Dims& d, int64_t t, Mat<T>& S) {
  delta_step(S, s.k + t * d.K, s.v + t * d.V, s.beta[t], std::exp(s.g[t]), d.K, d.V);
  Eigen::Map<Vec<T>>(s.o + t * d.V, d.V).noalias() = S.transpose() * CMapV<T>(s.q + t * d.K, d.K);
}

template <class T>
void forward_chunk(const Slice<T>& s, const Dims& d, int64_t t0, int64_t t1, Mat<T>& S) {
  const int64_t C = t1 - t0, K = d.K, V = d.V;
  CMapM<T> Q(s.q + t0 * K, C, K), Kc(s.k + t0 * K, C, K), Vc(s.v + t0 * V, C, V);
  Vec<T> L(C);
  T acc = 0;
  for (int64_t t = 0; t < C; ++t) L(t) = acc += s.g[t0 + t];
  Mat<T> KK = Kc * Kc.transpose(), QK = Q * Kc.transpose();
  Mat<T> A = Mat<T>::Identity(C, C), Dqk = Mat<T>::Zero(C, C);
  for (int64_t t = 0; t < C; ++t)
    for (int64_t i = 0; i <= t; ++i) {
      const T decay = std::exp(L(t) - L(i));
      if (i < t) A(t, i) = s.beta[t0 + t] * decay * KK(t, i);
      Dqk(t, i) = decay * QK(t, i);
    }
  Vec<T> gamma = L.array().exp();
  Mat<T> U = Vc - gamma.asDiagonal() * (Kc * S);  // right-hand side, then β row scaling
  for (int64_t t = 0; t < C; ++t) U.row(t) *= s.beta[t0 + t];
  A.template triangularView<Eigen::UnitLower>().solveInPlace(U);
  MapM<T> O(s.o + t0 * V, C, V);
  O.noalias() = gamma.asDiagonal() * (Q * S);
  O.noalias() += Dqk * U;
  Mat<T> Kd = (Kc.array().colwise() * (L(C - 1) - L.array()).exp()).matrix();
  S *= gamma(C - 1);
  S.noalias() += Kd.transpose() * U;
}

int64_t forward_flops(const Dims& d, RecurrenceForm form, int64_t chunk) {
  const int64_t K = d.K, V = d.V;
  if (form == RecurrenceForm::recurrent) return d.BH * d.steps * (2 * K * V + 3 * V + K * V + 2 * K * V + 2 * K * V);
  const int64_t C = block_length(form, chunk, d.steps);
  int64_t total = 0;
  for (int64_t t0 = 0; t0 < d.steps; t0 += C) {
    const int64_t c = std::min(d.steps, t0 + C) - t0;
    total += 2 * c * c * K * 2                // K Kᵀ and Q Kᵀ
             + 2 * c * K * V + c * V          // right-hand side
             + c * c * V                      // triangular solve
             + 2 * c * K * V + 2 * c * c * V  // output
             + 2 * c * K * V + K * V;         // state
  }
  return d.BH * total;
}

// The backward of one slice: the reverse recurrence above, G = ∂L/∂S_t carried from t+1 down to t.
template <class T>
void backward_slice(const Slice<T>& s, const T* dO, T* dq, T* dk, T* dv, T* dbeta, T* dg, const Dims& d, int64_t chunk,
                    ReverseWorkspace<T>& ws) {
  const int64_t K = d.K, V = d.V, steps = d.steps;
  Mat<T> G = Mat<T>::Zero(K, V);
  run_reverse<T>(
      K, V, steps, chunk, ws,
      [&](int64_t t, auto& S) { delta_step(S, s.k + t * K, s.v + t * V, s.beta[t], std::exp(s.g[t]), K, V); },
      [&](int64_t t, const MapM<T>& Sp, const MapM<T>& S_t) {
        if (t + 1 < steps) {  // G ← P_{t+1} G = α (G − β k (kᵀ G))
          CMapV<T> kn(s.k + (t + 1) * K, K);
          const T an = std::exp(s.g[t + 1]), bn = s.beta[t + 1];
          Vec<T> kG = G.transpose() * kn;
          G.noalias() -= bn * kn * kG.transpose();
          G *= an;
        }
        CMapV<T> q(s.q + t * K, K), k(s.k + t * K, K), v(s.v + t * V, V), g_out(dO + t * V, V);
        G.noalias() += q * g_out.transpose();
        const T alpha = std::exp(s.g[t]), beta = s.beta[t];
        Vec<T> Gk = G.transpose() * k;    // Gᵀk  [V]
        Vec<T> Spk = Sp.transpose() * k;  // S_{t−1}ᵀk  [V]
        Eigen::Map<Vec<T>>(dq + t * K, K).noalias() = S_t * g_out;
        Eigen::Map<Vec<T>>(dv + t * V, V) = beta * Gk;
        dbeta[t] = Gk.dot(v - alpha * Spk);
        dg[t] = alpha * ((G.array() * Sp.array()).sum() - beta * Gk.dot(Spk));
        Eigen::Map<Vec<T>>(dk + t * K, K) = beta * (G * v) - alpha * beta * (G * Spk + Sp * Gk);
      });
}

Dims check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, const Tensor& g) {
  const char* op = "delta_rule";
  TAPELM_CHECK(q.dim() == 4 && k.shape() == q.shape() && v.dim() == 4 && beta.dim() == 4 && g.dim() == 4,
               "{}: expects q, k [B,H,T,K], v [B,H,T,V], beta, g [B,H,T,1]; got q {}, k {}, v {}, beta {}, g {}", op,
               q.str_shape(), k.str_shape(), v.str_shape(), beta.str_shape(), g.str_shape());
  const Shape per_step{q.size(0), q.size(1), q.size(2), 1};
  TAPELM_CHECK(v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2) && beta.shape() == per_step &&
                   g.shape() == per_step,
               "{}: shapes do not agree: q {}, v {}, beta {}, g {}", op, q.str_shape(), v.str_shape(), beta.str_shape(),
               g.str_shape());
  TAPELM_CHECK(q.dtype() == k.dtype() && q.dtype() == v.dtype() && q.dtype() == beta.dtype() && q.dtype() == g.dtype(),
               "{}: dtypes differ", op);
  return {q.size(0) * q.size(1), q.size(2), q.size(3), v.size(3)};
}

// The recurrent kernel on the GPU (autograd/cuda/delta_rule.cu): the
// recurrent form and decoding run it (the other forms run delta_rule_chunks)
// and it books the recurrent form's FLOPs, the work it does.
Tensor delta_rule_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, const Tensor& g,
                       Tensor* state, const Dims& d) {
  TAPELM_CHECK(q.dtype() == DType::f32, "delta_rule: cuda tensors must be float32, got {}", dtype_name(q.dtype()));
  TAPELM_CHECK(cuda::gated_recurrence_supported(d.K), "delta_rule: key width {} on cuda (at most 1024)", d.K);
  if (state)
    prepare_state("delta_rule", state, {q.size(0), q.size(1), d.K, d.V}, q.dtype(), {q, k, v, beta, g}, Device::cuda);
  const cuda::RecurrenceShape shape{d.BH, d.steps, d.K, d.V, 1};
  Tensor o = Tensor::empty({q.size(0), q.size(1), d.steps, d.V}, q.dtype(), Device::cuda);
  cuda::delta_rule_forward(q.cuda_data<float>(), k.cuda_data<float>(), v.cuda_data<float>(), beta.cuda_data<float>(),
                           g.cuda_data<float>(), o.cuda_data<float>(), state ? state->cuda_data<float>() : nullptr,
                           shape);
  FlopCounter::add("delta_rule", forward_flops(d, RecurrenceForm::recurrent, 1));
  return record("delta_rule", o, {q, k, v, beta, g}, [q, k, v, beta, g, d, shape](const Tensor& dO) {
    Tensor dq = Tensor::empty_like(q), dk = Tensor::empty_like(k), dv = Tensor::empty_like(v),
           db = Tensor::empty_like(beta), dg = Tensor::empty_like(g);
    cuda::delta_rule_backward(q.cuda_data<float>(), k.cuda_data<float>(), v.cuda_data<float>(), beta.cuda_data<float>(),
                              g.cuda_data<float>(), dO.cuda_data<float>(), dq.cuda_data<float>(), dk.cuda_data<float>(),
                              dv.cuda_data<float>(), db.cuda_data<float>(), dg.cuda_data<float>(), shape);
    FlopCounter::add("delta_rule", d.BH * d.steps * d.K * d.V * 26);
    return std::vector<Tensor>{dq, dk, dv, db, dg};
  });
}

}  // namespace

namespace detail {

// The chunkwise form above as products of chunks, for the GPU (Yang et al.
// 2024, §3; fla's chunk_delta_rule). Per chunk, with the UT transform
// X = (I + diag(β) M)⁻¹ (unit_tril_inverse), γ = e^{L}, K̃ = K ⊙ e^{L_C − L}:
//   W = X (βγ ⊙ K),   U_v = X (β ⊙ V)                         (chunk-local)
//   S_{n+1} = P_n S_n + R_n,   P_n = γ_C I − K̃ᵀ W,   R_n = K̃ᵀ U_v
//   U = U_v − W S_n,   O = (γ ⊙ Q) S_n + ((Q Kᵀ) ⊙ D)_{s≤t} U,   D_ts = e^{L_t − L_s}
// Only the K×K carry S_{n+1} = P_n S_n + R_n runs chunk after chunk; the
// rest is batched over every chunk. Made of recorded ops (their backwards
// are the gradient). T is padded with zeros to whole chunks (β = 0 and k = 0
// write nothing, g = 0 keeps the state). The products run in fp32 whatever
// the model's precision (kChunkProducts in recurrence_common.h).
Tensor delta_rule_chunks(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, const Tensor& g,
                         int64_t C) {
  const PrecisionScope fp32_products(kChunkProducts);
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), K = q.size(3), V = v.size(3);
  const int64_t N = ceil_div(T, C), Tp = N * C;
  auto chunked = [&](const Tensor& x) {
    const Tensor p = Tp == T ? x : concat({x, zeros({B, H, Tp - T, x.size(3)}, x.dtype(), x.device())}, 2);
    return reshape(p, {B, H, N, C, x.size(3)});
  };
  const Tensor Q = chunked(q), Kc = chunked(k), Vc = chunked(v), b = chunked(beta);
  const Tensor L = cumsum(chunked(g), -2);  // [B,H,N,C,1], inclusive, from each chunk's start
  const Tensor decay =
      exp(masked_fill(sub(L, reshape(L, {B, H, N, 1, C})), above_diagonal(C, false, q.device()), -INFINITY));
  const Tensor X = unit_tril_inverse(mul(b, mul(matmul(Kc, Kc, false, true), decay)));  // reads s < t only
  const Tensor gamma = exp(L);
  const Tensor W = matmul(X, mul(mul(b, gamma), Kc)), Uv = matmul(X, mul(b, Vc));
  const Tensor L_end = slice(L, -2, C - 1, C);    // [B,H,N,1,1]
  const Tensor Kt = mul(Kc, exp(sub(L_end, L)));  // K̃
  Tensor eye = Tensor::empty({K, K}, DType::f64);
  for (int64_t i = 0; i < K * K; ++i) eye.data<double>()[i] = i % (K + 1) == 0;
  const Tensor P = sub(mul(exp(L_end), eye.to(q.dtype()).to(q.device())), matmul(Kt, W, true, false));  // [B,H,N,K,K]
  const Tensor R = matmul(Kt, Uv, true, false);                                                         // [B,H,N,K,V]
  std::vector<Tensor> S{zeros({B, H, 1, K, V}, q.dtype(), q.device())};  // S_0 = 0, so S_1 = R_0
  for (int64_t n = 1; n < N; ++n)
    S.push_back(n == 1 ? slice(R, 2, 0, 1) : add(matmul(slice(P, 2, n - 1, n), S.back()), slice(R, 2, n - 1, n)));
  const Tensor S_in = N == 1 ? S[0] : concat(S, 2);  // [B,H,N,K,V], the state entering each chunk
  const Tensor U = sub(Uv, matmul(W, S_in));
  const Tensor o = add(matmul(mul(Q, gamma), S_in), matmul(mul(matmul(Q, Kc, false, true), decay), U));
  const Tensor out = reshape(o, {B, H, Tp, V});
  return Tp == T ? out : slice(out, 2, 0, T);
}

}  // namespace detail

Tensor delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, const Tensor& g,
                  RecurrenceForm form, int64_t chunk, Tensor* state) {
  const Device device = op_device("delta_rule", {&q, &k, &v, &beta, &g});
  const Dims d = check_inputs(q, k, v, beta, g);
  TAPELM_CHECK(chunk > 0, "delta_rule: chunk size must be positive, got {}", chunk);
  if (device == Device::cuda) {  // chunkwise and parallel: products of chunks; recurrent and decoding: the kernel
    if (form != RecurrenceForm::recurrent && !state && d.steps > 0)
      return detail::delta_rule_chunks(q, k, v, beta, g, std::min(block_length(form, chunk, d.steps), d.steps));
    return delta_rule_cuda(q, k, v, beta, g, state, d);
  }
  if (state) prepare_state("delta_rule", state, {q.size(0), q.size(1), d.K, d.V}, q.dtype(), {q, k, v, beta, g});
  Tensor o = Tensor::empty({q.size(0), q.size(1), d.steps, d.V}, q.dtype());
  dispatch_float("delta_rule", q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    for_each_slice(d.BH, [&](int64_t bh) {
      const Slice<T> s = slice_at<T>(d, bh, q, k, v, beta, g, &o, state);
      run_forward<T>(
          form, chunk, s.state, d.K, d.V, d.steps, [&](int64_t t, Mat<T>& S) { forward_step(s, d, t, S); },
          [&](int64_t t0, int64_t t1, Mat<T>& S) { forward_chunk(s, d, t0, t1, S); });
    });
  });
  FlopCounter::add("delta_rule", forward_flops(d, form, chunk));
  const int64_t bwd_chunk = form == RecurrenceForm::chunkwise ? chunk : 64;
  return record("delta_rule", o, {q, k, v, beta, g},
                [q, k, v, beta, g, d, bwd_chunk](const Tensor& dO) -> std::vector<Tensor> {
                  Tensor dq = Tensor::empty(q.shape(), q.dtype()), dk = Tensor::empty(k.shape(), k.dtype());
                  Tensor dv = Tensor::empty(v.shape(), v.dtype()), db = Tensor::empty(beta.shape(), beta.dtype());
                  Tensor dg = Tensor::empty(g.shape(), g.dtype());
                  dispatch_float("delta_rule", q.dtype(), [&](auto tag) {
                    using T = decltype(tag);
                    for_each_slice(d.BH, [&](int64_t bh) {
                      ReverseWorkspace<T> ws;
                      backward_slice(slice_at<T>(d, bh, q, k, v, beta, g), dO.data<T>() + bh * d.steps * d.V,
                                     dq.data<T>() + bh * d.steps * d.K, dk.data<T>() + bh * d.steps * d.K,
                                     dv.data<T>() + bh * d.steps * d.V, db.data<T>() + bh * d.steps,
                                     dg.data<T>() + bh * d.steps, d, bwd_chunk, ws);
                    });
                  });
                  // Recompute (2 passes × 5KV) + reverse pass (~16KV) per step.
                  FlopCounter::add("delta_rule", d.BH * d.steps * d.K * d.V * 26);
                  return {dq, dk, dv, db, dg};
                });
}

Tensor delta_rule_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, const Tensor& g) {
  const Dims d = check_inputs(q, k, v, beta, g);
  Tensor S = zeros({q.size(0), q.size(1), d.K, d.V}, q.dtype());
  std::vector<Tensor> outs;
  for (int64_t t = 0; t < d.steps; ++t) {
    auto at = [&](const Tensor& x) { return slice(x, 2, t, t + 1); };  // [B,H,1,·]
    Tensor kt = at(k), b = at(beta), a = exp(at(g));
    Tensor read = matmul(kt, S);                     // kᵀS  [B,H,1,V]
    Tensor u = mul(b, sub(at(v), mul(a, read)));     // β (v − α Sᵀk)
    S = add(mul(S, a), matmul(kt, u, true, false));  // α S + k uᵀ
    outs.push_back(matmul(at(q), S));
  }
  return concat(outs, 2);
}

}  // namespace tapelm
