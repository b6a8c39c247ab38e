// softmax and log_softmax over the last axis, max-subtracted for stability.
//   softmax:     y = e^(x−m) / Σ e^(x−m);      dx = y ⊙ (g − Σ g⊙y)
//   log_softmax: y = x − m − log Σ e^(x−m);   dx = g − e^y · Σ g
// A softmax row that is entirely −∞ (a query whose keys are all masked) gives
// zeros, not NaN, and so passes no gradient.
// FLOPs per element: 4 forward (max, sub, exp, sum) + 1 (div / sub), 4 backward.
#include <Eigen/Core>
#include <cmath>

#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/eigen_maps.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {

template <class T>
void softmax_rows(const T* x, T* y, int64_t rows, int64_t n, bool log_form) {
#pragma omp parallel for if (rows * n > kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    ConstArrayMap<T> xr(x + r * n, n);
    ArrayMap<T> yr(y + r * n, n);
    const T m = n ? xr.maxCoeff() : T(0);
    if (m == -std::numeric_limits<T>::infinity()) {  // every entry masked
      yr.setConstant(log_form ? m : T(0));
      continue;
    }
    yr = (xr - m).exp();  // vectorised
    const T s = yr.sum();
    if (log_form)
      yr = xr - (m + std::log(s));
    else
      yr *= T(1) / s;
  }
}

Tensor softmax_impl(const char* op, const Tensor& x, bool log_form) {
  TAPELM_CHECK(x.dim() >= 1, "{}: needs at least one dimension, got {}", op, x.str_shape());
  const int64_t n = x.size(-1), rows = n == 0 ? 0 : x.numel() / n;
  if (op_device(op, {&x}) == Device::cuda) {
    TAPELM_CHECK(x.dtype() == DType::f32, "{}: a cuda tensor must be float32", op);
    Tensor y = Tensor::empty_like(x);
    cuda::softmax_forward(x.cuda_data<float>(), y.cuda_data<float>(), rows, n, log_form);
    FlopCounter::add(op, 5 * x.numel());
    return record(op, y, {x}, [op, y, rows, n, log_form](const Tensor& grad) -> std::vector<Tensor> {
      Tensor gx = Tensor::empty_like(y);
      cuda::softmax_backward(y.cuda_data<float>(), grad.cuda_data<float>(), gx.cuda_data<float>(), rows, n, log_form);
      FlopCounter::add(op, 4 * y.numel());
      return {gx};
    });
  }
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    softmax_rows(x.data<T>(), y.data<T>(), rows, n, log_form);
  });
  FlopCounter::add(op, 5 * x.numel());
  return record(op, y, {x}, [op, y, rows, n, log_form](const Tensor& grad) -> std::vector<Tensor> {
    Tensor gx = Tensor::empty(y.shape(), y.dtype());
    dispatch_float(op, y.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* py = y.data<T>();
      const T* pg = grad.data<T>();
      T* po = gx.data<T>();
#pragma omp parallel for if (rows * n > kParallelElements)
      for (int64_t r = 0; r < rows; ++r) {
        const T *yr = py + r * n, *gr = pg + r * n;
        T* orow = po + r * n;
        T s = 0;
        if (log_form) {
          for (int64_t j = 0; j < n; ++j) s += gr[j];
          for (int64_t j = 0; j < n; ++j) orow[j] = gr[j] - std::exp(yr[j]) * s;
        } else {
          for (int64_t j = 0; j < n; ++j) s += gr[j] * yr[j];
          for (int64_t j = 0; j < n; ++j) orow[j] = yr[j] * (gr[j] - s);
        }
      }
    });
    FlopCounter::add(op, 4 * y.numel());
    return {gx};
  });
}

}  // namespace

Tensor softmax(const Tensor& x) { return softmax_impl("softmax", x, false); }
Tensor log_softmax(const Tensor& x) { return softmax_impl("log_softmax", x, true); }

}  // namespace tapelm
