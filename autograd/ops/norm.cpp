// Fused LayerNorm and RMSNorm over the last axis (one pass each way instead
// of the seven elementwise ops and reductions the composed form records).
//   LayerNorm (Ba et al. 2016): x̂ = (x − μ)·r, r = 1/√(σ² + ε), y = x̂ ⊙ w + b
//   RMSNorm (Zhang & Sennrich 2019): x̂ = x·r, r = 1/√(mean(x²) + ε), y = x̂ ⊙ w
// Backward, with ĝ = g ⊙ w and means over the row of d elements:
//   LayerNorm: dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂))
//   RMSNorm:   dx = r·(ĝ − x̂·mean(ĝ ⊙ x̂))
//   dw = Σ_rows g ⊙ x̂,  db = Σ_rows g
// Saved for backward: x̂ and r (not the composed form's five intermediates).
// FLOPs per element: forward 6 (LayerNorm) or 4 (RMSNorm), plus 1 for a
// bias; backward 10 (dx 7, dw 2, db 1).
#include <Eigen/Core>
#include <cmath>
#include <vector>

#include <omp.h>

#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {

template <class T>
using Row = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstRow = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

Tensor norm_impl(const char* op, const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool center) {
  TAPELM_CHECK(x.dim() >= 1 && w.dim() == 1 && w.size(0) == x.size(-1) && (!b.defined() || b.shape() == w.shape()),
               "{}: input {} with weight {}{}: the weight must be [last dim]", op, x.str_shape(), w.str_shape(),
               b.defined() ? " and bias " + b.str_shape() : std::string());
  TAPELM_CHECK(x.dtype() == w.dtype() && (!b.defined() || b.dtype() == x.dtype()), "{}: dtypes differ", op);
  const int64_t d = x.size(-1), rows = d ? x.numel() / d : 0;
  Tensor y = Tensor::empty(x.shape(), x.dtype()), xhat = Tensor::empty(x.shape(), x.dtype());
  Tensor rstd = Tensor::empty({rows}, x.dtype());
  dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    ConstRow<T> wv(w.data<T>(), d);
    const T* pb = b.defined() ? b.data<T>() : nullptr;
#pragma omp parallel for if (rows * d > kParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      ConstRow<T> xr(px + r * d, d);
      Row<T> xh(xhat.data<T>() + r * d, d), yr(y.data<T>() + r * d, d);
      const T mu = center ? xr.mean() : T(0);
      xh = xr - mu;
      const T rs = T(1) / std::sqrt(xh.square().mean() + T(eps));
      rstd.data<T>()[r] = rs;
      xh *= rs;
      if (pb)
        yr = xh * wv + ConstRow<T>(pb, d);
      else
        yr = xh * wv;
    }
  });
  FlopCounter::add(op, (center ? 6 : 4) * x.numel() + (b.defined() ? x.numel() : 0));
  return record(op, y, {x, w, b}, [op, xhat, rstd, w, b, rows, d, center](const Tensor& g) -> std::vector<Tensor> {
    Tensor gx = Tensor::empty(xhat.shape(), xhat.dtype());
    Tensor gw = zeros(w.shape(), w.dtype()), gb = b.defined() ? zeros(b.shape(), b.dtype()) : Tensor();
    dispatch_float(op, xhat.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* pg = g.data<T>();
      ConstRow<T> wv(w.data<T>(), d);
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
          ConstRow<T> gr(pg + r * d, d), xh(xhat.data<T>() + r * d, d);
          gh = gr * wv;
          const T mean_gx = (gh * xh).mean();
          Row<T> out(gx.data<T>() + r * d, d);
          const T rs = rstd.data<T>()[r];
          if (center)
            out = rs * (gh - gh.mean() - xh * mean_gx);
          else
            out = rs * (gh - xh * mean_gx);
          pw[t] += gr * xh;
          pbias[t] += gr;
        }
      }
      Row<T> gwv(gw.data<T>(), d);
      for (int t = 0; t < nt; ++t) gwv += pw[t];
      if (b.defined()) {
        Row<T> gbv(gb.data<T>(), d);
        for (int t = 0; t < nt; ++t) gbv += pbias[t];
      }
    });
    FlopCounter::add(op, 10 * xhat.numel());
    return {gx, gw, gb};
  });
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return norm_impl("layer_norm", x, weight, bias, eps, true);
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  return norm_impl("rms_norm", x, weight, Tensor(), eps, false);
}

}  // namespace tapelm
