// Fused attention for bf16 mode, FlashAttention-2 style (Dao 2023): the
// T×T scores never reach memory. A block takes a tile of 64 query rows of one
// (batch, head); four warps take 16 rows each. Key tiles of 64 stream through
// shared memory, converted to bfloat16 as they load (the rounding autocast
// gives a product's operands); S = QKᵀ and O += PV run on the tensor cores
// (WMMA 16×16×16, bfloat16 in, float32 accumulate); the softmax is the online
// one (running max m and sum l per row, O rescaled by e^(m_old − m_new)), in
// float32. Only the log-sum-exp of each row is saved.
//
// Backward, with P recomputed from the log-sum-exp and D = rowsum(dO ⊙ O):
// one kernel per key tile accumulates dK = Σ dSᵀQ and dV = Σ PᵀdO over the
// query tiles, another per query tile accumulates dQ = Σ dS K over the key
// tiles. Each gradient element is summed by one block in a fixed order: no
// atomics, the same bits every run.
//
// Masks: the dense [B,Tq,Tk] mask of the op (true = hidden). A pre-pass finds
// for each (batch, query tile) one past its last visible key, so a causal
// mask skips the tiles above the diagonal (half the work).
#include <cuda_bf16.h>
#include <mma.h>

#include "autograd/cuda/check.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/runtime.h"

namespace tapelm::cuda {

namespace {

using namespace nvcuda;
using bf16 = __nv_bfloat16;

constexpr int kTile = 64;  // query rows and keys per tile
constexpr int kWarps = 4;  // a warp per 16 rows of a tile
constexpr int kThreads = 32 * kWarps;
constexpr int kPadB = 8;              // bfloat16 row padding: ldm stays a multiple of 8, rows shift banks
constexpr int kPadF = 4;              // float32 row padding
constexpr int kSLd = kTile + kPadF;   // a tile of scores, float32
constexpr int kPLd = kTile + kPadB;   // a tile of probabilities, bfloat16

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

struct Dims {
  int64_t B, Tq, Tk, H;
  float scale;
  __host__ __device__ int64_t q_tiles() const { return (Tq + kTile - 1) / kTile; }
};

// Rows [r0, r0 + 64) of head h of batch b of x [B,T,H,HD] as bfloat16 (row
// stride HD + kPadB); rows past T are zeros.
template <int HD>
__device__ void load_tile(const float* x, int64_t T, int64_t H, int64_t b, int64_t h, int64_t r0, bf16* tile) {
  constexpr int ld = HD + kPadB, quads = HD / 4;
  for (int e = threadIdx.x; e < kTile * quads; e += kThreads) {
    const int r = e / quads, c = 4 * (e % quads);
    const int64_t row = r0 + r;
    const float4 v = row < T ? *reinterpret_cast<const float4*>(x + ((b * T + row) * H + h) * HD + c)
                             : make_float4(0.f, 0.f, 0.f, 0.f);
    bf16* t = tile + r * ld + c;
    t[0] = __float2bfloat16_rn(v.x), t[1] = __float2bfloat16_rn(v.y);
    t[2] = __float2bfloat16_rn(v.z), t[3] = __float2bfloat16_rn(v.w);
  }
}

// Query i cannot see key j: outside the sequences, or masked.
__device__ bool hidden(const uint8_t* mask, const Dims& d, int64_t b, int64_t i, int64_t j) {
  return i >= d.Tq || j >= d.Tk || (mask && mask[(b * d.Tq + i) * d.Tk + j]);
}

// C (16 × 16·N of float32, row stride ldc) = A (16 × 16·K, row-major) · B,
// B read as Bᵀ of a row-major tile (col-major: key rows of K or V) or as
// row-major rows, from shared memory; each warp its own 16 rows.
template <int N, int K, bool kBTransposed>
__device__ void warp_product(const bf16* a, int lda, const bf16* b, int ldb, float* c, int ldc, bool accumulate) {
  for (int n = 0; n < N; ++n) {
    FragC acc;
    if (accumulate)
      wmma::load_matrix_sync(acc, c + n * 16, ldc, wmma::mem_row_major);
    else
      wmma::fill_fragment(acc, 0.f);
    for (int k = 0; k < K; ++k) {
      FragA fa;
      wmma::load_matrix_sync(fa, a + k * 16, lda);
      if constexpr (kBTransposed) {
        FragBCol fb;
        wmma::load_matrix_sync(fb, b + (n * 16) * ldb + k * 16, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
      } else {
        FragBRow fb;
        wmma::load_matrix_sync(fb, b + (k * 16) * ldb + n * 16, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
      }
    }
    wmma::store_matrix_sync(c + n * 16, acc, ldc, wmma::mem_row_major);
  }
}

// For each (batch, query tile): one past the last key any of its rows sees.
__global__ void k_key_ends(const uint8_t* mask, Dims d, int* ends) {
  __shared__ int end;
  const int64_t b = blockIdx.y, q0 = blockIdx.x * (int64_t)kTile;
  if (!mask) {  // every key
    if (threadIdx.x == 0) ends[b * gridDim.x + blockIdx.x] = (int)d.Tk;
    return;
  }
  if (threadIdx.x == 0) end = 0;
  __syncthreads();
  int mine = 0;
  const int64_t rows = d.Tq - q0 < kTile ? d.Tq - q0 : kTile;
  for (int64_t e = threadIdx.x; e < rows * d.Tk; e += blockDim.x) {
    const int64_t i = q0 + e / d.Tk, j = e % d.Tk;
    if (!mask[(b * d.Tq + i) * d.Tk + j]) mine = max(mine, (int)j + 1);
  }
  atomicMax(&end, mine);  // an integer maximum: the same result in any order
  __syncthreads();
  if (threadIdx.x == 0) ends[b * gridDim.x + blockIdx.x] = end;
}

template <int HD>
struct ForwardSmem {
  static constexpr int ldb = HD + kPadB, ldo = HD + kPadF;
  static constexpr size_t bytes =
      (3 * kTile * ldb + kTile * kPLd) * sizeof(bf16) + (kTile * kSLd + kTile * ldo) * sizeof(float);
};

template <int HD>
__global__ void __launch_bounds__(kThreads)
    k_flash_forward(const float* q, const float* k, const float* v, const uint8_t* mask, const int* key_ends, Dims d,
                    float* o, float* lse) {
  using S = ForwardSmem<HD>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sq = reinterpret_cast<bf16*>(smem);
  bf16* sk = sq + kTile * S::ldb;
  bf16* sv = sk + kTile * S::ldb;
  bf16* sp = sv + kTile * S::ldb;
  float* ss = reinterpret_cast<float*>(sp + kTile * kPLd);
  float* so = ss + kTile * kSLd;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t qt = blockIdx.x, b = blockIdx.y / d.H, h = blockIdx.y % d.H, q0 = qt * kTile;
  load_tile<HD>(q, d.Tq, d.H, b, h, q0, sq);
  for (int e = threadIdx.x; e < kTile * S::ldo; e += kThreads) so[e] = 0.f;
  __syncthreads();
  const int r = warp * 16 + lane / 2, half = lane % 2;  // two lanes per row, 32 keys each
  const int64_t i = q0 + r;
  float m = -INFINITY, l = 0.f;
  const int64_t kend = key_ends[b * d.q_tiles() + qt];
  for (int64_t k0 = 0; k0 < kend; k0 += kTile) {
    __syncthreads();  // every warp is done with the previous K and V
    load_tile<HD>(k, d.Tk, d.H, b, h, k0, sk);
    load_tile<HD>(v, d.Tk, d.H, b, h, k0, sv);
    __syncthreads();
    warp_product<kTile / 16, HD / 16, true>(sq + warp * 16 * S::ldb, S::ldb, sk, S::ldb, ss + warp * 16 * kSLd, kSLd,
                                            false);  // S = Q Kᵀ
    __syncwarp();
    float* srow = ss + r * kSLd;
    float tile_max = -INFINITY;
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const float s = hidden(mask, d, b, i, k0 + c) ? -INFINITY : srow[c] * d.scale;
      srow[c] = s;
      tile_max = fmaxf(tile_max, s);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);
    const bool none = m_new == -INFINITY;  // nothing visible yet: p = 0, O unchanged
    const float alpha = none ? 1.f : expf(m - m_new);
    float sum = 0.f;
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const float p = none ? 0.f : expf(srow[c] - m_new);
      sum += p;
      sp[r * kPLd + c] = __float2bfloat16_rn(p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * alpha + sum, m = m_new;
    for (int c = half * (HD / 2); c < (half + 1) * (HD / 2); ++c) so[r * S::ldo + c] *= alpha;
    __syncwarp();
    warp_product<HD / 16, kTile / 16, false>(sp + warp * 16 * kPLd, kPLd, sv, S::ldb, so + warp * 16 * S::ldo, S::ldo,
                                             true);  // O += P V
    __syncwarp();
  }
  if (i >= d.Tq) return;
  const float inv = l > 0.f ? 1.f / l : 0.f;  // a row that sees no key: zeros, as softmax gives
  for (int c = half * (HD / 2); c < (half + 1) * (HD / 2); ++c)
    o[((b * d.Tq + i) * d.H + h) * HD + c] = so[r * S::ldo + c] * inv;
  if (half == 0) lse[(b * d.H + h) * d.Tq + i] = l > 0.f ? m + logf(l) : INFINITY;  // +∞: P = 0 in the backward
}

// D[b,h,i] = Σ_c dO ⊙ O over the head's features: a warp per (b, i, h).
__global__ void k_row_dot(const float* dout, const float* out, float* dsum, int64_t rows, int64_t H, int64_t Tq,
                          int hd) {
  const int64_t row = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32;  // (b·Tq + i)·H + h
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  float s = 0.f;
  for (int c = lane; c < hd; c += 32) s += dout[row * hd + c] * out[row * hd + c];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const int64_t h = row % H, bi = row / H, b = bi / Tq, i = bi % Tq;
  if (lane == 0) dsum[(b * H + h) * Tq + i] = s;
}

template <int HD>
struct BackwardSmem {
  static constexpr int ldb = HD + kPadB, ldo = HD + kPadF;
  static constexpr size_t bytes = (4 * kTile * ldb + kTile * kPLd) * sizeof(bf16) +
                                  (2 * kTile * kSLd + kTile * ldo + 2 * kTile) * sizeof(float);
};

// Loads the rows' log-sum-exp and D of query tile q0 (rows past Tq: +∞ and 0, so P = 0 there).
__device__ void load_row_stats(const float* lse, const float* dsum, const Dims& d, int64_t b, int64_t h, int64_t q0,
                               float* slse, float* sd) {
  for (int r = threadIdx.x; r < kTile; r += kThreads) {
    const int64_t i = q0 + r;
    slse[r] = i < d.Tq ? lse[(b * d.H + h) * d.Tq + i] : INFINITY;
    sd[r] = i < d.Tq ? dsum[(b * d.H + h) * d.Tq + i] : 0.f;
  }
}

// Writes each warp's 16 rows of a float32 accumulator tile (in shared memory)
// to x [B,T,H,HD] at rows r0.., those before T.
template <int HD>
__device__ void store_rows(const float* tile, int ld, float* x, int64_t T, int64_t H, int64_t b, int64_t h,
                           int64_t r0) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int e = lane; e < 16 * HD; e += 32) {
    const int r = warp * 16 + e / HD, c = e % HD;
    if (r0 + r < T) x[((b * T + r0 + r) * H + h) * HD + c] = tile[r * ld + c];
  }
}

// dK and dV of one key tile: its warps take 16 keys each and walk the query
// tiles that see any of its keys.
template <int HD>
__global__ void __launch_bounds__(kThreads)
    k_flash_backward_dkdv(const float* q, const float* k, const float* v, const float* dout, const float* lse,
                          const float* dsum, const uint8_t* mask, const int* key_ends, Dims d, float* dk, float* dv) {
  using S = BackwardSmem<HD>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sk = reinterpret_cast<bf16*>(smem);
  bf16* sv = sk + kTile * S::ldb;
  bf16* sq = sv + kTile * S::ldb;
  bf16* sdo = sq + kTile * S::ldb;
  bf16* sp = sdo + kTile * S::ldb;  // Pᵀ, then dSᵀ
  float* ss = reinterpret_cast<float*>(sp + kTile * kPLd);  // Sᵀ, then Pᵀ
  float* sdp = ss + kTile * kSLd;                            // dPᵀ
  float* sacc = sdp + kTile * kSLd;                          // dV, then dK (16 rows per warp)
  float* slse = sacc + kTile * S::ldo;
  float* sd = slse + kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = blockIdx.y / d.H, h = blockIdx.y % d.H, k0 = blockIdx.x * (int64_t)kTile;
  load_tile<HD>(k, d.Tk, d.H, b, h, k0, sk);
  load_tile<HD>(v, d.Tk, d.H, b, h, k0, sv);
  float* acc_dv = sacc + warp * 16 * S::ldo;
  for (int e = threadIdx.x; e < kTile * S::ldo; e += kThreads) sacc[e] = 0.f;
  __syncthreads();
  FragC dk_acc[HD / 16];
  for (auto& f : dk_acc) wmma::fill_fragment(f, 0.f);
  const int r = warp * 16 + lane / 2, half = lane % 2;  // key row r of the tile; 32 queries per lane
  const int64_t j = k0 + r;
  for (int64_t qt = 0; qt < d.q_tiles(); ++qt) {
    if (key_ends[b * d.q_tiles() + qt] <= k0) continue;  // no row of this query tile sees these keys
    const int64_t q0 = qt * kTile;
    __syncthreads();
    load_tile<HD>(q, d.Tq, d.H, b, h, q0, sq);
    load_tile<HD>(dout, d.Tq, d.H, b, h, q0, sdo);
    load_row_stats(lse, dsum, d, b, h, q0, slse, sd);
    __syncthreads();
    warp_product<kTile / 16, HD / 16, true>(sk + warp * 16 * S::ldb, S::ldb, sq, S::ldb, ss + warp * 16 * kSLd, kSLd,
                                            false);  // Sᵀ = K Qᵀ
    warp_product<kTile / 16, HD / 16, true>(sv + warp * 16 * S::ldb, S::ldb, sdo, S::ldb, sdp + warp * 16 * kSLd,
                                            kSLd, false);  // dPᵀ = V dOᵀ
    __syncwarp();
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const float p = hidden(mask, d, b, q0 + c, j) ? 0.f : expf(ss[r * kSLd + c] * d.scale - slse[c]);
      ss[r * kSLd + c] = p;
      sp[r * kPLd + c] = __float2bfloat16_rn(p);
    }
    __syncwarp();
    warp_product<HD / 16, kTile / 16, false>(sp + warp * 16 * kPLd, kPLd, sdo, S::ldb, acc_dv, S::ldo,
                                             true);  // dV += Pᵀ dO
    __syncwarp();
    for (int c = half * 32; c < half * 32 + 32; ++c)  // dSᵀ = Pᵀ ⊙ (dPᵀ − D)·scale
      sp[r * kPLd + c] = __float2bfloat16_rn(ss[r * kSLd + c] * (sdp[r * kSLd + c] - sd[c]) * d.scale);
    __syncwarp();
    for (int n = 0; n < HD / 16; ++n)  // dK += dSᵀ Q
      for (int kk = 0; kk < kTile / 16; ++kk) {
        FragA fa;
        FragBRow fb;
        wmma::load_matrix_sync(fa, sp + warp * 16 * kPLd + kk * 16, kPLd);
        wmma::load_matrix_sync(fb, sq + (kk * 16) * S::ldb + n * 16, S::ldb);
        wmma::mma_sync(dk_acc[n], fa, fb, dk_acc[n]);
      }
  }
  __syncwarp();
  store_rows<HD>(sacc, S::ldo, dv, d.Tk, d.H, b, h, k0);
  __syncwarp();
  for (int n = 0; n < HD / 16; ++n) wmma::store_matrix_sync(acc_dv + n * 16, dk_acc[n], S::ldo, wmma::mem_row_major);
  __syncwarp();
  store_rows<HD>(sacc, S::ldo, dk, d.Tk, d.H, b, h, k0);
}

// dQ of one query tile: its warps take 16 rows each and walk the key tiles it sees.
template <int HD>
__global__ void __launch_bounds__(kThreads)
    k_flash_backward_dq(const float* q, const float* k, const float* v, const float* dout, const float* lse,
                        const float* dsum, const uint8_t* mask, const int* key_ends, Dims d, float* dq) {
  using S = BackwardSmem<HD>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sq = reinterpret_cast<bf16*>(smem);
  bf16* sdo = sq + kTile * S::ldb;
  bf16* sk = sdo + kTile * S::ldb;
  bf16* sv = sk + kTile * S::ldb;
  bf16* sp = sv + kTile * S::ldb;  // dS
  float* ss = reinterpret_cast<float*>(sp + kTile * kPLd);
  float* sdp = ss + kTile * kSLd;
  float* sacc = sdp + kTile * kSLd;
  float* slse = sacc + kTile * S::ldo;
  float* sd = slse + kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t qt = blockIdx.x, b = blockIdx.y / d.H, h = blockIdx.y % d.H, q0 = qt * kTile;
  load_tile<HD>(q, d.Tq, d.H, b, h, q0, sq);
  load_tile<HD>(dout, d.Tq, d.H, b, h, q0, sdo);
  load_row_stats(lse, dsum, d, b, h, q0, slse, sd);
  FragC dq_acc[HD / 16];
  for (auto& f : dq_acc) wmma::fill_fragment(f, 0.f);
  const int r = warp * 16 + lane / 2, half = lane % 2;
  const int64_t i = q0 + r, kend = key_ends[b * d.q_tiles() + qt];
  for (int64_t k0 = 0; k0 < kend; k0 += kTile) {
    __syncthreads();
    load_tile<HD>(k, d.Tk, d.H, b, h, k0, sk);
    load_tile<HD>(v, d.Tk, d.H, b, h, k0, sv);
    __syncthreads();
    warp_product<kTile / 16, HD / 16, true>(sq + warp * 16 * S::ldb, S::ldb, sk, S::ldb, ss + warp * 16 * kSLd, kSLd,
                                            false);  // S = Q Kᵀ
    warp_product<kTile / 16, HD / 16, true>(sdo + warp * 16 * S::ldb, S::ldb, sv, S::ldb, sdp + warp * 16 * kSLd,
                                            kSLd, false);  // dP = dO Vᵀ
    __syncwarp();
    for (int c = half * 32; c < half * 32 + 32; ++c) {
      const float p = hidden(mask, d, b, i, k0 + c) ? 0.f : expf(ss[r * kSLd + c] * d.scale - slse[r]);
      sp[r * kPLd + c] = __float2bfloat16_rn(p * (sdp[r * kSLd + c] - sd[r]) * d.scale);
    }
    __syncwarp();
    for (int n = 0; n < HD / 16; ++n)  // dQ += dS K
      for (int kk = 0; kk < kTile / 16; ++kk) {
        FragA fa;
        FragBRow fb;
        wmma::load_matrix_sync(fa, sp + warp * 16 * kPLd + kk * 16, kPLd);
        wmma::load_matrix_sync(fb, sk + (kk * 16) * S::ldb + n * 16, S::ldb);
        wmma::mma_sync(dq_acc[n], fa, fb, dq_acc[n]);
      }
  }
  float* acc = sacc + warp * 16 * S::ldo;
  for (int n = 0; n < HD / 16; ++n) wmma::store_matrix_sync(acc + n * 16, dq_acc[n], S::ldo, wmma::mem_row_major);
  __syncwarp();
  store_rows<HD>(sacc, S::ldo, dq, d.Tq, d.H, b, h, q0);
}

// Launches a kernel with its dynamic shared memory (above the 48 KiB default, so the limit is raised first).
template <class Kernel, class... Args>
void launch(Kernel kernel, size_t smem, dim3 grid, Args... args) {
  TAPELM_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  kernel<<<grid, kThreads, smem, stream()>>>(args...);
  TAPELM_CUDA_LAUNCHED();
}

template <int HD>
void forward_hd(const float* q, const float* k, const float* v, const uint8_t* mask, const int* ends, const Dims& d,
                float* o, float* lse) {
  launch(k_flash_forward<HD>, ForwardSmem<HD>::bytes, dim3((unsigned)d.q_tiles(), (unsigned)(d.B * d.H)), q, k, v,
         mask, ends, d, o, lse);
}

template <int HD>
void backward_hd(const float* q, const float* k, const float* v, const float* dout, const float* lse,
                 const float* dsum, const uint8_t* mask, const int* ends, const Dims& d, float* dq, float* dk,
                 float* dv) {
  const unsigned k_tiles = (unsigned)((d.Tk + kTile - 1) / kTile), bh = (unsigned)(d.B * d.H);
  launch(k_flash_backward_dkdv<HD>, BackwardSmem<HD>::bytes, dim3(k_tiles, bh), q, k, v, dout, lse, dsum, mask, ends,
         d, dk, dv);
  launch(k_flash_backward_dq<HD>, BackwardSmem<HD>::bytes, dim3((unsigned)d.q_tiles(), bh), q, k, v, dout, lse, dsum,
         mask, ends, d, dq);
}

Dims dims_of(const FlashAttentionShape& s) { return {s.batch, s.tq, s.tk, s.heads, s.scale}; }

}  // namespace

bool flash_attention_supported(int64_t head_dim) { return head_dim == 32 || head_dim == 64 || head_dim == 128; }

int64_t flash_attention_key_ends_count(const FlashAttentionShape& s) { return s.batch * dims_of(s).q_tiles(); }

void flash_attention_key_ends(const uint8_t* mask, const FlashAttentionShape& s, int* ends) {
  const Dims d = dims_of(s);
  TAPELM_CHECK(d.B <= 65535 && d.B * d.H <= 65535, "flash attention: batch {} × heads {} past the grid's 65535",
               d.B, d.H);
  if (d.B == 0 || d.Tq == 0) return;
  k_key_ends<<<dim3((unsigned)d.q_tiles(), (unsigned)d.B), 256, 0, stream()>>>(mask, d, ends);
  TAPELM_CUDA_LAUNCHED();
}

void flash_attention_forward(const float* q, const float* k, const float* v, const uint8_t* mask, const int* key_ends,
                             const FlashAttentionShape& s, float* out, float* lse) {
  const Dims d = dims_of(s);
  if (d.B == 0 || d.Tq == 0) return;
  switch (s.head_dim) {
    case 32: return forward_hd<32>(q, k, v, mask, key_ends, d, out, lse);
    case 64: return forward_hd<64>(q, k, v, mask, key_ends, d, out, lse);
    case 128: return forward_hd<128>(q, k, v, mask, key_ends, d, out, lse);
  }
  throw Error(fmt::format("flash attention: head size {} (32, 64 or 128)", s.head_dim));
}

void flash_attention_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                              const float* lse, const uint8_t* mask, const int* key_ends,
                              const FlashAttentionShape& s, float* dq, float* dk, float* dv) {
  const Dims d = dims_of(s);
  if (d.B == 0 || d.Tq == 0 || d.Tk == 0) return;
  float* dsum = static_cast<float*>(allocate(d.B * d.H * d.Tq * sizeof(float)));
  const int64_t rows = d.B * d.Tq * d.H;
  k_row_dot<<<(unsigned)((rows + 7) / 8), 256, 0, stream()>>>(dout, out, dsum, rows, d.H, d.Tq, (int)s.head_dim);
  TAPELM_CUDA_LAUNCHED();
  switch (s.head_dim) {
    case 32: backward_hd<32>(q, k, v, dout, lse, dsum, mask, key_ends, d, dq, dk, dv); break;
    case 64: backward_hd<64>(q, k, v, dout, lse, dsum, mask, key_ends, d, dq, dk, dv); break;
    case 128: backward_hd<128>(q, k, v, dout, lse, dsum, mask, key_ends, d, dq, dk, dv); break;
    default: release(dsum); throw Error(fmt::format("flash attention: head size {} (32, 64 or 128)", s.head_dim));
  }
  release(dsum);  // stream-ordered: after the kernels that read it
}

}  // namespace tapelm::cuda
