// Elementwise functions y = f(x). Each op is one line of a table: its forward
// f(x), its derivative rule dx = f'(x, y)·g, and its FLOP counts. FLOP
// convention: every arithmetic operation and every transcendental call
// (exp, log, tanh, erf, sqrt) counts as one FLOP per element.
#include <cmath>

#include "autograd/flops.h"
#include "autograd/ops.h"

namespace tapelm {

namespace {

// Runs f over x, records a node whose backward runs df(x, y, g) elementwise.
template <class F, class DF>
Tensor unary(const char* op, const Tensor& x, int64_t fwd_flops, int64_t bwd_flops, F f, DF df) {
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  const int64_t n = x.numel();
  dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for simd if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) py[i] = f(px[i]);
  });
  FlopCounter::add(op, fwd_flops * n);
  return record(op, y, {x}, [op, x, y, bwd_flops, df, n](const Tensor& g) -> std::vector<Tensor> {
    Tensor gx = Tensor::empty(x.shape(), x.dtype());
    dispatch_float(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.data<T>();
      const T* py = y.data<T>();
      const T* pg = g.data<T>();
      T* po = gx.data<T>();
#pragma omp parallel for simd if (n > (1 << 15))
      for (int64_t i = 0; i < n; ++i) po[i] = df(px[i], py[i], pg[i]);
    });
    FlopCounter::add(op, bwd_flops * n);
    return {gx};
  });
}

template <class T> T sigmoid_of(T x) { return T(1) / (T(1) + std::exp(-x)); }

}  // namespace

Tensor neg(const Tensor& x) {
  return unary("neg", x, 1, 1, [](auto v) { return -v; }, [](auto, auto, auto g) { return -g; });
}

Tensor exp(const Tensor& x) {
  return unary("exp", x, 1, 1, [](auto v) { return std::exp(v); },
               [](auto, auto y, auto g) { return g * y; });
}

Tensor log(const Tensor& x) {
  return unary("log", x, 1, 1, [](auto v) { return std::log(v); },
               [](auto v, auto, auto g) { return g / v; });
}

Tensor sqrt(const Tensor& x) {
  return unary("sqrt", x, 1, 3, [](auto v) { return std::sqrt(v); },
               [](auto, auto y, auto g) { return g / (decltype(y))(2) / y; });
}

Tensor tanh(const Tensor& x) {
  return unary("tanh", x, 1, 3, [](auto v) { return std::tanh(v); },
               [](auto, auto y, auto g) { return g * (1 - y * y); });
}

Tensor sigmoid(const Tensor& x) {
  return unary("sigmoid", x, 4, 3, [](auto v) { return sigmoid_of(v); },
               [](auto, auto y, auto g) { return g * y * (1 - y); });
}

Tensor relu(const Tensor& x) {
  return unary("relu", x, 1, 1, [](auto v) { return v > 0 ? v : decltype(v)(0); },
               [](auto v, auto, auto g) { return v > 0 ? g : decltype(g)(0); });
}

// GELU(x) = x·Φ(x) = x·½(1 + erf(x/√2));  GELU'(x) = Φ(x) + x·φ(x).
Tensor gelu(const Tensor& x) {
  return unary(
      "gelu", x, 5, 9,
      [](auto v) {
        using T = decltype(v);
        return T(0.5) * v * (T(1) + std::erf(v * T(M_SQRT1_2)));
      },
      [](auto v, auto, auto g) {
        using T = decltype(v);
        T cdf = T(0.5) * (T(1) + std::erf(v * T(M_SQRT1_2)));
        T pdf = std::exp(T(-0.5) * v * v) * T(0.5 * M_2_SQRTPI * M_SQRT1_2);
        return g * (cdf + v * pdf);
      });
}

// GELU_tanh(x) = ½x(1 + tanh(u)), u = √(2/π)(x + 0.044715x³).
Tensor gelu_tanh(const Tensor& x) {
  return unary(
      "gelu_tanh", x, 9, 14,
      [](auto v) {
        using T = decltype(v);
        T u = T(M_2_SQRTPI * M_SQRT1_2) * (v + T(0.044715) * v * v * v);
        return T(0.5) * v * (T(1) + std::tanh(u));
      },
      [](auto v, auto, auto g) {
        using T = decltype(v);
        const T k = T(M_2_SQRTPI * M_SQRT1_2);
        T t = std::tanh(k * (v + T(0.044715) * v * v * v));
        T du = k * (T(1) + T(3 * 0.044715) * v * v);
        return g * (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * du);
      });
}

// silu(x) = x·σ(x);  silu'(x) = σ(x)(1 + x(1 − σ(x))).
Tensor silu(const Tensor& x) {
  return unary("silu", x, 5, 8, [](auto v) { return v * sigmoid_of(v); },
               [](auto v, auto, auto g) {
                 auto s = sigmoid_of(v);
                 return g * s * (1 + v * (1 - s));
               });
}

// softplus(x) = log(1 + eʸ), = x above 20 (PyTorch's threshold); derivative σ(x).
Tensor softplus(const Tensor& x) {
  return unary("softplus", x, 3, 5,
               [](auto v) { return v > 20 ? v : std::log1p(std::exp(v)); },
               [](auto v, auto, auto g) { return v > 20 ? g : g * sigmoid_of(v); });
}

Tensor elu(const Tensor& x, double alpha) {
  return unary("elu", x, 3, 2,
               [alpha](auto v) {
                 using T = decltype(v);
                 return v > 0 ? v : T(alpha) * std::expm1(v);
               },
               [alpha](auto v, auto y, auto g) {
                 using T = decltype(v);
                 return v > 0 ? g : g * (y + T(alpha));
               });
}

Tensor square(const Tensor& x) {
  return unary("square", x, 1, 2, [](auto v) { return v * v; },
               [](auto v, auto, auto g) { return 2 * v * g; });
}

}  // namespace tapelm
