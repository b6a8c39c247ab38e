// The scores of a chunk under a decay per key (GLA's vector gates), exact:
//   A_{t,s} = Σ_k q_{t,k} k_{s,k} e^{L_{t,k} − L_{s,k}}   for s ≤ t, 0 above the diagonal,
// with L the cumulative log-decay inside the chunk. With a decay per key the
// factor e^{L_t − L_s} differs per k, so A is no plain product QKᵀ; GLA (Yang
// et al. 2023, §4.2) and fla split the chunk into sub-chunks to use the tensor
// cores, where this op computes every term as it is: the exponent L_t − L_s
// of a non-increasing L is ≤ 0 for s ≤ t, so no factor overflows, whatever the
// gates. Its cost (C²/2 · K terms a chunk) is small beside the chunk's
// products. Backward, with P_{t,s,k} = dA_{t,s} q_{t,k} k_{s,k} e^{L_{t,k} − L_{s,k}}:
//   dq_{t,k} = Σ_{s≤t} dA_{t,s} k_{s,k} e^{L_{t,k} − L_{s,k}}
//   dk_{s,k} = Σ_{t≥s} dA_{t,s} q_{t,k} e^{L_{t,k} − L_{s,k}}
//   dL_{p,k} = Σ_{s<p} P_{p,s,k} − Σ_{t>p} P_{t,p,k}
// The diagonal term P_{p,p,k} enters both sums of dL and cancels; it is left
// out of them, not added and subtracted, so that a chunk of one step (or any
// term whose neighbours cancel) gives dL exactly 0, not rounding noise:
// dL = q·(dq − dA_pp k) − k·(dk − dA_pp q) summed without the diagonal.
// FLOPs: 5 a term forward (sub, exp, two products, the add), 10 a term and 3
// an element of L backward.
#include <cmath>

#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {

struct ScoreDims {
  int64_t chunks, C, K;
  int64_t terms() const { return chunks * C * (C + 1) / 2 * K; }
};

template <typename S>
void scores_forward(const S* q, const S* k, const S* L, S* A, const ScoreDims& d) {
#pragma omp parallel for if (d.terms() > kParallelElements)
  for (int64_t n = 0; n < d.chunks; ++n) {
    const S *qn = q + n * d.C * d.K, *kn = k + n * d.C * d.K, *Ln = L + n * d.C * d.K;
    S* An = A + n * d.C * d.C;
    for (int64_t t = 0; t < d.C; ++t)
      for (int64_t s = 0; s < d.C; ++s) {
        S acc = 0;
        for (int64_t j = 0; s <= t && j < d.K; ++j)
          acc += qn[t * d.K + j] * kn[s * d.K + j] * std::exp(Ln[t * d.K + j] - Ln[s * d.K + j]);
        An[t * d.C + s] = acc;
      }
  }
}

template <typename S>
void scores_backward(const S* q, const S* k, const S* L, const S* dA, S* dq, S* dk, S* dL, const ScoreDims& d) {
#pragma omp parallel for if (d.terms() > kParallelElements)
  for (int64_t n = 0; n < d.chunks; ++n) {
    const int64_t at = n * d.C * d.K;
    const S *qn = q + at, *kn = k + at, *Ln = L + at, *dAn = dA + n * d.C * d.C;
    for (int64_t p = 0; p < d.C; ++p)
      for (int64_t j = 0; j < d.K; ++j) {
        S gq = 0, gk = 0;                // the off-diagonal sums
        for (int64_t s = 0; s < p; ++s)  // p as the query
          gq += dAn[p * d.C + s] * kn[s * d.K + j] * std::exp(Ln[p * d.K + j] - Ln[s * d.K + j]);
        for (int64_t t = p + 1; t < d.C; ++t)  // p as the key
          gk += dAn[t * d.C + p] * qn[t * d.K + j] * std::exp(Ln[t * d.K + j] - Ln[p * d.K + j]);
        const int64_t i = at + p * d.K + j;
        const S diagonal = dAn[p * d.C + p];
        dq[i] = gq + diagonal * k[i];
        dk[i] = gk + diagonal * q[i];
        dL[i] = q[i] * gq - k[i] * gk;
      }
  }
}

}  // namespace

Tensor decay_scores(const Tensor& q, const Tensor& k, const Tensor& L) {
  const char* op = "decay_scores";
  const Device device = op_device(op, {&q, &k, &L});
  TAPELM_CHECK(q.dim() >= 2 && k.shape() == q.shape() && L.shape() == q.shape(),
               "{}: expects q, k and L of one shape [..., C, K]; got q {}, k {}, L {}", op, q.str_shape(),
               k.str_shape(), L.str_shape());
  TAPELM_CHECK(q.dtype() == k.dtype() && q.dtype() == L.dtype(), "{}: dtypes differ", op);
  const int64_t C = q.size(-2), K = q.size(-1);
  const ScoreDims d{C * K == 0 ? 0 : q.numel() / (C * K), C, K};
  Shape out_shape = q.shape();
  out_shape.back() = C;
  if (device == Device::cuda) {  // autograd/cuda/decay_scores.cu
    TAPELM_CHECK(q.dtype() == DType::f32, "{}: cuda tensors must be float32, got {}", op, dtype_name(q.dtype()));
    Tensor A = Tensor::empty(out_shape, q.dtype(), Device::cuda);
    cuda::decay_scores_forward(q.cuda_data<float>(), k.cuda_data<float>(), L.cuda_data<float>(), A.cuda_data<float>(),
                               d.chunks, C, K);
    FlopCounter::add(op, 5 * d.terms());
    return record(op, A, {q, k, L}, [q, k, L, d](const Tensor& dA) -> std::vector<Tensor> {
      Tensor dq = Tensor::empty_like(q), dk = Tensor::empty_like(k), dL = Tensor::empty_like(L);
      cuda::decay_scores_backward(q.cuda_data<float>(), k.cuda_data<float>(), L.cuda_data<float>(),
                                  dA.cuda_data<float>(), dq.cuda_data<float>(), dk.cuda_data<float>(),
                                  dL.cuda_data<float>(), d.chunks, d.C, d.K);
      FlopCounter::add("decay_scores", 10 * d.terms() + 3 * d.chunks * d.C * d.K);
      return {dq, dk, dL};
    });
  }
  Tensor A = Tensor::empty(out_shape, q.dtype());
  dispatch_float(op, q.dtype(), [&](auto tag) {
    using S = decltype(tag);
    scores_forward<S>(q.data<S>(), k.data<S>(), L.data<S>(), A.data<S>(), d);
  });
  FlopCounter::add(op, 5 * d.terms());
  return record(op, A, {q, k, L}, [q, k, L, d](const Tensor& dA) -> std::vector<Tensor> {
    Tensor dq = Tensor::empty_like(q), dk = Tensor::empty_like(k), dL = Tensor::empty_like(L);
    dispatch_float("decay_scores", q.dtype(), [&](auto tag) {
      using S = decltype(tag);
      scores_backward<S>(q.data<S>(), k.data<S>(), L.data<S>(), dA.data<S>(), dq.data<S>(), dk.data<S>(), dL.data<S>(),
                         d);
    });
    FlopCounter::add("decay_scores", 10 * d.terms() + 3 * d.chunks * d.C * d.K);
    return {dq, dk, dL};
  });
}

}  // namespace tapelm
