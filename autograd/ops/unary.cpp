// Elementwise functions y = f(x). Each op is one entry of a table: its forward
// f(x), its derivative rule dx = f'(x, y)·g, and its FLOP counts. Both rules
// are written on Eigen arrays, so exp, log, tanh and erf run vectorised.
// A rule returns an Eigen expression; one that uses a local array must return
// it evaluated (ArrayX<T>(...)), since expressions hold plain arrays by reference.
// FLOP convention: every arithmetic operation and every transcendental call
// (exp, log, tanh, erf, sqrt) counts as one FLOP per element.
#include <omp.h>
#include <Eigen/Core>
#include <cmath>
#include <unsupported/Eigen/SpecialFunctions>  // vectorised erf

#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/eigen_maps.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/ops/activation.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {

// Runs f over x, records a node whose backward computes df(x, y, g).
// On the GPU the same function runs as the kernel `kind` (autograd/cuda/elementwise.cu).
template <class F, class DF>
Tensor unary(const char* op, cuda::Unary kind, double alpha, const Tensor& x, int64_t fwd_flops, int64_t bwd_flops, F f,
             DF df) {
  const int64_t n = x.numel();
  if (op_device(op, {&x}) == Device::cuda) {
    TAPELM_CHECK(x.dtype() == DType::f32, "{}: a cuda tensor must be float32, got {}", op, dtype_name(x.dtype()));
    Tensor y = Tensor::empty_like(x);
    cuda::unary_forward(kind, x.cuda_data<float>(), y.cuda_data<float>(), n, (float)alpha);
    FlopCounter::add(op, fwd_flops * n);
    return record(op, y, {x}, [op, kind, alpha, x, y, bwd_flops, n](const Tensor& grad) -> std::vector<Tensor> {
      Tensor gx = Tensor::empty_like(x);
      cuda::unary_backward(kind, x.cuda_data<float>(), y.cuda_data<float>(), grad.cuda_data<float>(),
                           gx.cuda_data<float>(), n, (float)alpha);
      FlopCounter::add(op, bwd_flops * n);
      return {gx};
    });
  }
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    parallel_chunks(n, [&](int64_t b, int64_t len) { ArrayMap<T>(py + b, len) = f(ConstArrayMap<T>(px + b, len)); });
  });
  FlopCounter::add(op, fwd_flops * n);
  return record(op, y, {x}, [op, x, y, bwd_flops, df, n](const Tensor& grad) -> std::vector<Tensor> {
    Tensor gx = Tensor::empty(x.shape(), x.dtype());
    dispatch_float(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T *px = x.data<T>(), *py = y.data<T>(), *pg = grad.data<T>();
      T* po = gx.data<T>();
      parallel_chunks(n, [&](int64_t b, int64_t len) {
        ArrayMap<T>(po + b, len) =
            df(ConstArrayMap<T>(px + b, len), ConstArrayMap<T>(py + b, len), ConstArrayMap<T>(pg + b, len));
      });
    });
    FlopCounter::add(op, bwd_flops * n);
    return {gx};
  });
}

// The scalar type of an Eigen array expression, for typed constants.
template <class A>
using S = typename std::decay_t<A>::Scalar;

// One of the activations a linear can read its input through: its name, kernel and FLOPs from their table.
template <class F, class DF>
Tensor activation(Activation a, const Tensor& x, F f, DF df) {
  const detail::ActivationOp& op = detail::activation_op(a);
  return unary(op.name, op.kind, 0, x, op.forward_flops, op.backward_flops, f, df);
}
}  // namespace

Tensor neg(const Tensor& x) {
  return unary(
      "neg", cuda::Unary::neg, 0, x, 1, 1, [](auto v) { return -v; }, [](auto, auto, auto grad) { return -grad; });
}

Tensor exp(const Tensor& x) {
  return unary(
      "exp", cuda::Unary::exp, 0, x, 1, 1, [](auto v) { return v.exp(); },
      [](auto, auto y, auto grad) { return grad * y; });
}

Tensor log(const Tensor& x) {
  return unary(
      "log", cuda::Unary::log, 0, x, 1, 1, [](auto v) { return v.log(); },
      [](auto v, auto, auto grad) { return grad / v; });
}

Tensor sqrt(const Tensor& x) {
  return unary(
      "sqrt", cuda::Unary::sqrt, 0, x, 1, 3, [](auto v) { return v.sqrt(); },
      [](auto, auto y, auto grad) { return grad / (S<decltype(y)>(2) * y); });
}

Tensor tanh(const Tensor& x) {
  return unary(
      "tanh", cuda::Unary::tanh, 0, x, 1, 3, [](auto v) { return v.tanh(); },
      [](auto, auto y, auto grad) { return grad * (S<decltype(y)>(1) - y * y); });
}

// σ(x) = 1/(1 + e^(−x));  σ' = σ(1 − σ)
Tensor sigmoid(const Tensor& x) {
  return unary(
      "sigmoid", cuda::Unary::sigmoid, 0, x, 4, 3,
      [](auto v) { return S<decltype(v)>(1) / (S<decltype(v)>(1) + (-v).exp()); },
      [](auto, auto y, auto grad) { return grad * y * (S<decltype(y)>(1) - y); });
}

Tensor relu(const Tensor& x) {
  return activation(
      Activation::relu, x, [](auto v) { return v.max(S<decltype(v)>(0)); },
      [](auto v, auto, auto grad) { return (v > S<decltype(v)>(0)).select(grad, S<decltype(v)>(0)); });
}

// GELU(x) = x·Φ(x) = ½x(1 + erf(x/√2));  GELU'(x) = Φ(x) + x·φ(x).
Tensor gelu(const Tensor& x) {
  return activation(
      Activation::gelu, x,
      [](auto v) {
        using T = S<decltype(v)>;
        return T(0.5) * v * (T(1) + (v * T(M_SQRT1_2)).erf());
      },
      [](auto v, auto, auto grad) {
        using T = S<decltype(v)>;
        auto cdf = T(0.5) * (T(1) + (v * T(M_SQRT1_2)).erf());
        auto pdf = (T(-0.5) * v * v).exp() * T(0.5 * M_2_SQRTPI * M_SQRT1_2);
        return grad * (cdf + v * pdf);
      });
}

// GELU_tanh(x) = ½x(1 + tanh(u)), u = √(2/π)(x + 0.044715x³).
Tensor gelu_tanh(const Tensor& x) {
  return activation(
      Activation::gelu_tanh, x,
      [](auto v) {
        using T = S<decltype(v)>;
        return T(0.5) * v * (T(1) + (T(M_2_SQRTPI * M_SQRT1_2) * (v + T(0.044715) * v * v * v)).tanh());
      },
      [](auto v, auto, auto grad) {
        using T = S<decltype(v)>;
        const T k = T(M_2_SQRTPI * M_SQRT1_2);
        ArrayX<T> t = (k * (v + T(0.044715) * v * v * v)).tanh();
        // Evaluated here: an expression would refer to the local t after return.
        return ArrayX<T>(grad *
                         (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * k * (T(1) + T(3 * 0.044715) * v * v)));
      });
}

// silu(x) = x·σ(x);  silu'(x) = σ(x)(1 + x(1 − σ(x))).
Tensor silu(const Tensor& x) {
  return activation(
      Activation::silu, x, [](auto v) { return v / (S<decltype(v)>(1) + (-v).exp()); },
      [](auto v, auto, auto grad) {
        using T = S<decltype(v)>;
        ArrayX<T> s = T(1) / (T(1) + (-v).exp());
        return ArrayX<T>(grad * s * (T(1) + v * (T(1) - s)));  // evaluated: s is local
      });
}

// softplus(x) = log(1 + eˣ), = x above 20 (PyTorch's threshold); derivative σ(x).
Tensor softplus(const Tensor& x) {
  return unary(
      "softplus", cuda::Unary::softplus, 0, x, 3, 5,
      [](auto v) {
        using T = S<decltype(v)>;
        return (v > T(20)).select(v, v.min(T(20)).exp().log1p());
      },
      [](auto v, auto, auto grad) {
        using T = S<decltype(v)>;
        return (v > T(20)).select(grad, grad / (T(1) + (-v).exp()));
      });
}

// elu(x) = x for x > 0, α(eˣ − 1) otherwise.
Tensor elu(const Tensor& x, double alpha) {
  return unary(
      "elu", cuda::Unary::elu, alpha, x, 3, 2,
      [alpha](auto v) {
        using T = S<decltype(v)>;
        return (v > T(0)).select(v, T(alpha) * v.min(T(0)).expm1());
      },
      [alpha](auto v, auto y, auto grad) {
        using T = S<decltype(v)>;
        return (v > T(0)).select(grad, grad * (y + T(alpha)));
      });
}

Tensor square(const Tensor& x) {
  return unary(
      "square", cuda::Unary::square, 0, x, 1, 2, [](auto v) { return v * v; },
      [](auto v, auto, auto grad) { return S<decltype(v)>(2) * v * grad; });
}

namespace detail {

const ActivationOp& activation_op(Activation a) {
  // FLOPs by the file's convention (every operation and transcendental call one per element).
  static const ActivationOp relu_op{"relu", "linear.relu", cuda::Unary::relu, 1, 1, relu},
      gelu_op{"gelu", "linear.gelu", cuda::Unary::gelu, 5, 9, gelu},
      gelu_tanh_op{"gelu_tanh", "linear.gelu_tanh", cuda::Unary::gelu_tanh, 9, 14, gelu_tanh},
      silu_op{"silu", "linear.silu", cuda::Unary::silu, 5, 8, silu};
  switch (a) {
    case Activation::relu:
      return relu_op;
    case Activation::gelu:
      return gelu_op;
    case Activation::gelu_tanh:
      return gelu_tanh_op;
    case Activation::silu:
      return silu_op;
    case Activation::none:
      break;
  }
  throw Error("activation_op: no activation");
}

}  // namespace detail

}  // namespace tapelm
