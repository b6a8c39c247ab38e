// Row kernels: LayerNorm/RMSNorm, softmax, embedding, cross-entropy. A warp
// per row (a block per row for the cross-entropy forward), statistics in fp32 through fixed shuffle trees, so each
// row's result does not depend on the launch; column sums loop over rows in order.
#include <cuda_bf16.h>

#include <cfloat>

#include "autograd/cuda/check.cuh"
#include "autograd/cuda/column_sums.cuh"
#include "autograd/cuda/eight.cuh"
#include "autograd/cuda/kernels.h"

namespace tapelm::cuda {

namespace {

constexpr int kWarpsPerBlock = 8;

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

int row_blocks(int64_t rows) { return (int)((rows + kWarpsPerBlock - 1) / kWarpsPerBlock); }

#define ROW_OF_WARP()                                                          \
  const int64_t row = blockIdx.x * (int64_t)kWarpsPerBlock + threadIdx.x / 32; \
  const int lane = threadIdx.x % 32;                                           \
  if (row >= rows) return;

__global__ void k_norm_fwd(bool center, const float* x, const float* w, const float* b, float* y, float* mean,
                           float* rstd, int64_t rows, int64_t cols, float eps) {
  ROW_OF_WARP();
  const float* xr = x + row * cols;
  float s = 0.f;
  if (center) {
    for (int64_t j = lane; j < cols; j += 32) s += xr[j];
    s = warp_sum(s) / cols;
  }
  const float mu = s;
  float v = 0.f;
  for (int64_t j = lane; j < cols; j += 32) v += (xr[j] - mu) * (xr[j] - mu);
  const float r = rsqrtf(warp_sum(v) / cols + eps);
  float* yr = y + row * cols;
  for (int64_t j = lane; j < cols; j += 32) yr[j] = (xr[j] - mu) * r * w[j] + (b ? b[j] : 0.f);
  if (lane == 0) mean[row] = mu, rstd[row] = r;
}

// dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂)), ĝ = dy ⊙ w (no mean(ĝ) term without centring).
__global__ void k_norm_bwd_dx(bool center, const float* x, const float* w, const float* mean, const float* rstd,
                              const float* dy, float* dx, int64_t rows, int64_t cols) {
  ROW_OF_WARP();
  const float *xr = x + row * cols, *gr = dy + row * cols;
  const float mu = mean[row], r = rstd[row];
  float sg = 0.f, sgx = 0.f;
  for (int64_t j = lane; j < cols; j += 32) {
    const float gh = gr[j] * w[j], xh = (xr[j] - mu) * r;
    sg += gh, sgx += gh * xh;
  }
  const float mg = center ? warp_sum(sg) / cols : 0.f, mgx = warp_sum(sgx) / cols;
  float* dr = dx + row * cols;
  for (int64_t j = lane; j < cols; j += 32) {
    const float gh = gr[j] * w[j], xh = (xr[j] - mu) * r;
    dr[j] = r * (gh - mg - xh * mgx);
  }
}

// dw and db: column sums over every row (column_sums.cuh).
struct NormWeightTerms {
  static constexpr int kSums = 2;
  const float *x, *mean, *rstd, *dy;
  int64_t cols;
  __device__ void operator()(int64_t r, int64_t j, float* t) const {
    const float g = dy[r * cols + j];
    t[0] = g * (x[r * cols + j] - mean[r]) * rstd[r];
    t[1] = g;
  }
};

// A row's softmax statistics over the values x(j), j < cols: the maximum
// and Σ e^(x(j) − max), the same in every lane. −∞ entries add nothing; a
// row of only −∞ gives sum 0.
struct RowSoftmax {
  float max, sum;
};
template <class Value>
__device__ RowSoftmax row_softmax(Value x, int64_t cols, int lane) {
  float m = -FLT_MAX;
  for (int64_t j = lane; j < cols; j += 32) m = fmaxf(m, x(j));
  m = warp_max(m);
  float s = 0.f;
  for (int64_t j = lane; j < cols; j += 32) s += expf(x(j) - m);
  return {m, warp_sum(s)};
}

__global__ void k_softmax_fwd(const float* x, float* y, int64_t rows, int64_t cols, bool log) {
  ROW_OF_WARP();
  const float* xr = x + row * cols;
  const RowSoftmax st = row_softmax([xr](int64_t j) { return xr[j]; }, cols, lane);
  float* yr = y + row * cols;
  if (log) {
    const float lse = st.max + logf(st.sum);
    for (int64_t j = lane; j < cols; j += 32) yr[j] = xr[j] - lse;
  } else {  // a row with every entry masked (−∞): zeros
    for (int64_t j = lane; j < cols; j += 32) yr[j] = st.sum > 0.f ? expf(xr[j] - st.max) / st.sum : 0.f;
  }
}

// P and dS in float32 or bfloat16 (attention_cuda's bf16 mode keeps them as
// the products' operands).
__device__ float load(const float* p, int64_t i) { return p[i]; }
__device__ float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ void store(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }

// Scores [batch, heads, tq, tk]; mask [batch, tq, tk] shared by the heads.
template <class P>
__global__ void k_masked_softmax(const float* scores, const uint8_t* mask, P* probs, int64_t rows, int64_t heads,
                                 int64_t tq, int64_t tk, float scale) {
  ROW_OF_WARP();
  const float* sr = scores + row * tk;
  const uint8_t* mr = mask ? mask + ((row / (heads * tq)) * tq + row % tq) * tk : nullptr;
  auto value = [=](int64_t j) { return mr && mr[j] ? -INFINITY : sr[j] * scale; };
  const RowSoftmax st = row_softmax(value, tk, lane);
  for (int64_t j = lane; j < tk; j += 32)
    store(probs, row * tk + j, st.sum > 0.f ? expf(value(j) - st.max) / st.sum : 0.f);
}

// Each element is read and then written by one lane, so dS may be dP.
template <class P, class S>
__global__ void k_masked_softmax_bwd(const P* probs, const float* dp, S* ds, int64_t rows, int64_t cols, float scale) {
  ROW_OF_WARP();
  const int64_t o = row * cols;
  float s = 0.f;
  for (int64_t j = lane; j < cols; j += 32) s += dp[o + j] * load(probs, o + j);
  s = warp_sum(s);
  for (int64_t j = lane; j < cols; j += 32) store(ds, o + j, scale * load(probs, o + j) * (dp[o + j] - s));
}

__global__ void k_attention_mask(const uint8_t* key_pad, uint8_t* mask, int64_t n, int64_t tq, int64_t tk,
                                 int64_t past) {
  const int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (e >= n) return;
  const int64_t j = e % tk, i = (e / tk) % tq, b = e / (tq * tk);
  mask[e] = j > past + i || (key_pad && key_pad[b * tk + j]);
}

// softmax: dx = y ⊙ (dy − Σ dy ⊙ y);  log-softmax: dx = dy − e^y · Σ dy.
__global__ void k_softmax_bwd(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, bool log) {
  ROW_OF_WARP();
  const float *yr = y + row * cols, *gr = dy + row * cols;
  float s = 0.f;
  for (int64_t j = lane; j < cols; j += 32) s += log ? gr[j] : gr[j] * yr[j];
  s = warp_sum(s);
  float* dr = dx + row * cols;
  for (int64_t j = lane; j < cols; j += 32) dr[j] = log ? gr[j] - expf(yr[j]) * s : yr[j] * (gr[j] - s);
}

__global__ void k_embedding_fwd(const float* weight, const int32_t* ids, float* out, int64_t n, int64_t dim) {
  const int64_t i = blockIdx.x;
  const float* src = weight + (int64_t)ids[i] * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) out[i * dim + j] = src[j];
}

// One block per id: its rows of dout added in position order.
__global__ void k_embedding_bwd(const float* dout, const int32_t* order, const int32_t* starts, float* dweight,
                                int64_t dim) {
  const int64_t id = blockIdx.x;
  const int32_t begin = starts[id], end = starts[id + 1];
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
    float s = 0.f;
    for (int32_t k = begin; k < end; ++k) s += dout[(int64_t)order[k] * dim + j];
    dweight[id * dim + j] = s;
  }
}

// Cross-entropy rows are a vocabulary wide (50,257 for GPT-2): the forward
// takes a block of kXentThreads per row (measured: 0.58 ms against 1.14 for
// a warp per row in two passes, 8,192 rows on an H100).
constexpr int kXentThreads = 256;

// Softmax statistics (max m, Σ e^(x − m)) of two parts of a row, combined.
__device__ RowSoftmax combined(RowSoftmax a, RowSoftmax b) {
  const float m = fmaxf(a.max, b.max);
  return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

using detail::load8;
using detail::store8;

// One pass over the row (online softmax, Milakov & Gimelshein 2018): each
// thread's running (max, sum) over its columns, then combined through a fixed
// tree (warp shuffles, then the warps in order), so the bits repeat. wide:
// eight columns a thread at a time (rows 16-byte aligned and their stride a
// multiple of 8, so a group never leaves its row's storage; the columns past
// `cols` are skipped).
template <class T>
__global__ void __launch_bounds__(kXentThreads)
    k_xent_fwd(const T* logits, int64_t ld, const int32_t* targets, float* loss, float* lse, int64_t cols,
               int32_t ignore, bool wide) {
  const int64_t row = blockIdx.x;
  const T* xr = logits + row * ld;
  RowSoftmax st{-FLT_MAX, 0.f};
  if (wide) {
    for (int64_t j0 = threadIdx.x * 8; j0 < cols; j0 += kXentThreads * 8) {
      float v[8], m = -FLT_MAX;
      load8(xr + j0, v);
#pragma unroll
      for (int k = 0; k < 8; ++k)
        if (j0 + k < cols) m = fmaxf(m, v[k]);
      if (m > st.max) st.sum *= expf(st.max - m), st.max = m;
#pragma unroll
      for (int k = 0; k < 8; ++k)
        if (j0 + k < cols) st.sum += expf(v[k] - st.max);
    }
  } else {
    for (int64_t j = threadIdx.x; j < cols; j += kXentThreads) {
      const float v = load(xr, j);
      if (v > st.max) {
        st.sum = st.sum * expf(st.max - v) + 1.f, st.max = v;
      } else {
        st.sum += expf(v - st.max);
      }
    }
  }
  for (int o = 16; o > 0; o >>= 1)
    st = combined(st, {__shfl_xor_sync(0xffffffffu, st.max, o), __shfl_xor_sync(0xffffffffu, st.sum, o)});
  __shared__ RowSoftmax warps[kXentThreads / 32];
  if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = st;
  __syncthreads();
  if (threadIdx.x == 0) {
    RowSoftmax all = warps[0];
    for (int w = 1; w < kXentThreads / 32; ++w) all = combined(all, warps[w]);
    const float l = all.max + logf(all.sum);
    lse[row] = l;
    const int32_t t = targets[row];
    loss[row] = t == ignore ? 0.f : l - load(xr, t);
  }
}

// A warp per row: measured faster here than a block per row (H100, GPT-2's
// 50,257 classes at 8,192 rows: 1.66 ms against 2.37). Rows past `rows`,
// ignored rows and columns past `cols` (a padded matrix's padding) get zeros.
// wide as in k_xent_fwd, out_cols then a multiple of 8.
template <class T>
__global__ void k_xent_bwd(const T* logits, int64_t ld, const int32_t* targets, const float* lse, T* dlogits,
                           int64_t rows, int64_t cols, int64_t out_rows, int64_t out_cols, int32_t ignore,
                           const float* seed, float scale, bool wide) {
  const int64_t row = blockIdx.x * (int64_t)kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= out_rows) return;
  const int32_t t = row < rows ? targets[row] : ignore;
  const bool zero = t == ignore;
  const T* xr = logits + row * ld;
  T* dr = dlogits + row * ld;
  const float l = zero ? 0.f : lse[row], s = zero ? 0.f : *seed * scale;
  if (wide) {
    for (int64_t j0 = lane * 8; j0 < out_cols; j0 += 32 * 8) {
      float v[8];
      if (!zero) load8(xr + j0, v);
#pragma unroll
      for (int k = 0; k < 8; ++k)
        v[k] = zero || j0 + k >= cols ? 0.f : (expf(v[k] - l) - (j0 + k == t ? 1.f : 0.f)) * s;
      store8(dr + j0, v);
    }
  } else {
    for (int64_t j = lane; j < out_cols; j += 32)
      store(dr, j, zero || j >= cols ? 0.f : (expf(load(xr, j) - l) - (j == t ? 1.f : 0.f)) * s);
  }
}

// Whether rows of stride ld from p can be read eight elements at a time.
bool wide_rows(const void* p, int64_t ld, int64_t element_bytes) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && ld % 8 == 0 && (ld * element_bytes) % 16 == 0;
}

}  // namespace

void norm_forward(bool center, const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                  int64_t rows, int64_t cols, float eps) {
  if (rows == 0) return;
  k_norm_fwd<<<row_blocks(rows), 32 * kWarpsPerBlock, 0, stream()>>>(center, x, w, b, y, mean, rstd, rows, cols, eps);
  TAPELM_CUDA_LAUNCHED();
}

void norm_backward(bool center, const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                   float* dx, float* dw, float* db, int64_t rows, int64_t cols) {
  if (rows == 0) return;
  k_norm_bwd_dx<<<row_blocks(rows), 32 * kWarpsPerBlock, 0, stream()>>>(center, x, w, mean, rstd, dy, dx, rows, cols);
  TAPELM_CUDA_LAUNCHED();
  if (dw) detail::column_sums(NormWeightTerms{x, mean, rstd, dy, cols}, rows, cols, {dw, db});
}

void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols, bool log) {
  if (rows == 0) return;
  k_softmax_fwd<<<row_blocks(rows), 32 * kWarpsPerBlock, 0, stream()>>>(x, y, rows, cols, log);
  TAPELM_CUDA_LAUNCHED();
}

void softmax_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, bool log) {
  if (rows == 0) return;
  k_softmax_bwd<<<row_blocks(rows), 32 * kWarpsPerBlock, 0, stream()>>>(y, dy, dx, rows, cols, log);
  TAPELM_CUDA_LAUNCHED();
}

void masked_softmax(const float* scores, const uint8_t* mask, void* probs, Element probs_element, int64_t batch,
                    int64_t heads, int64_t tq, int64_t tk, float scale) {
  const int64_t rows = batch * heads * tq;
  if (rows == 0) return;
  if (probs_element == Element::f32)
    k_masked_softmax<<<row_blocks(rows), 32 * kWarpsPerBlock, 0, stream()>>>(scores, mask, static_cast<float*>(probs),
                                                                             rows, heads, tq, tk, scale);
  else
    k_masked_softmax<<<row_blocks(rows), 32 * kWarpsPerBlock, 0, stream()>>>(
        scores, mask, static_cast<__nv_bfloat16*>(probs), rows, heads, tq, tk, scale);
  TAPELM_CUDA_LAUNCHED();
}

void masked_softmax_backward(const void* probs, Element probs_element, const float* dp, void* ds, Element ds_element,
                             int64_t rows, int64_t cols, float scale) {
  if (rows == 0) return;
  const dim3 grid(row_blocks(rows)), block(32 * kWarpsPerBlock);
  using bf16 = __nv_bfloat16;
  const bool p16 = probs_element == Element::bf16, s16 = ds_element == Element::bf16;
  if (!p16 && !s16)
    k_masked_softmax_bwd<<<grid, block, 0, stream()>>>(static_cast<const float*>(probs), dp, static_cast<float*>(ds),
                                                       rows, cols, scale);
  else if (p16 && s16)
    k_masked_softmax_bwd<<<grid, block, 0, stream()>>>(static_cast<const bf16*>(probs), dp, static_cast<bf16*>(ds),
                                                       rows, cols, scale);
  else if (p16)
    k_masked_softmax_bwd<<<grid, block, 0, stream()>>>(static_cast<const bf16*>(probs), dp, static_cast<float*>(ds),
                                                       rows, cols, scale);
  else
    k_masked_softmax_bwd<<<grid, block, 0, stream()>>>(static_cast<const float*>(probs), dp, static_cast<bf16*>(ds),
                                                       rows, cols, scale);
  TAPELM_CUDA_LAUNCHED();
}

void attention_mask(const uint8_t* key_pad, uint8_t* mask, int64_t batch, int64_t tq, int64_t tk, int64_t past) {
  const int64_t n = batch * tq * tk;
  if (n == 0) return;
  k_attention_mask<<<(unsigned)((n + 255) / 256), 256, 0, stream()>>>(key_pad, mask, n, tq, tk, past);
  TAPELM_CUDA_LAUNCHED();
}

void embedding_forward(const float* weight, const int32_t* ids, float* out, int64_t n, int64_t dim) {
  if (n == 0) return;
  k_embedding_fwd<<<(unsigned)n, 128, 0, stream()>>>(weight, ids, out, n, dim);
  TAPELM_CUDA_LAUNCHED();
}

void embedding_backward(const float* dout, const int32_t* order, const int32_t* starts, float* dweight, int64_t vocab,
                        int64_t dim) {
  if (vocab == 0) return;
  k_embedding_bwd<<<(unsigned)vocab, 128, 0, stream()>>>(dout, order, starts, dweight, dim);
  TAPELM_CUDA_LAUNCHED();
}

void cross_entropy_forward(const void* logits, Element element, int64_t ld, const int32_t* targets, float* loss,
                           float* lse, int64_t rows, int64_t cols, int32_t ignore) {
  if (rows == 0) return;
  TAPELM_CHECK(rows <= INT32_MAX, "cross_entropy: {} rows past the grid", rows);
  if (element == Element::f32)
    k_xent_fwd<<<(unsigned)rows, kXentThreads, 0, stream()>>>(static_cast<const float*>(logits), ld, targets, loss, lse,
                                                              cols, ignore, wide_rows(logits, ld, sizeof(float)));
  else
    k_xent_fwd<<<(unsigned)rows, kXentThreads, 0, stream()>>>(static_cast<const __nv_bfloat16*>(logits), ld, targets,
                                                              loss, lse, cols, ignore, wide_rows(logits, ld, 2));
  TAPELM_CUDA_LAUNCHED();
}

void cross_entropy_backward(const void* logits, Element element, int64_t ld, const int32_t* targets, const float* lse,
                            void* dlogits, int64_t rows, int64_t cols, int64_t out_rows, int64_t out_cols,
                            int32_t ignore, const float* seed, float scale) {
  if (out_rows == 0) return;
  const int64_t bytes = element == Element::f32 ? sizeof(float) : 2;
  const bool wide = out_cols % 8 == 0 && wide_rows(logits, ld, bytes) && wide_rows(dlogits, ld, bytes);
  if (element == Element::f32)
    k_xent_bwd<<<row_blocks(out_rows), 32 * kWarpsPerBlock, 0, stream()>>>(
        static_cast<const float*>(logits), ld, targets, lse, static_cast<float*>(dlogits), rows, cols, out_rows,
        out_cols, ignore, seed, scale, wide);
  else
    k_xent_bwd<<<row_blocks(out_rows), 32 * kWarpsPerBlock, 0, stream()>>>(
        static_cast<const __nv_bfloat16*>(logits), ld, targets, lse, static_cast<__nv_bfloat16*>(dlogits), rows, cols,
        out_rows, out_cols, ignore, seed, scale, wide);
  TAPELM_CUDA_LAUNCHED();
}

}  // namespace tapelm::cuda
