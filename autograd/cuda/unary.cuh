// The elementwise functions of the Unary enum and their derivatives on the
// device, the same formulas as ops/unary.cpp: for the unary kernels
// (elementwise.cu) and for the products that read an operand through an
// activation (gemm.cu's copies). unary_df gets x, the output y and the
// output's gradient g.
#pragma once
#include <cmath>

#include "autograd/cuda/kernels.h"

namespace tapelm::cuda::detail {

__device__ inline float unary_f(Unary op, float v, float alpha) {
  switch (op) {
    case Unary::neg:
      return -v;
    case Unary::exp:
      return expf(v);
    case Unary::log:
      return logf(v);
    case Unary::sqrt:
      return sqrtf(v);
    case Unary::tanh:
      return tanhf(v);
    case Unary::sigmoid:
      return 1.f / (1.f + expf(-v));
    case Unary::relu:
      return v > 0.f ? v : 0.f;
    case Unary::gelu:
      return 0.5f * v * (1.f + erff(v * (float)M_SQRT1_2));
    case Unary::gelu_tanh: {
      const float k = (float)(M_2_SQRTPI * M_SQRT1_2);
      return 0.5f * v * (1.f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
    case Unary::silu:
      return v / (1.f + expf(-v));
    case Unary::softplus:
      return v > 20.f ? v : log1pf(expf(fminf(v, 20.f)));
    case Unary::elu:
      return v > 0.f ? v : alpha * expm1f(fminf(v, 0.f));
    case Unary::square:
      return v * v;
    case Unary::identity:
      return v;
  }
  return 0.f;
}

__device__ inline float unary_df(Unary op, float v, float y, float g, float alpha) {
  switch (op) {
    case Unary::neg:
      return -g;
    case Unary::exp:
      return g * y;
    case Unary::log:
      return g / v;
    case Unary::sqrt:
      return g / (2.f * y);
    case Unary::tanh:
      return g * (1.f - y * y);
    case Unary::sigmoid:
      return g * y * (1.f - y);
    case Unary::relu:
      return v > 0.f ? g : 0.f;
    case Unary::gelu: {
      const float cdf = 0.5f * (1.f + erff(v * (float)M_SQRT1_2));
      const float pdf = expf(-0.5f * v * v) * (float)(0.5 * M_2_SQRTPI * M_SQRT1_2);
      return g * (cdf + v * pdf);
    }
    case Unary::gelu_tanh: {
      const float k = (float)(M_2_SQRTPI * M_SQRT1_2);
      const float t = tanhf(k * (v + 0.044715f * v * v * v));
      return g * (0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * k * (1.f + 3.f * 0.044715f * v * v));
    }
    case Unary::silu: {
      const float s = 1.f / (1.f + expf(-v));
      return g * s * (1.f + v * (1.f - s));
    }
    case Unary::softplus:
      return v > 20.f ? g : g / (1.f + expf(-v));
    case Unary::elu:
      return v > 0.f ? g : g * (y + alpha);
    case Unary::square:
      return 2.f * v * g;
    case Unary::identity:
      return g;
  }
  return 0.f;
}

}  // namespace tapelm::cuda::detail
