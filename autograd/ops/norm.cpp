// Fused LayerNorm, RMSNorm and ScaleNorm over the last axis (one pass each
// way instead of the seven elementwise ops and reductions the composed form records).
//   LayerNorm (Ba et al. 2016): x̂ = (x − μ)·r, r = 1/√(σ² + ε), y = x̂ ⊙ w + b
//   RMSNorm (Zhang & Sennrich 2019): x̂ = x·r, r = 1/√(mean(x²) + ε), y = x̂ ⊙ w
//   ScaleNorm (Nguyen & Salazar 2019, as FLASH-pytorch writes it):
//     x̂ = x·r, r = 1/max(‖x‖·d^−½, ε), y = x̂·g with one scalar g
// Backward, with ĝ = g ⊙ w and means over the row of d elements:
//   LayerNorm: dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂))
//   RMSNorm, and ScaleNorm where ‖x‖·d^−½ > ε:   dx = r·(ĝ − x̂·mean(ĝ ⊙ x̂))
//   ScaleNorm where the clamp holds (r = 1/ε is constant): dx = r·ĝ
//   dw = Σ_rows g ⊙ x̂ (summed to one number for ScaleNorm),  db = Σ_rows g
// Saved for backward: x̂ and r (not the composed form's five intermediates).
// FLOPs per element: forward 6 (LayerNorm) or 4 (RMSNorm, ScaleNorm), plus 1
// for a bias; backward 10 (dx 7, dw 2, db 1).
#include <Eigen/Core>
#include <cmath>
#include <vector>

#include <omp.h>

#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/eigen_maps.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {

// The three norms differ in centring, in where ε goes and in the weight's width.
enum class NormKind { layer, rms, scale };

// LayerNorm and RMSNorm on the GPU: one warp per row (autograd/cuda/nn.cu);
// μ and r saved per row, x̂ recomputed in the backward.
Tensor norm_cuda(const char* op, const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool center,
                 int64_t rows, int64_t d) {
  TAPELM_CHECK(x.dtype() == DType::f32, "{}: cuda tensors must be float32", op);
  Tensor y = Tensor::empty_like(x);
  Tensor mean = Tensor::empty({rows}, x.dtype(), Device::cuda), rstd = Tensor::empty({rows}, x.dtype(), Device::cuda);
  cuda::norm_forward(center, x.cuda_data<float>(), w.cuda_data<float>(), b.defined() ? b.cuda_data<float>() : nullptr,
                     y.cuda_data<float>(), mean.cuda_data<float>(), rstd.cuda_data<float>(), rows, d, (float)eps);
  FlopCounter::add(op, (center ? 6 : 4) * x.numel() + (b.defined() ? x.numel() : 0));
  return record(op, y, {x, w, b},
                [op, x, w, b, mean, rstd, rows, d, center](const Tensor& grad) -> std::vector<Tensor> {
                  Tensor gx = Tensor::empty_like(x), gw = Tensor::empty_like(w);
                  Tensor gb = b.defined() ? Tensor::empty_like(b) : Tensor();
                  cuda::norm_backward(center, x.cuda_data<float>(), w.cuda_data<float>(), mean.cuda_data<float>(),
                                      rstd.cuda_data<float>(), grad.cuda_data<float>(), gx.cuda_data<float>(),
                                      gw.cuda_data<float>(), gb.defined() ? gb.cuda_data<float>() : nullptr, rows, d);
                  FlopCounter::add(op, 10 * x.numel());
                  return {gx, gw, gb};
                });
}

Tensor norm_impl(const char* op, const Tensor& x, const Tensor& w, const Tensor& b, double eps, NormKind kind) {
  const bool center = kind == NormKind::layer, clamp = kind == NormKind::scale;
  const int64_t wd = clamp ? 1 : x.dim() >= 1 ? x.size(-1) : 0;  // ScaleNorm: one scalar gain
  TAPELM_CHECK(x.dim() >= 1 && w.dim() == 1 && w.size(0) == wd && (!b.defined() || b.shape() == w.shape()),
               "{}: input {} with weight {}{}: the weight must be [{}]", op, x.str_shape(), w.str_shape(),
               b.defined() ? " and bias " + b.str_shape() : std::string(), clamp ? "1" : "last dim");
  TAPELM_CHECK(x.dtype() == w.dtype() && (!b.defined() || b.dtype() == x.dtype()), "{}: dtypes differ", op);
  const int64_t d = x.size(-1), rows = d ? x.numel() / d : 0;
  if (op_device(op, {&x, &w, &b}) == Device::cuda) {
    if (clamp)
      return cpu_fallback("scale_norm", {x, w},
                          [&](const std::vector<Tensor>& c) { return scale_norm(c[0], c[1], eps); });
    return norm_cuda(op, x, w, b, eps, center, rows, d);
  }
  Tensor y = Tensor::empty(x.shape(), x.dtype()), xhat = Tensor::empty(x.shape(), x.dtype());
  Tensor rstd = Tensor::empty({rows}, x.dtype());
  // ScaleNorm only: the rows where ε, not the norm, divides.
  Tensor clamped = clamp ? zeros({rows}, DType::b8) : Tensor();
  // The weight as a row of d (ScaleNorm's scalar repeated).
  auto weight_row = [clamp, d](const Tensor& wt, auto tag) {
    using T = decltype(tag);
    return clamp ? Eigen::Array<T, Eigen::Dynamic, 1>::Constant(d, wt.data<T>()[0]).eval()
                 : Eigen::Array<T, Eigen::Dynamic, 1>(ConstArrayMap<T>(wt.data<T>(), d));
  };
  dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const Eigen::Array<T, Eigen::Dynamic, 1> wv = weight_row(w, tag);
    const T* pb = b.defined() ? b.data<T>() : nullptr;
    uint8_t* pc = clamp ? clamped.data<uint8_t>() : nullptr;
#pragma omp parallel for if (rows * d > kParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      ConstArrayMap<T> xr(px + r * d, d);
      ArrayMap<T> xh(xhat.data<T>() + r * d, d), yr(y.data<T>() + r * d, d);
      const T mu = center ? xr.mean() : T(0);
      xh = xr - mu;
      T rs;
      if (clamp) {
        const T rms = std::sqrt(xh.square().mean());
        pc[r] = rms < T(eps);
        rs = T(1) / (pc[r] ? T(eps) : rms);
      } else {
        rs = T(1) / std::sqrt(xh.square().mean() + T(eps));
      }
      rstd.data<T>()[r] = rs;
      xh *= rs;
      if (pb)
        yr = xh * wv + ConstArrayMap<T>(pb, d);
      else
        yr = xh * wv;
    }
  });
  FlopCounter::add(op, (center ? 6 : 4) * x.numel() + (b.defined() ? x.numel() : 0));
  return record(
      op, y, {x, w, b},
      [op, xhat, rstd, clamped, w, b, rows, d, center, clamp, weight_row](const Tensor& grad) -> std::vector<Tensor> {
        Tensor gx = Tensor::empty(xhat.shape(), xhat.dtype());
        Tensor gw = zeros(w.shape(), w.dtype()), gb = b.defined() ? zeros(b.shape(), b.dtype()) : Tensor();
        dispatch_float(op, xhat.dtype(), [&](auto tag) {
          using T = decltype(tag);
          const T* pg = grad.data<T>();
          const uint8_t* pc = clamp ? clamped.data<uint8_t>() : nullptr;
          const Eigen::Array<T, Eigen::Dynamic, 1> wv = weight_row(w, tag);
          // dw and db: per-thread partial sums, added in a fixed order so results
          // do not depend on scheduling.
          const int nt = omp_in_parallel() ? 1 : std::max(1, omp_get_max_threads());
          std::vector<Eigen::Array<T, Eigen::Dynamic, 1>> pw(nt, Eigen::Array<T, Eigen::Dynamic, 1>::Zero(d)),
              pbias(nt, Eigen::Array<T, Eigen::Dynamic, 1>::Zero(d));
#pragma omp parallel num_threads(nt) if (rows * d > kParallelElements)
          {
            const int t = omp_get_thread_num();
            Eigen::Array<T, Eigen::Dynamic, 1> gh(d);
#pragma omp for schedule(static)
            for (int64_t r = 0; r < rows; ++r) {
              ConstArrayMap<T> gr(pg + r * d, d), xh(xhat.data<T>() + r * d, d);
              gh = gr * wv;
              ArrayMap<T> out(gx.data<T>() + r * d, d);
              const T rs = rstd.data<T>()[r];
              if (center)
                out = rs * (gh - gh.mean() - xh * (gh * xh).mean());
              else if (pc && pc[r])
                out = rs * gh;
              else
                out = rs * (gh - xh * (gh * xh).mean());
              pw[t] += gr * xh;
              pbias[t] += gr;
            }
          }
          Eigen::Array<T, Eigen::Dynamic, 1> gw_row = Eigen::Array<T, Eigen::Dynamic, 1>::Zero(d);
          for (int t = 0; t < nt; ++t) gw_row += pw[t];
          if (clamp)
            gw.data<T>()[0] = gw_row.sum();
          else
            ArrayMap<T>(gw.data<T>(), d) = gw_row;
          if (b.defined()) {
            ArrayMap<T> gbv(gb.data<T>(), d);
            for (int t = 0; t < nt; ++t) gbv += pbias[t];
          }
        });
        FlopCounter::add(op, 10 * xhat.numel());
        return {gx, gw, gb};
      });
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return norm_impl("layer_norm", x, weight, bias, eps, NormKind::layer);
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  return norm_impl("rms_norm", x, weight, Tensor(), eps, NormKind::rms);
}

Tensor scale_norm(const Tensor& x, const Tensor& gain, double eps) {
  return norm_impl("scale_norm", x, gain, Tensor(), eps, NormKind::scale);
}

}  // namespace tapelm
