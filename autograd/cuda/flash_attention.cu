// Fused attention for bf16 mode, FlashAttention-2 (Dao 2023): the T×T scores
// never reach memory. q, k and v are first rounded to bfloat16 (the rounding
// autocast gives a product's operands) into head-major copies, each 64-row
// tile one contiguous block. A block of four warps takes 64 rows of one
// (batch, head), a warp 16 of them, and streams tiles of 64 keys through
// shared memory with cp.async in two stages: the next visible tile is on its
// way while the warps compute on this one. Every product is a tensor-core
// mma.sync m16n8k16 (bfloat16 in, float32 accumulate) on register fragments
// fed by ldmatrix; scores, probabilities and the output accumulate in
// registers, and a score tile becomes the next product's operand without
// leaving them (the C fragment of m16n8 pairs is the A fragment of
// m16n8k16). The softmax is the online one (running max m and sum l per row,
// O rescaled by e^(m_old − m_new)) in float32; only each row's log-sum-exp is
// saved.
//
// Backward, with P recomputed from the log-sum-exp and D = rowsum(dO ⊙ O)
// (one pass, which also rounds dO to bfloat16 head-major): one kernel per key
// tile accumulates dK = Σ dSᵀQ and dV = Σ PᵀdO over the query tiles (its
// warps own 16 keys each: Sᵀ = K Qᵀ), another per query tile accumulates
// dQ = Σ dS K over the key tiles. Each gradient element is summed by one
// thread in a fixed order: no atomics, the same bits every run.
//
// Masks: the dense [B,Tq,Tk] mask of the op (true = hidden). A pre-pass
// classes every (batch, query tile, key tile) as hidden (skipped: a causal
// mask's upper half), visible (no mask reads) or mixed (each score checks the
// mask and the sequence ends): the diagonal tiles of a causal mask.
//
// Fragment layouts (PTX ISA, mma.m16n8k16; g = lane / 4, t = lane % 4):
//   A 16×16: a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//   B 16×8:  b0 (k 2t..2t+1, n g)  b1 (k 2t+8.., n g)
//   C 16×8:  c0 c1 (g, 2t..2t+1)  c2 c3 (g+8, 2t..2t+1)
#include <cuda_bf16.h>

#include "autograd/cuda/check.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/runtime.h"

namespace tapelm::cuda {

namespace {

using bf16 = __nv_bfloat16;

constexpr int kTile = 64;  // query rows and keys per tile
constexpr int kWarps = 4;  // a warp per 16 rows (or keys) of a tile
constexpr int kThreads = 32 * kWarps;
constexpr int kPad = 8;  // bfloat16 row padding: rows stay 16-byte aligned and ldmatrix's 8 rows hit 8 bank groups

enum TileClass : uint8_t { kHidden = 0, kVisible = 1, kMixed = 2 };

struct Dims {
  int64_t B, Tq, Tk, H;
  int64_t ld;  // elements between consecutive tokens of q, k, v and their gradients
  float scale;
  __host__ __device__ int64_t q_tiles() const { return (Tq + kTile - 1) / kTile; }
  __host__ __device__ int64_t k_tiles() const { return (Tk + kTile - 1) / kTile; }
  // Rows of the head-major bfloat16 operands: whole tiles.
  __host__ __device__ int64_t q_padded() const { return q_tiles() * kTile; }
  __host__ __device__ int64_t k_padded() const { return k_tiles() * kTile; }
};

// ---- tensor-core building blocks ---------------------------------------------

__device__ inline uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// c += a·b, one m16n8k16 tile.
__device__ inline void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8×8 matrices from shared memory; lane L gives the address of row L % 8 of matrix L / 8.
__device__ inline void ldmatrix_x4(uint32_t r[4], const bf16* p) {
  const unsigned addr = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ inline void ldmatrix_x4_trans(uint32_t r[4], const bf16* p) {
  const unsigned addr = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// The A fragment of rows [r0, r0+16) × columns [c0, c0+16) of a row-major tile.
__device__ inline void load_a(uint32_t a[4], const bf16* tile, int ld, int r0, int c0, int lane) {
  ldmatrix_x4(a, tile + (r0 + lane % 16) * ld + c0 + (lane / 16) * 8);
}

// B fragments for two n-blocks (n0, n0+8) at k-step k0 when the tile stores
// B's columns as rows (B = Xᵀ of a row-major X [n][k]: K for S = QKᵀ):
// b[0], b[1] for n-block n0, b[2], b[3] for n0 + 8.
__device__ inline void load_b_rows(uint32_t b[4], const bf16* tile, int ld, int n0, int k0, int lane) {
  ldmatrix_x4(b, tile + (n0 + lane % 8 + (lane / 16) * 8) * ld + k0 + ((lane / 8) % 2) * 8);
}

// The same when the tile stores B row-major (X [k][n]: V for O = PV).
__device__ inline void load_b_cols(uint32_t b[4], const bf16* tile, int ld, int n0, int k0, int lane) {
  ldmatrix_x4_trans(b, tile + (k0 + lane % 8 + ((lane / 8) % 2) * 8) * ld + n0 + (lane / 16) * 8);
}

// acc [N/8 blocks] += A (16 × K, fragments a[K/16]) · Bᵀ, B's rows in a shared tile.
template <int N, int K>
__device__ inline void product_b_rows(float acc[][4], const uint32_t a[][4], const bf16* tile, int ld, int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk)
#pragma unroll
    for (int np = 0; np < N / 16; ++np) {
      uint32_t b[4];
      load_b_rows(b, tile, ld, np * 16, kk * 16, lane);
      mma(acc[2 * np], a[kk], b[0], b[1]);
      mma(acc[2 * np + 1], a[kk], b[2], b[3]);
    }
}

// acc [N/8 blocks] += A (16 × K) · B, B row-major in a shared tile.
template <int N, int K>
__device__ inline void product_b_cols(float acc[][4], const uint32_t a[][4], const bf16* tile, int ld, int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk)
#pragma unroll
    for (int np = 0; np < N / 16; ++np) {
      uint32_t b[4];
      load_b_cols(b, tile, ld, np * 16, kk * 16, lane);
      mma(acc[2 * np], a[kk], b[0], b[1]);
      mma(acc[2 * np + 1], a[kk], b[2], b[3]);
    }
}

// A fragments (16 × 64) from a 16×64 float32 C tile in registers, rounded to bfloat16.
__device__ inline void c_to_a(uint32_t a[4][4], const float c[8][4]) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    a[kk][0] = pack_bf16(c[2 * kk][0], c[2 * kk][1]);
    a[kk][1] = pack_bf16(c[2 * kk][2], c[2 * kk][3]);
    a[kk][2] = pack_bf16(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[kk][3] = pack_bf16(c[2 * kk + 1][2], c[2 * kk + 1][3]);
  }
}

template <int N>
__device__ inline void zero(float acc[][4]) {
#pragma unroll
  for (int n = 0; n < N / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
}

// ---- memory ------------------------------------------------------------------

// Asynchronous 16-byte copies global → shared (cp.async, sm_80+): a tile
// streams in while the warps compute on the previous one. A group is the
// copies issued since the last commit; wait<n> returns once all but the n
// most recent groups have landed (this thread's; a barrier makes them every thread's).
__device__ inline void cp_async16(void* smem, const void* gmem) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ inline void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// A 64 × HD tile of a head-major bfloat16 operand (contiguous rows) into a
// shared tile of row stride HD + kPad.
template <int HD>
__device__ void copy_tile(const bf16* src, bf16* tile) {
  constexpr int ld = HD + kPad, chunks = HD / 8;  // 8 bfloat16 per 16-byte copy
  for (int e = threadIdx.x; e < kTile * chunks; e += kThreads) {
    const int r = e / chunks, c = 8 * (e % chunks);
    cp_async16(tile + r * ld + c, src + r * HD + c);
  }
}

// Key tile kt of a head's K and V into a stage: K, then V a tile after it.
template <int HD>
__device__ void copy_key_tile(const bf16* kh, const bf16* vh, int64_t kt, bf16* stage) {
  copy_tile<HD>(kh + kt * kTile * HD, stage);
  copy_tile<HD>(vh + kt * kTile * HD, stage + kTile * (HD + kPad));
}

// 64 rows' log-sum-exp and D (padded arrays: no bounds) into shared memory.
__device__ inline void copy_row_stats(const float* lse, const float* dsum, int64_t offset, float* slse, float* sd) {
  const int t = threadIdx.x;
  if (t < 16)
    cp_async16(slse + 4 * t, lse + offset + 4 * t);
  else if (t < 32)
    cp_async16(sd + 4 * (t - 16), dsum + offset + 4 * (t - 16));
}

// Writes a warp's 16 × HD float32 accumulator rows r0 + (g, g+8) of head h
// to x (token rows ld apart), those before T.
template <int HD>
__device__ void store_rows(const float acc[][4], float* x, int64_t ld, int64_t T, int64_t b, int64_t h, int64_t r0,
                           int lane, float row_scale0 = 1.f, float row_scale1 = 1.f) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t row = r0 + g + 8 * half;
    if (row >= T) continue;
    const float s = half ? row_scale1 : row_scale0;
    float* dst = x + (b * T + row) * ld + h * HD + 2 * t;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n)
      *reinterpret_cast<float2*>(dst + 8 * n) = make_float2(acc[n][2 * half] * s, acc[n][2 * half + 1] * s);
  }
}

// ---- the operands in bfloat16 ---------------------------------------------------

// One thread per 8 features of a head-major row (b, h, i), i < Tp: x's token
// row i (row stride ld, the head at column h·HD) rounded to bfloat16, zeros past T.
template <int HD>
__global__ void k_round_heads(const float* x, int64_t ld, int64_t T, int64_t Tp, int64_t H, int64_t total, bf16* y) {
  const int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;  // over B·H·Tp·HD/8
  if (e >= total) return;
  const int64_t c = 8 * (e % (HD / 8)), row = e / (HD / 8), i = row % Tp, bh = row / Tp;
  uint4 packed = make_uint4(0, 0, 0, 0);
  if (i < T) {
    const float* src = x + ((bh / H) * T + i) * ld + (bh % H) * HD + c;
    const float4 a = *reinterpret_cast<const float4*>(src), b = *reinterpret_cast<const float4*>(src + 4);
    packed = make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
  }
  *reinterpret_cast<uint4*>(y + row * HD + c) = packed;
}

// The backward's row pass, the same thread layout: dO rounded to bfloat16
// head-major (zeros past Tq) and D[b,h,i] = Σ_c dO ⊙ O (0 past Tq); dO and O
// are [B,Tq,H,HD]. A row's HD/8 threads are adjacent lanes, reduced in a fixed tree.
template <int HD>
__global__ void k_backward_rows(const float* dout, const float* out, int64_t Tq, int64_t Tp, int64_t H, int64_t total,
                                bf16* dout16, float* dsum) {
  const int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t c = 8 * (e % (HD / 8)), row = e / (HD / 8), i = row % Tp, bh = row / Tp;
  float s = 0.f;
  uint4 packed = make_uint4(0, 0, 0, 0);
  if (e < total && i < Tq) {
    const int64_t at = (((bh / H) * Tq + i) * H + bh % H) * HD + c;
    const float4 g0 = *reinterpret_cast<const float4*>(dout + at), g1 = *reinterpret_cast<const float4*>(dout + at + 4);
    const float4 o0 = *reinterpret_cast<const float4*>(out + at), o1 = *reinterpret_cast<const float4*>(out + at + 4);
    s = g0.x * o0.x + g0.y * o0.y + g0.z * o0.z + g0.w * o0.w + g1.x * o1.x + g1.y * o1.y + g1.z * o1.z + g1.w * o1.w;
    packed = make_uint4(pack_bf16(g0.x, g0.y), pack_bf16(g0.z, g0.w), pack_bf16(g1.x, g1.y), pack_bf16(g1.z, g1.w));
  }
#pragma unroll
  for (int o = HD / 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (e >= total) return;
  *reinterpret_cast<uint4*>(dout16 + row * HD + c) = packed;
  if (c == 0) dsum[row] = s;
}

// Query i cannot see key j: outside the sequences, or masked.
__device__ inline bool hidden(const uint8_t* mask, const Dims& d, int64_t b, int64_t i, int64_t j) {
  return i >= d.Tq || j >= d.Tk || (mask && mask[(b * d.Tq + i) * d.Tk + j]);
}

// ---- the tile classes ----------------------------------------------------------

// Block (query tile, key tile, batch row): the tile's class over the rows before Tq.
__global__ void k_tile_classes(const uint8_t* mask, Dims d, uint8_t* map) {
  const int64_t qt = blockIdx.x, kt = blockIdx.y, b = blockIdx.z, q0 = qt * kTile, k0 = kt * kTile;
  const int64_t rows = d.Tq - q0 < kTile ? d.Tq - q0 : kTile;
  bool any_visible = false, any_hidden = false;
  for (int e = threadIdx.x; e < rows * kTile; e += blockDim.x) {
    const int64_t i = q0 + e / kTile, j = k0 + e % kTile;
    const bool h = j >= d.Tk || (mask && mask[(b * d.Tq + i) * d.Tk + j]);
    any_visible |= !h, any_hidden |= h;
  }
  any_visible = __syncthreads_or(any_visible);
  any_hidden = __syncthreads_or(any_hidden);
  if (threadIdx.x == 0)
    map[(b * d.q_tiles() + qt) * d.k_tiles() + kt] = !any_visible ? kHidden : any_hidden ? kMixed : kVisible;
}

// ---- forward -------------------------------------------------------------------

template <int HD>
constexpr size_t tile_bytes() {
  return kTile * (HD + kPad) * sizeof(bf16);
}

// The next tile at or after `t` of a walk along one row (or column) of the
// tile map that is not hidden; `end` if none.
__device__ inline int64_t next_seen(const uint8_t* map, int64_t first, int64_t step, int64_t t, int64_t end) {
  while (t < end && map[first + t * step] == kHidden) ++t;
  return t;
}

// A block per (query tile, batch·head). Shared memory: the Q tile and two
// stages of K and V tiles: the next visible key tile is copied while the
// warps compute on this one.
template <int HD>
__global__ void __launch_bounds__(kThreads)
    k_flash_forward(const bf16* q, const bf16* k, const bf16* v, const uint8_t* mask, const uint8_t* map, Dims d,
                    float* o, float* lse) {
  constexpr int ld = HD + kPad, tile = kTile * ld;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sq = reinterpret_cast<bf16*>(smem);
  bf16* skv = sq + tile;  // stage s: K at skv + 2s·tile, V after it
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t bh = blockIdx.y, qt = blockIdx.x, b = bh / d.H, h = bh % d.H, q0 = qt * kTile;
  const int64_t i0 = q0 + warp * 16 + g;  // this thread's rows: i0 and i0 + 8
  const int64_t nk = d.k_tiles(), row_of_map = (b * d.q_tiles() + qt) * nk;
  const bf16* kh = k + bh * d.k_padded() * HD;
  const bf16* vh = v + bh * d.k_padded() * HD;
  float acc[HD / 8][4];
  zero<HD>(acc);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // l: this thread's share of the row sums
  uint32_t qf[HD / 16][4];
  int64_t kt = next_seen(map, row_of_map, 1, 0, nk);
  if (kt < nk) {
    copy_tile<HD>(q + (bh * d.q_padded() + q0) * HD, sq);
    cp_async_commit();
    copy_key_tile<HD>(kh, vh, kt, skv);
    cp_async_commit();
    cp_async_wait<1>();  // Q (the key tile may still be on its way)
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) load_a(qf[kk], sq, ld, warp * 16, kk * 16, lane);
  }
  for (int stage = 0; kt < nk; stage ^= 1) {
    const int64_t next = next_seen(map, row_of_map, 1, kt + 1, nk);
    if (next < nk) copy_key_tile<HD>(kh, vh, next, skv + 2 * (stage ^ 1) * tile);
    cp_async_commit();
    cp_async_wait<1>();  // this tile's K and V
    __syncthreads();
    const bf16* sk = skv + 2 * stage * tile;
    const bf16* sv = sk + tile;
    const TileClass cls = (TileClass)map[row_of_map + kt];
    const int64_t k0 = kt * kTile;
    float s[8][4];
    zero<64>(s);
    product_b_rows<64, HD>(s, qf, sk, ld, lane);  // S = Q Kᵀ
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e] * d.scale;
        if (cls == kMixed && hidden(mask, d, b, i0 + 8 * (e / 2), k0 + 8 * n + 2 * t + e % 2)) x = -INFINITY;
        s[n][e] = x;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], x);
      }
    float alpha[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float m_new = fmaxf(m[r], tile_max[r]);
      base[r] = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: p = 0, no ∞ − ∞
      alpha[r] = __expf(m[r] - base[r]);
      m[r] = m_new;
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = __expf(s[n][e] - base[e / 2]);
        s[n][e] = p;
        l[e / 2] += p;
      }
#pragma unroll
    for (int n = 0; n < HD / 8; ++n)
      acc[n][0] *= alpha[0], acc[n][1] *= alpha[0], acc[n][2] *= alpha[1], acc[n][3] *= alpha[1];
    uint32_t pf[4][4];
    c_to_a(pf, s);
    product_b_cols<HD, 64>(acc, pf, sv, ld, lane);  // O += P V
    __syncthreads();  // every warp is done with this stage before the next iteration refills it
    kt = next;
  }
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    inv[r] = l[r] > 0.f ? 1.f / l[r] : 0.f;  // a row that sees no key: zeros, as softmax gives
  }
  store_rows<HD>(acc, o, d.H * HD, d.Tq, b, h, q0 + warp * 16, lane, inv[0], inv[1]);
  if (t == 0)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t i = i0 + 8 * r;  // < q_padded: the padded rows get +∞ too (P = 0 in the backward)
      lse[bh * d.q_padded() + i] = i < d.Tq && l[r] > 0.f ? m[r] + logf(l[r]) : INFINITY;
    }
}

// ---- backward ------------------------------------------------------------------

// dK and dV of one key tile: its warps own 16 keys each and walk the query
// tiles that see any of its keys, the next one's Q, dO, log-sum-exp and D
// copied while this one's are used. Scores are held transposed (keys × queries).
template <int HD>
__global__ void __launch_bounds__(kThreads)
    k_flash_backward_dkdv(const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse,
                          const float* dsum, const uint8_t* mask, const uint8_t* map, Dims d, float* dk, float* dv) {
  constexpr int ld = HD + kPad, tile = kTile * ld;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sk = reinterpret_cast<bf16*>(smem);
  bf16* sv = sk + tile;
  bf16* sqdo = sv + tile;  // stage s: Q at sqdo + 2s·tile, dO after it
  float* sstats = reinterpret_cast<float*>(sqdo + 4 * tile);  // stage s: lse at sstats + 128s, D after it
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t bh = blockIdx.y, kt = blockIdx.x, b = bh / d.H, h = bh % d.H, k0 = kt * kTile;
  const int64_t j0 = k0 + warp * 16 + g;  // this thread's keys: j0 and j0 + 8
  const int64_t nq = d.q_tiles(), nk = d.k_tiles(), column_of_map = b * nq * nk + kt;
  const bf16* qh = q + bh * d.q_padded() * HD;
  const bf16* doh = dout + bh * d.q_padded() * HD;
  float dk_acc[HD / 8][4], dv_acc[HD / 8][4];
  zero<HD>(dk_acc);
  zero<HD>(dv_acc);
  auto copy_query_tile = [&](int64_t qt, int stage) {
    bf16* to = sqdo + 2 * stage * tile;
    copy_tile<HD>(qh + qt * kTile * HD, to);
    copy_tile<HD>(doh + qt * kTile * HD, to + tile);
    copy_row_stats(lse, dsum, bh * d.q_padded() + qt * kTile, sstats + 128 * stage, sstats + 128 * stage + 64);
  };
  int64_t qt = next_seen(map, column_of_map, nk, 0, nq);
  if (qt < nq) {
    copy_tile<HD>(k + (bh * d.k_padded() + k0) * HD, sk);
    copy_tile<HD>(v + (bh * d.k_padded() + k0) * HD, sv);
    copy_query_tile(qt, 0);
    cp_async_commit();
  }
  for (int stage = 0; qt < nq; stage ^= 1) {
    const int64_t next = next_seen(map, column_of_map, nk, qt + 1, nq);
    if (next < nq) copy_query_tile(next, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const bf16* sq = sqdo + 2 * stage * tile;
    const bf16* sdo = sq + tile;
    const float* slse = sstats + 128 * stage;
    const float* sd = slse + 64;
    const TileClass cls = (TileClass)map[column_of_map + qt * nk];
    const int64_t q0 = qt * kTile;
    // K's and V's fragments are read again for each query tile rather than
    // held: with both gradients accumulating, registers are what is short.
    uint32_t kvf[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) load_a(kvf[kk], sk, ld, warp * 16, kk * 16, lane);
    float p[8][4];  // Sᵀ, then Pᵀ (keys × queries)
    zero<64>(p);
    product_b_rows<64, HD>(p, kvf, sq, ld, lane);  // Sᵀ = K Qᵀ
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = 8 * n + 2 * t + e % 2;  // the query column
        const bool off = cls == kMixed && hidden(mask, d, b, q0 + c, j0 + 8 * (e / 2));
        p[n][e] = off ? 0.f : __expf(p[n][e] * d.scale - slse[c]);
      }
    uint32_t af[4][4];
    c_to_a(af, p);
    product_b_cols<HD, 64>(dv_acc, af, sdo, ld, lane);  // dV += Pᵀ dO
    float ds[8][4];                                     // dPᵀ, then dSᵀ
    zero<64>(ds);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) load_a(kvf[kk], sv, ld, warp * 16, kk * 16, lane);
    product_b_rows<64, HD>(ds, kvf, sdo, ld, lane);  // dPᵀ = V dOᵀ
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) ds[n][e] = p[n][e] * (ds[n][e] - sd[8 * n + 2 * t + e % 2]) * d.scale;
    c_to_a(af, ds);
    product_b_cols<HD, 64>(dk_acc, af, sq, ld, lane);  // dK += dSᵀ Q
    __syncthreads();  // every warp is done with this stage before the next iteration refills it
    qt = next;
  }
  store_rows<HD>(dv_acc, dv, d.ld, d.Tk, b, h, k0 + warp * 16, lane);
  store_rows<HD>(dk_acc, dk, d.ld, d.Tk, b, h, k0 + warp * 16, lane);
}

// dQ of one query tile: its warps own 16 rows each and walk the key tiles it
// sees, the next one's K and V copied while this one's are used.
template <int HD>
__global__ void __launch_bounds__(kThreads)
    k_flash_backward_dq(const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const float* lse,
                        const float* dsum, const uint8_t* mask, const uint8_t* map, Dims d, float* dq) {
  constexpr int ld = HD + kPad, tile = kTile * ld;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sq = reinterpret_cast<bf16*>(smem);
  bf16* sdo = sq + tile;
  bf16* skv = sdo + tile;  // stage s: K at skv + 2s·tile, V after it
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t bh = blockIdx.y, qt = blockIdx.x, b = bh / d.H, h = bh % d.H, q0 = qt * kTile;
  const int64_t i0 = q0 + warp * 16 + g;
  const int64_t nk = d.k_tiles(), row_of_map = (b * d.q_tiles() + qt) * nk;
  const bf16* kh = k + bh * d.k_padded() * HD;
  const bf16* vh = v + bh * d.k_padded() * HD;
  float row_lse[2], row_d[2];  // the padded rows: +∞ and 0, so P = 0 there
  for (int r = 0; r < 2; ++r) {
    row_lse[r] = lse[bh * d.q_padded() + i0 + 8 * r];
    row_d[r] = dsum[bh * d.q_padded() + i0 + 8 * r];
  }
  float dq_acc[HD / 8][4];
  zero<HD>(dq_acc);
  uint32_t qf[HD / 16][4], dof[HD / 16][4];
  int64_t kt = next_seen(map, row_of_map, 1, 0, nk);
  if (kt < nk) {
    copy_tile<HD>(q + (bh * d.q_padded() + q0) * HD, sq);
    copy_tile<HD>(dout + (bh * d.q_padded() + q0) * HD, sdo);
    cp_async_commit();
    copy_key_tile<HD>(kh, vh, kt, skv);
    cp_async_commit();
    cp_async_wait<1>();  // Q and dO
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      load_a(qf[kk], sq, ld, warp * 16, kk * 16, lane);
      load_a(dof[kk], sdo, ld, warp * 16, kk * 16, lane);
    }
  }
  for (int stage = 0; kt < nk; stage ^= 1) {
    const int64_t next = next_seen(map, row_of_map, 1, kt + 1, nk);
    if (next < nk) copy_key_tile<HD>(kh, vh, next, skv + 2 * (stage ^ 1) * tile);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const bf16* sk = skv + 2 * stage * tile;
    const bf16* sv = sk + tile;
    const TileClass cls = (TileClass)map[row_of_map + kt];
    const int64_t k0 = kt * kTile;
    float p[8][4], ds[8][4];
    zero<64>(p);
    zero<64>(ds);
    product_b_rows<64, HD>(p, qf, sk, ld, lane);    // S = Q Kᵀ
    product_b_rows<64, HD>(ds, dof, sv, ld, lane);  // dP = dO Vᵀ
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const bool off = cls == kMixed && hidden(mask, d, b, i0 + 8 * r, k0 + 8 * n + 2 * t + e % 2);
        const float pe = off ? 0.f : __expf(p[n][e] * d.scale - row_lse[r]);
        ds[n][e] = pe * (ds[n][e] - row_d[r]) * d.scale;
      }
    uint32_t af[4][4];
    c_to_a(af, ds);
    product_b_cols<HD, 64>(dq_acc, af, sk, ld, lane);  // dQ += dS K
    __syncthreads();
    kt = next;
  }
  store_rows<HD>(dq_acc, dq, d.ld, d.Tq, b, h, q0 + warp * 16, lane);
}

// Launches a kernel with its dynamic shared memory (above the 48 KiB default, so the limit is raised first).
template <class Kernel, class... Args>
void launch(Kernel kernel, size_t smem, dim3 grid, Args... args) {
  TAPELM_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  kernel<<<grid, kThreads, smem, stream()>>>(args...);
  TAPELM_CUDA_LAUNCHED();
}

unsigned blocks_for(int64_t threads) { return (unsigned)((threads + 255) / 256); }

template <int HD>
void round_hd(const float* q, const float* k, const float* v, const Dims& d, bf16* q16, bf16* k16, bf16* v16) {
  const int64_t q_total = d.B * d.H * d.q_padded() * (HD / 8), k_total = d.B * d.H * d.k_padded() * (HD / 8);
  k_round_heads<HD><<<blocks_for(q_total), 256, 0, stream()>>>(q, d.ld, d.Tq, d.q_padded(), d.H, q_total, q16);
  TAPELM_CUDA_LAUNCHED();
  if (d.Tk == 0) return;
  k_round_heads<HD><<<blocks_for(k_total), 256, 0, stream()>>>(k, d.ld, d.Tk, d.k_padded(), d.H, k_total, k16);
  TAPELM_CUDA_LAUNCHED();
  k_round_heads<HD><<<blocks_for(k_total), 256, 0, stream()>>>(v, d.ld, d.Tk, d.k_padded(), d.H, k_total, v16);
  TAPELM_CUDA_LAUNCHED();
}

template <int HD>
void forward_hd(const bf16* q, const bf16* k, const bf16* v, const uint8_t* mask, const uint8_t* map, const Dims& d,
                float* o, float* lse) {
  launch(k_flash_forward<HD>, 5 * tile_bytes<HD>(), dim3((unsigned)d.q_tiles(), (unsigned)(d.B * d.H)), q, k, v, mask,
         map, d, o, lse);
}

template <int HD>
void backward_hd(const bf16* q, const bf16* k, const bf16* v, const float* out, const float* dout, const float* lse,
                 const uint8_t* mask, const uint8_t* map, const Dims& d, float* dq, float* dk, float* dv) {
  const int64_t rows = d.B * d.H * d.q_padded();
  bf16* dout16 = static_cast<bf16*>(allocate(rows * HD * sizeof(bf16)));
  float* dsum = static_cast<float*>(allocate(rows * sizeof(float)));
  const int64_t total = rows * (HD / 8);
  k_backward_rows<HD><<<blocks_for(total), 256, 0, stream()>>>(dout, out, d.Tq, d.q_padded(), d.H, total, dout16, dsum);
  TAPELM_CUDA_LAUNCHED();
  const unsigned bh = (unsigned)(d.B * d.H);
  launch(k_flash_backward_dkdv<HD>, 6 * tile_bytes<HD>() + 4 * kTile * sizeof(float), dim3((unsigned)d.k_tiles(), bh),
         q, k, v, dout16, lse, dsum, mask, map, d, dk, dv);
  launch(k_flash_backward_dq<HD>, 6 * tile_bytes<HD>(), dim3((unsigned)d.q_tiles(), bh), q, k, v, dout16, lse, dsum,
         mask, map, d, dq);
  release(dout16);  // stream-ordered: after the kernels that read them
  release(dsum);
}

Dims dims_of(const FlashAttentionShape& s) {
  return {s.batch, s.tq, s.tk, s.heads, s.row_stride ? s.row_stride : s.heads * s.head_dim, s.scale};
}

Error bad_head_size(int64_t head_dim) {
  return Error(fmt::format("flash attention: head size {} (32, 64 or 128)", head_dim));
}

}  // namespace

bool flash_attention_supported(int64_t head_dim) { return head_dim == 32 || head_dim == 64 || head_dim == 128; }

int64_t flash_attention_padded(int64_t t) { return (t + kTile - 1) / kTile * kTile; }

int64_t flash_attention_tile_map_size(const FlashAttentionShape& s) {
  const Dims d = dims_of(s);
  return d.B * d.q_tiles() * d.k_tiles();
}

void flash_attention_tile_map(const uint8_t* mask, const FlashAttentionShape& s, uint8_t* map) {
  const Dims d = dims_of(s);
  TAPELM_CHECK(d.B <= 65535 && d.B * d.H <= 65535, "flash attention: batch {} × heads {} past the grid's 65535", d.B,
               d.H);
  if (d.B == 0 || d.Tq == 0 || d.Tk == 0) return;
  TAPELM_CHECK(d.k_tiles() <= 65535, "flash attention: {} keys past the grid's 65535 tiles", d.Tk);
  k_tile_classes<<<dim3((unsigned)d.q_tiles(), (unsigned)d.k_tiles(), (unsigned)d.B), 256, 0, stream()>>>(mask, d, map);
  TAPELM_CUDA_LAUNCHED();
}

void flash_attention_round_operands(const float* q, const float* k, const float* v, const FlashAttentionShape& s,
                                    void* q16, void* k16, void* v16) {
  const Dims d = dims_of(s);
  if (d.B == 0 || d.Tq == 0) return;
  auto* q_ = static_cast<bf16*>(q16);
  auto* k_ = static_cast<bf16*>(k16);
  auto* v_ = static_cast<bf16*>(v16);
  switch (s.head_dim) {
    case 32:
      return round_hd<32>(q, k, v, d, q_, k_, v_);
    case 64:
      return round_hd<64>(q, k, v, d, q_, k_, v_);
    case 128:
      return round_hd<128>(q, k, v, d, q_, k_, v_);
  }
  throw bad_head_size(s.head_dim);
}

void flash_attention_forward(const void* q16, const void* k16, const void* v16, const uint8_t* mask,
                             const uint8_t* map, const FlashAttentionShape& s, float* out, float* lse) {
  const Dims d = dims_of(s);
  if (d.B == 0 || d.Tq == 0) return;
  auto* q = static_cast<const bf16*>(q16);
  auto* k = static_cast<const bf16*>(k16);
  auto* v = static_cast<const bf16*>(v16);
  switch (s.head_dim) {
    case 32:
      return forward_hd<32>(q, k, v, mask, map, d, out, lse);
    case 64:
      return forward_hd<64>(q, k, v, mask, map, d, out, lse);
    case 128:
      return forward_hd<128>(q, k, v, mask, map, d, out, lse);
  }
  throw bad_head_size(s.head_dim);
}

void flash_attention_backward(const void* q16, const void* k16, const void* v16, const float* out, const float* dout,
                              const float* lse, const uint8_t* mask, const uint8_t* map, const FlashAttentionShape& s,
                              float* dq, float* dk, float* dv) {
  const Dims d = dims_of(s);
  if (d.B == 0 || d.Tq == 0 || d.Tk == 0) return;
  auto* q = static_cast<const bf16*>(q16);
  auto* k = static_cast<const bf16*>(k16);
  auto* v = static_cast<const bf16*>(v16);
  switch (s.head_dim) {
    case 32:
      return backward_hd<32>(q, k, v, out, dout, lse, mask, map, d, dq, dk, dv);
    case 64:
      return backward_hd<64>(q, k, v, out, dout, lse, mask, map, d, dq, dk, dv);
    case 128:
      return backward_hd<128>(q, k, v, out, dout, lse, mask, map, d, dq, dk, dv);
  }
  throw bad_head_size(s.head_dim);
}

}  // namespace tapelm::cuda
