// Depthwise causal 1-D convolution (Mamba's short convolution): channel c of
// y_t mixes the last K inputs of channel c,
//   y_{t,c} = b_c + Σ_{j=0}^{K−1} w_{c,j} · x_{t−K+1+j, c}     (x_{<0} = 0)
// Backward: dx_{s,c} = Σ_j w_{c,j} g_{s+K−1−j, c};  dw_{c,j} = Σ_t g_{t,c} x_{t−K+1+j, c};
// db_c = Σ_t g_{t,c}. FLOPs 2·K per output forward, 4·K + 1 backward.
#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

Tensor causal_conv1d(const Tensor& x, const Tensor& w, const Tensor& b) {
  const Device device = op_device("causal_conv1d", {&x, &w, &b});
  TAPELM_CHECK(
      x.dim() == 3 && w.dim() == 2 && w.size(0) == x.size(2) && (!b.defined() || b.shape() == Shape{x.size(2)}),
      "causal_conv1d: expects x [B,T,C], w [C,K], b [C]; got x {}, w {}, b {}", x.str_shape(), w.str_shape(),
      b.defined() ? b.str_shape() : "none");
  TAPELM_CHECK(x.dtype() == w.dtype() && (!b.defined() || b.dtype() == x.dtype()), "causal_conv1d: dtypes differ");
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), K = w.size(1);
  if (device == Device::cuda) {  // autograd/cuda/conv1d.cu
    TAPELM_CHECK(x.dtype() == DType::f32, "causal_conv1d: cuda tensors must be float32, got {}", dtype_name(x.dtype()));
    Tensor y = Tensor::empty_like(x);
    cuda::causal_conv1d_forward(x.cuda_data<float>(), w.cuda_data<float>(),
                                b.defined() ? b.cuda_data<float>() : nullptr, y.cuda_data<float>(), B, T, C, K);
    FlopCounter::add("causal_conv1d", 2 * K * B * T * C);
    return record("causal_conv1d", y, {x, w, b}, [x, w, b, B, T, C, K](const Tensor& grad) -> std::vector<Tensor> {
      Tensor dx = Tensor::empty_like(x), dw = Tensor::empty_like(w);
      Tensor db = b.defined() ? Tensor::empty_like(b) : Tensor();
      cuda::causal_conv1d_backward(x.cuda_data<float>(), w.cuda_data<float>(), grad.cuda_data<float>(),
                                   dx.cuda_data<float>(), dw.cuda_data<float>(),
                                   db.defined() ? db.cuda_data<float>() : nullptr, B, T, C, K);
      FlopCounter::add("causal_conv1d", (4 * K + 1) * B * T * C);
      return {dx, dw, db};
    });
  }
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float("causal_conv1d", x.dtype(), [&](auto tag) {
    using S = decltype(tag);
    const S *px = x.data<S>(), *pw = w.data<S>(), *pb = b.defined() ? b.data<S>() : nullptr;
    S* py = y.data<S>();
#pragma omp parallel for if (B * T * C * K > kParallelElements)
    for (int64_t bt = 0; bt < B * T; ++bt) {
      const int64_t t = bt % T;
      for (int64_t c = 0; c < C; ++c) {
        S acc = pb ? pb[c] : S(0);
        for (int64_t j = 0; j < K; ++j) {
          const int64_t s = t - K + 1 + j;
          if (s >= 0) acc += pw[c * K + j] * px[(bt - t + s) * C + c];
        }
        py[bt * C + c] = acc;
      }
    }
  });
  FlopCounter::add("causal_conv1d", 2 * K * B * T * C);
  return record("causal_conv1d", y, {x, w, b}, [x, w, b, B, T, C, K](const Tensor& grad) -> std::vector<Tensor> {
    Tensor dx = zeros(x.shape(), x.dtype()), dw = zeros(w.shape(), w.dtype());
    Tensor db = b.defined() ? zeros(b.shape(), b.dtype()) : Tensor();
    dispatch_float("causal_conv1d", x.dtype(), [&](auto tag) {
      using S = decltype(tag);
      const S *px = x.data<S>(), *pw = w.data<S>(), *pg = grad.data<S>();
      S *pdx = dx.data<S>(), *pdw = dw.data<S>(), *pdb = db.defined() ? db.data<S>() : nullptr;
      for (int64_t bb = 0; bb < B; ++bb)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t c = 0; c < C; ++c) {
            const S gv = pg[(bb * T + t) * C + c];
            if (pdb) pdb[c] += gv;
            for (int64_t j = 0; j < K; ++j) {
              const int64_t s = t - K + 1 + j;
              if (s < 0) continue;
              pdx[(bb * T + s) * C + c] += pw[c * K + j] * gv;
              pdw[c * K + j] += px[(bb * T + s) * C + c] * gv;
            }
          }
    });
    FlopCounter::add("causal_conv1d", (4 * K + 1) * B * T * C);
    return {dx, dw, db};
  });
}

}  // namespace tapelm
