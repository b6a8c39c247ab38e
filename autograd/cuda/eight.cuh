// Eight consecutive elements (16-byte aligned) loaded or stored at once, as
// float32 whatever they are stored as: two float4 for float32, one uint4 of
// four bfloat16 pairs (rounded to nearest even on the way in). The row
// kernels of nn.cu and the conversions of gemm.cu move wide rows this way.
#pragma once
#include <cuda_bf16.h>

namespace tapelm::cuda::detail {

__device__ inline void load8(const float* x, float (&v)[8]) {
  const float4 lo = reinterpret_cast<const float4*>(x)[0], hi = reinterpret_cast<const float4*>(x)[1];
  v[0] = lo.x, v[1] = lo.y, v[2] = lo.z, v[3] = lo.w, v[4] = hi.x, v[5] = hi.y, v[6] = hi.z, v[7] = hi.w;
}
__device__ inline void load8(const __nv_bfloat16* x, float (&v)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(x);
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = __bfloat1622float2(pairs[k]);
    v[2 * k] = f.x, v[2 * k + 1] = f.y;
  }
}
__device__ inline void store8(float* x, const float (&v)[8]) {
  reinterpret_cast<float4*>(x)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(x)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ inline void store8(__nv_bfloat16* x, const float (&v)[8]) {
  __nv_bfloat162 packed[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) packed[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
  *reinterpret_cast<uint4*>(x) = *reinterpret_cast<const uint4*>(packed);
}

}  // namespace tapelm::cuda::detail
