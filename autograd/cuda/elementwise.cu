// Elementwise kernels: the unary functions and their derivatives (the same
// formulas as ops/unary.cpp), scalar maps, broadcast binary ops, strided
// copies, in-place add. One thread per element, grid-stride loops.
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "autograd/cuda/check.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/strided.cuh"
#include "autograd/cuda/unary.cuh"

namespace tapelm::cuda {

using detail::coalesce;
using detail::count;
using detail::fits_32_bits;
using detail::offset_of;
using detail::unary_df;
using detail::unary_f;

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) { return (int)std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 8); }

#define GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)blockDim.x * gridDim.x)
// The same with an index of type I (the strided kernels: uint32_t where the
// element count allows, see strided.cuh).
#define GRID_STRIDE_AS(I, i, n) \
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < (n); i += (I)blockDim.x * gridDim.x)

__global__ void k_fill(float* p, int64_t n, float value) { GRID_STRIDE(i, n) p[i] = value; }

__global__ void k_unary(Unary op, const float* x, float* y, int64_t n, float alpha) {
  GRID_STRIDE(i, n) y[i] = unary_f(op, x[i], alpha);
}

__global__ void k_unary_back(Unary op, const float* x, const float* y, const float* dy, float* dx, int64_t n,
                             float alpha) {
  GRID_STRIDE(i, n) dx[i] = unary_df(op, x[i], y[i], dy[i], alpha);
}

// The same four elements at a time through float4, for 16-byte aligned
// arrays whose length is a multiple of 4 (the wide FFN activations): fewer,
// wider memory transactions.
__global__ void k_unary4(Unary op, const float4* x, float4* y, int64_t n4, float alpha) {
  GRID_STRIDE(i, n4) {
    const float4 v = x[i];
    y[i] =
        make_float4(unary_f(op, v.x, alpha), unary_f(op, v.y, alpha), unary_f(op, v.z, alpha), unary_f(op, v.w, alpha));
  }
}

__global__ void k_unary_back4(Unary op, const float4* x, const float4* y, const float4* dy, float4* dx, int64_t n4,
                              float alpha) {
  GRID_STRIDE(i, n4) {
    const float4 v = x[i], o = y[i], g = dy[i];
    dx[i] = make_float4(unary_df(op, v.x, o.x, g.x, alpha), unary_df(op, v.y, o.y, g.y, alpha),
                        unary_df(op, v.z, o.z, g.z, alpha), unary_df(op, v.w, o.w, g.w, alpha));
  }
}

bool wide(int64_t n, std::initializer_list<const void*> arrays) {
  if (n % 4) return false;
  for (const void* p : arrays)
    if (reinterpret_cast<uintptr_t>(p) % 16) return false;
  return true;
}

__global__ void k_scalar(ScalarOp op, const float* x, float* y, int64_t n, float s) {
  GRID_STRIDE(i, n) {
    const float v = x[i];
    switch (op) {
      case ScalarOp::add:
        y[i] = v + s;
        break;
      case ScalarOp::mul:
        y[i] = v * s;
        break;
      case ScalarOp::rsub:
        y[i] = s - v;
        break;
      case ScalarOp::rdiv:
        y[i] = s / v;
        break;
      case ScalarOp::pow:
        y[i] = powf(v, s);
        break;
    }
  }
}

template <class I>
__global__ void k_binary(Binary op, const float* a, Strided as, const float* b, Strided bs, float* out, I n) {
  GRID_STRIDE_AS(I, i, n) {
    const float x = a[offset_of(i, as)], y = b[offset_of(i, bs)];
    switch (op) {
      case Binary::add:
        out[i] = x + y;
        break;
      case Binary::sub:
        out[i] = x - y;
        break;
      case Binary::mul:
        out[i] = x * y;
        break;
      case Binary::div:
        out[i] = x / y;
        break;
    }
  }
}

template <class T, class I>
__global__ void k_copy_strided(const T* src, Strided s, T* dst, Strided d, I n) {
  GRID_STRIDE_AS(I, i, n) dst[offset_of(i, d)] = src[offset_of(i, s)];
}

__global__ void k_add_inplace(float* dst, const float* src, int64_t n) { GRID_STRIDE(i, n) dst[i] += src[i]; }

// Dropout's keep-mask from a counter-based generator: element i's uniform
// is the top 24 bits of SplitMix64 (Steele et al. 2014) at seed + i·γ, so the
// mask depends on the seed and the index only, not on the launch.
__global__ void k_dropout(const float* x, float* y, float* scale_mask, int64_t n, float p, float keep_scale,
                          uint64_t seed) {
  GRID_STRIDE(i, n) {
    uint64_t z = seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = (float)(z >> 40) * (1.f / 16777216.f);
    const float m = u < p ? 0.f : keep_scale;
    scale_mask[i] = m;
    y[i] = x[i] * m;
  }
}

template <class I>
__global__ void k_masked_fill(const float* a, const uint8_t* mask, Strided ms, float* out, float value, I n) {
  GRID_STRIDE_AS(I, i, n) out[i] = mask[offset_of(i, ms)] ? value : a[i];
}

// Launches kernel<I> over n elements with I = uint32_t where n allows, else int64_t.
#define LAUNCH_INDEXED(kernel, n, ...)                                              \
  do {                                                                              \
    if (fits_32_bits(n))                                                            \
      kernel<<<blocks_for(n), kThreads, 0, stream()>>>(__VA_ARGS__, (uint32_t)(n)); \
    else                                                                            \
      kernel<<<blocks_for(n), kThreads, 0, stream()>>>(__VA_ARGS__, (int64_t)(n));  \
    TAPELM_CUDA_LAUNCHED();                                                         \
  } while (0)

}  // namespace

void fill(float* p, int64_t n, float value) {
  if (n == 0) return;
  k_fill<<<blocks_for(n), kThreads, 0, stream()>>>(p, n, value);
  TAPELM_CUDA_LAUNCHED();
}

void unary_forward(Unary op, const float* x, float* y, int64_t n, float alpha) {
  if (n == 0) return;
  if (wide(n, {x, y}))
    k_unary4<<<blocks_for(n / 4), kThreads, 0, stream()>>>(op, reinterpret_cast<const float4*>(x),
                                                           reinterpret_cast<float4*>(y), n / 4, alpha);
  else
    k_unary<<<blocks_for(n), kThreads, 0, stream()>>>(op, x, y, n, alpha);
  TAPELM_CUDA_LAUNCHED();
}

void unary_backward(Unary op, const float* x, const float* y, const float* dy, float* dx, int64_t n, float alpha) {
  if (n == 0) return;
  if (!y) {  // a derivative of x alone (kernels.h): x is read in y's place
    TAPELM_CHECK(derivative_reads_x_alone(op), "cuda unary_backward: this function's derivative needs its output");
    y = x;
  }
  if (wide(n, {x, y, dy, dx}))
    k_unary_back4<<<blocks_for(n / 4), kThreads, 0, stream()>>>(
        op, reinterpret_cast<const float4*>(x), reinterpret_cast<const float4*>(y), reinterpret_cast<const float4*>(dy),
        reinterpret_cast<float4*>(dx), n / 4, alpha);
  else
    k_unary_back<<<blocks_for(n), kThreads, 0, stream()>>>(op, x, y, dy, dx, n, alpha);
  TAPELM_CUDA_LAUNCHED();
}

void scalar_map(ScalarOp op, const float* x, float* y, int64_t n, float s) {
  if (n == 0) return;
  k_scalar<<<blocks_for(n), kThreads, 0, stream()>>>(op, x, y, n, s);
  TAPELM_CUDA_LAUNCHED();
}

void binary(Binary op, const float* a, const Strided& as, const float* b, const Strided& bs, float* out) {
  const int64_t n = count(as);
  if (n == 0) return;
  Strided av = as, bv = bs;
  coalesce({&av, &bv});  // out is contiguous: it walks in the same order
  LAUNCH_INDEXED(k_binary, n, op, a, av, b, bv, out);
}

void copy_strided(const float* src, const Strided& s, float* dst, const Strided& d) {
  const int64_t n = count(s);
  if (n == 0) return;
  Strided sv = s, dv = d;
  coalesce({&sv, &dv});
  LAUNCH_INDEXED(k_copy_strided<float>, n, src, sv, dst, dv);
}

void copy_strided_bytes(const uint8_t* src, const Strided& s, uint8_t* dst, const Strided& d) {
  const int64_t n = count(s);
  if (n == 0) return;
  Strided sv = s, dv = d;
  coalesce({&sv, &dv});
  LAUNCH_INDEXED(k_copy_strided<uint8_t>, n, src, sv, dst, dv);
}

void dropout(const float* x, float* y, float* scale_mask, int64_t n, float p, float keep_scale, uint64_t seed) {
  if (n == 0) return;
  k_dropout<<<blocks_for(n), kThreads, 0, stream()>>>(x, y, scale_mask, n, p, keep_scale, seed);
  TAPELM_CUDA_LAUNCHED();
}

void masked_fill(const float* a, const uint8_t* mask, const Strided& ms, float* out, float value) {
  const int64_t n = count(ms);
  if (n == 0) return;
  Strided mv = ms;
  coalesce({&mv});  // a and out are contiguous
  LAUNCH_INDEXED(k_masked_fill, n, a, mask, mv, out, value);
}

void add_inplace(float* dst, const float* src, int64_t n) {
  if (n == 0) return;
  k_add_inplace<<<blocks_for(n), kThreads, 0, stream()>>>(dst, src, n);
  TAPELM_CUDA_LAUNCHED();
}

}  // namespace tapelm::cuda
