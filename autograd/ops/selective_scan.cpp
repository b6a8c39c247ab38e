// Mamba's selective scan (Gu & Dao 2023, Algorithm 2), fused: per batch b and
// channel d a state h ∈ R^N,
//   h_t = exp(Δ_t A_d) ⊙ h_{t−1} + Δ_t u_t B_t,     y_t = C_t · h_t          (1)
// (zero-order hold for A, Euler for B), u, Δ [B,T,D], A [D,N], B and C [B,T,N].
// Backward, the reverse scan with G = ∂L/∂h_t (including the future):
//   G ← G ⊙ exp(Δ_{t+1} A) + dy_t C_t
//   dC_t += dy_t h_t,  dB_t += G Δ_t u_t,  du_t = Δ_t (G·B_t),
//   dΔ_t = Σ_n G_n (A_n e^{Δ_t A_n} h_{t−1,n} + u_t B_tn),  dA_n += G_n Δ_t e^{Δ_t A_n} h_{t−1,n}
// with h recomputed per (b, d) from the start (recurrence_common.h's driver).
// Parallel over the batch (dB, dC are shared by the channels of one sequence);
// dA, a sum over the batch, is added in row order. FLOPs: 7N per (b,t,d) forward,
// 7N recompute + 14N reverse backward.
#include <Eigen/Core>
#include <cmath>
#include <vector>

#include "autograd/device_dispatch.h"
#include "autograd/eigen_maps.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/ops/recurrence_common.h"
#include "autograd/ops_reference.h"

namespace tapelm {

namespace {
void check_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm) {
  TAPELM_CHECK(u.dim() == 3 && delta.shape() == u.shape() && A.dim() == 2 && A.size(0) == u.size(2) && Bm.dim() == 3 &&
                   Bm.size(0) == u.size(0) && Bm.size(1) == u.size(1) && Bm.size(2) == A.size(1) &&
                   Cm.shape() == Bm.shape(),
               "selective_scan: expects u, delta [B,T,D], A [D,N], B, C [B,T,N]; got u {}, delta {}, A {}, B {}, C {}",
               u.str_shape(), delta.str_shape(), A.str_shape(), Bm.str_shape(), Cm.str_shape());
  TAPELM_CHECK(
      u.dtype() == delta.dtype() && u.dtype() == A.dtype() && u.dtype() == Bm.dtype() && u.dtype() == Cm.dtype(),
      "selective_scan: dtypes differ");
}
// On the GPU: autograd/cuda/selective_scan.cu, the same recurrence and reverse
// scan, its chunks of 64 steps in parallel. The FLOPs booked are the
// sequential scan's; the split adds a pass over each chunk from zero (forward
// and backward) and a short carry across the chunks.
Tensor selective_scan_cuda(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                           Tensor* state) {
  const int64_t Bn = u.size(0), T = u.size(1), D = u.size(2), N = A.size(1);
  TAPELM_CHECK(u.dtype() == DType::f32, "selective_scan: cuda tensors must be float32, got {}", dtype_name(u.dtype()));
  TAPELM_CHECK(cuda::selective_scan_supported(N), "selective_scan: state size {} on cuda (at most 256)", N);
  if (state) detail::prepare_state("selective_scan", state, {Bn, D, N}, u.dtype(), {u, delta, A, Bm, Cm}, Device::cuda);
  const cuda::ScanShape shape{Bn, T, D, N};
  Tensor y = Tensor::empty_like(u);
  cuda::selective_scan_forward(u.cuda_data<float>(), delta.cuda_data<float>(), A.cuda_data<float>(),
                               Bm.cuda_data<float>(), Cm.cuda_data<float>(), y.cuda_data<float>(),
                               state ? state->cuda_data<float>() : nullptr, shape);
  FlopCounter::add("selective_scan", 7 * Bn * T * D * N);
  return record("selective_scan", y, {u, delta, A, Bm, Cm},
                [u, delta, A, Bm, Cm, shape](const Tensor& dy) -> std::vector<Tensor> {
                  Tensor du = Tensor::empty_like(u), dd = Tensor::empty_like(delta), dA = Tensor::empty_like(A),
                         dB = Tensor::empty_like(Bm), dC = Tensor::empty_like(Cm);
                  cuda::selective_scan_backward(u.cuda_data<float>(), delta.cuda_data<float>(), A.cuda_data<float>(),
                                                Bm.cuda_data<float>(), Cm.cuda_data<float>(), dy.cuda_data<float>(),
                                                du.cuda_data<float>(), dd.cuda_data<float>(), dA.cuda_data<float>(),
                                                dB.cuda_data<float>(), dC.cuda_data<float>(), shape);
                  FlopCounter::add("selective_scan", 21 * shape.batch * shape.steps * shape.channels * shape.N);
                  return {du, dd, dA, dB, dC};
                });
}

}  // namespace

Tensor selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                      Tensor* state) {
  const Device device = op_device("selective_scan", {&u, &delta, &A, &Bm, &Cm});
  check_scan(u, delta, A, Bm, Cm);
  if (device == Device::cuda) return selective_scan_cuda(u, delta, A, Bm, Cm, state);
  const int64_t Bn = u.size(0), T = u.size(1), D = u.size(2), N = A.size(1);
  if (state) detail::prepare_state("selective_scan", state, {Bn, D, N}, u.dtype(), {u, delta, A, Bm, Cm});
  Tensor y = Tensor::empty(u.shape(), u.dtype());
  dispatch_float("selective_scan", u.dtype(), [&](auto tag) {
    using S = decltype(tag);
    const S *pu = u.data<S>(), *pd = delta.data<S>(), *pa = A.data<S>(), *pb = Bm.data<S>(), *pc = Cm.data<S>();
    S* py = y.data<S>();
    S* ps = state ? state->data<S>() : nullptr;
    // One slice per (b, d): a state of N × 1.
    detail::for_each_slice(Bn * D, [&](int64_t slice) {
      const int64_t b = slice / D, d = slice % D;
      const ConstArrayMap<S> a(pa + d * N, N);
      detail::run_recurrent<S>(ps ? ps + slice * N : nullptr, N, 1, T, [&](int64_t t, detail::Mat<S>& h) {
        const int64_t bt = b * T + t;
        const S dt = pd[bt * D + d], x = pu[bt * D + d];
        // Over the N states at once: Eigen vectorises the exp.
        ArrayMap<S> hv(h.data(), N);
        hv = (dt * a).exp() * hv + (dt * x) * ConstArrayMap<S>(pb + bt * N, N);
        py[bt * D + d] = (hv * ConstArrayMap<S>(pc + bt * N, N)).sum();
      });
    });
  });
  FlopCounter::add("selective_scan", 7 * Bn * T * D * N);
  return record("selective_scan", y, {u, delta, A, Bm, Cm},
                [u, delta, A, Bm, Cm, Bn, T, D, N](const Tensor& dy) -> std::vector<Tensor> {
                  Tensor du = Tensor::empty(u.shape(), u.dtype()), dd = Tensor::empty(u.shape(), u.dtype());
                  Tensor dA = zeros(A.shape(), A.dtype()), dB = zeros(Bm.shape(), Bm.dtype()),
                         dC = zeros(Cm.shape(), Cm.dtype());
                  dispatch_float("selective_scan", u.dtype(), [&](auto tag) {
                    using S = decltype(tag);
                    const S *pu = u.data<S>(), *pd = delta.data<S>(), *pa = A.data<S>(), *pb = Bm.data<S>(),
                            *pc = Cm.data<S>(), *pg = dy.data<S>();
                    S *pdu = du.data<S>(), *pdd = dd.data<S>(), *pdB = dB.data<S>(), *pdC = dC.data<S>();
                    // dA is a sum over the batch: each row's part goes to its own slot, and the
                    // slots are added in row order (the same bits for any thread count).
                    detail::AlignedVector<S> dA_of_row(Bn * D * N, S(0));
                    // Parallel over rows b: dB_t and dC_t are shared by the channels of a row.
                    detail::for_each_slice(Bn, [&](int64_t b) {
                      detail::ReverseWorkspace<S> ws;
                      detail::AlignedVector<S> es(T * N);  // es[t] = exp(Δ_t A_d), kept from the recompute
                      ArrayX<S> G(N);
                      for (int64_t d = 0; d < D; ++d) {
                        const ConstArrayMap<S> a(pa + d * N, N);
                        ArrayMap<S> dA_d(dA_of_row.data() + (b * D + d) * N, N);
                        G.setZero();
                        detail::run_reverse<S>(
                            N, 1, T, T, ws,
                            [&](int64_t t, auto& h) {
                              const int64_t bt = b * T + t;
                              const S dt = pd[bt * D + d], x = pu[bt * D + d];
                              ArrayMap<S> e(es.data() + t * N, N);
                              e = (dt * a).exp();
                              ArrayMap<S> hv(h.data(), N);
                              hv = e * hv + (dt * x) * ConstArrayMap<S>(pb + bt * N, N);
                            },
                            [&](int64_t t, const detail::MapM<S>& h_prev, const detail::MapM<S>& h_t) {
                              const int64_t bt = b * T + t;
                              const S dt = pd[bt * D + d], x = pu[bt * D + d], grad = pg[bt * D + d];
                              const ConstArrayMap<S> bv(pb + bt * N, N), e(es.data() + t * N, N);
                              const ConstArrayMap<S> hp(h_prev.data(), N);
                              G += grad * ConstArrayMap<S>(pc + bt * N, N);
                              ArrayMap<S>(pdC + bt * N, N) += grad * ConstArrayMap<S>(h_t.data(), N);
                              ArrayMap<S>(pdB + bt * N, N) += (dt * x) * G;
                              pdu[bt * D + d] = dt * (G * bv).sum();
                              pdd[bt * D + d] = (G * (a * e * hp + x * bv)).sum();
                              dA_d += dt * G * e * hp;
                              G *= e;  // to h_{t−1}
                            });
                      }
                    });
                    ArrayMap<S> total(dA.data<S>(), D * N);
                    for (int64_t b = 0; b < Bn; ++b) total += ConstArrayMap<S>(dA_of_row.data() + b * D * N, D * N);
                  });
                  FlopCounter::add("selective_scan", 21 * Bn * T * D * N);
                  return {du, dd, dA, dB, dC};
                });
}

Tensor selective_scan_reference(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                const Tensor& Cm) {
  check_scan(u, delta, A, Bm, Cm);
  const int64_t Bn = u.size(0), T = u.size(1), D = u.size(2), N = A.size(1);
  Tensor h = zeros({Bn, D, N}, u.dtype());
  std::vector<Tensor> ys;
  for (int64_t t = 0; t < T; ++t) {
    auto at = [&](const Tensor& x) { return reshape(slice(x, 1, t, t + 1), {Bn, x.size(2), 1}); };  // [B,·,1]
    Tensor dt = at(delta);                                                                          // [B,D,1]
    Tensor write = matmul(mul(dt, at(u)), at(Bm), false, true);                                     // [B,D,N]
    h = add(mul(exp(mul(dt, A)), h), write);
    ys.push_back(reshape(matmul(h, at(Cm)), {Bn, 1, D}));  // C·h
  }
  return concat(ys, 1);
}

}  // namespace tapelm
