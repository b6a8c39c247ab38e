// Fused attention for bf16 mode, FlashAttention-2 (Dao 2023): the T×T scores
// never reach memory. A block of four warps takes 64 rows of one (batch,
// head), a warp 16 of them, and streams tiles of 64 keys through shared
// memory, rounded to bfloat16 as they load (the rounding autocast gives a
// product's operands). Every product is a tensor-core mma.sync
// m16n8k16 (bfloat16 in, float32 accumulate) on register fragments fed by
// ldmatrix; scores, probabilities and the output accumulate in registers, and
// a score tile becomes the next product's operand without leaving them (the
// C fragment of m16n8 pairs is the A fragment of m16n8k16). The softmax is
// the online one (running max m and sum l per row, O rescaled by e^(m_old −
// m_new)) in float32; only each row's log-sum-exp is saved.
//
// Backward, with P recomputed from the log-sum-exp and D = rowsum(dO ⊙ O):
// one kernel per key tile accumulates dK = Σ dSᵀQ and dV = Σ PᵀdO over the
// query tiles (its warps own 16 keys each: Sᵀ = K Qᵀ), another per query
// tile accumulates dQ = Σ dS K over the key tiles. Each gradient element is
// summed by one thread in a fixed order: no atomics, the same bits every run.
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
  __device__ TileClass tile(const uint8_t* map, int64_t b, int64_t qt, int64_t kt) const {
    return (TileClass)map[(b * q_tiles() + qt) * k_tiles() + kt];
  }
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

// Rows [r0, r0 + 64) of head h of batch b of x (token rows ld apart, the head
// at column h·HD) into a bfloat16 tile (row stride HD + kPad); rows past T are zeros.
template <int HD>
__device__ void load_tile(const float* x, const Dims& d, int64_t T, int64_t b, int64_t h, int64_t r0, bf16* tile) {
  constexpr int ld = HD + kPad, quads = HD / 4;
  for (int e = threadIdx.x; e < kTile * quads; e += kThreads) {
    const int r = e / quads, c = 4 * (e % quads);
    const int64_t row = r0 + r;
    const float4 v = row < T ? *reinterpret_cast<const float4*>(x + (b * T + row) * d.ld + h * HD + c)
                             : make_float4(0.f, 0.f, 0.f, 0.f);
    uint2 packed;
    packed.x = pack_bf16(v.x, v.y), packed.y = pack_bf16(v.z, v.w);
    *reinterpret_cast<uint2*>(tile + r * ld + c) = packed;
  }
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

template <int HD>
__global__ void __launch_bounds__(kThreads)
    k_flash_forward(const float* q, const float* k, const float* v, const uint8_t* mask, const uint8_t* map, Dims d,
                    float* o, float* lse) {
  constexpr int ld = HD + kPad;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sq = reinterpret_cast<bf16*>(smem);
  bf16* sk = sq + kTile * ld;
  bf16* sv = sk + kTile * ld;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t qt = blockIdx.x, b = blockIdx.y / d.H, h = blockIdx.y % d.H, q0 = qt * kTile;
  const int64_t i0 = q0 + warp * 16 + g;  // this thread's rows: i0 and i0 + 8
  load_tile<HD>(q, d, d.Tq, b, h, q0, sq);
  __syncthreads();
  uint32_t qf[HD / 16][4];
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) load_a(qf[kk], sq, ld, warp * 16, kk * 16, lane);
  float acc[HD / 8][4];
  zero<HD>(acc);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // l: this thread's share of the row sums
  for (int64_t kt = 0; kt < d.k_tiles(); ++kt) {
    const TileClass cls = d.tile(map, b, qt, kt);
    if (cls == kHidden) continue;
    const int64_t k0 = kt * kTile;
    __syncthreads();  // every warp is done with the previous K and V
    load_tile<HD>(k, d, d.Tk, b, h, k0, sk);
    load_tile<HD>(v, d, d.Tk, b, h, k0, sv);
    __syncthreads();
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
      const int64_t i = i0 + 8 * r;
      if (i < d.Tq) lse[(b * d.H + h) * d.Tq + i] = l[r] > 0.f ? m[r] + logf(l[r]) : INFINITY;  // +∞: P = 0 later
    }
}

// ---- backward ------------------------------------------------------------------

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

// A row's log-sum-exp and D (rows past Tq: +∞ and 0, so P = 0 there).
__device__ inline void row_stats(const float* lse, const float* dsum, const Dims& d, int64_t b, int64_t h, int64_t i,
                                 float& l, float& dd) {
  l = i < d.Tq ? lse[(b * d.H + h) * d.Tq + i] : INFINITY;
  dd = i < d.Tq ? dsum[(b * d.H + h) * d.Tq + i] : 0.f;
}

// dO arrives as [B,Tq,H,HD] (the output's layout), q, k, v with row stride d.ld.
template <int HD>
__device__ void load_dout_tile(const float* dout, const Dims& d, int64_t b, int64_t h, int64_t r0, bf16* tile) {
  Dims dd = d;
  dd.ld = d.H * HD;
  load_tile<HD>(dout, dd, d.Tq, b, h, r0, tile);
}

// dK and dV of one key tile: its warps own 16 keys each and walk the query
// tiles that see any of its keys. Scores are held transposed (keys × queries).
template <int HD>
__global__ void __launch_bounds__(kThreads)
    k_flash_backward_dkdv(const float* q, const float* k, const float* v, const float* dout, const float* lse,
                          const float* dsum, const uint8_t* mask, const uint8_t* map, Dims d, float* dk, float* dv) {
  constexpr int ld = HD + kPad;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sk = reinterpret_cast<bf16*>(smem);
  bf16* sv = sk + kTile * ld;
  bf16* sq = sv + kTile * ld;
  bf16* sdo = sq + kTile * ld;
  float* slse = reinterpret_cast<float*>(sdo + kTile * ld);
  float* sd = slse + kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t kt = blockIdx.x, b = blockIdx.y / d.H, h = blockIdx.y % d.H, k0 = kt * kTile;
  const int64_t j0 = k0 + warp * 16 + g;  // this thread's keys: j0 and j0 + 8
  load_tile<HD>(k, d, d.Tk, b, h, k0, sk);
  load_tile<HD>(v, d, d.Tk, b, h, k0, sv);
  float dk_acc[HD / 8][4], dv_acc[HD / 8][4];
  zero<HD>(dk_acc);
  zero<HD>(dv_acc);
  for (int64_t qt = 0; qt < d.q_tiles(); ++qt) {
    const TileClass cls = d.tile(map, b, qt, kt);
    if (cls == kHidden) continue;
    const int64_t q0 = qt * kTile;
    __syncthreads();  // every warp is done with the previous Q and dO
    load_tile<HD>(q, d, d.Tq, b, h, q0, sq);
    load_dout_tile<HD>(dout, d, b, h, q0, sdo);
    for (int r = threadIdx.x; r < kTile; r += kThreads) row_stats(lse, dsum, d, b, h, q0 + r, slse[r], sd[r]);
    __syncthreads();
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
  }
  store_rows<HD>(dv_acc, dv, d.ld, d.Tk, b, h, k0 + warp * 16, lane);
  store_rows<HD>(dk_acc, dk, d.ld, d.Tk, b, h, k0 + warp * 16, lane);
}

// dQ of one query tile: its warps own 16 rows each and walk the key tiles it sees.
template <int HD>
__global__ void __launch_bounds__(kThreads)
    k_flash_backward_dq(const float* q, const float* k, const float* v, const float* dout, const float* lse,
                        const float* dsum, const uint8_t* mask, const uint8_t* map, Dims d, float* dq) {
  constexpr int ld = HD + kPad;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sq = reinterpret_cast<bf16*>(smem);
  bf16* sdo = sq + kTile * ld;
  bf16* sk = sdo + kTile * ld;
  bf16* sv = sk + kTile * ld;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t qt = blockIdx.x, b = blockIdx.y / d.H, h = blockIdx.y % d.H, q0 = qt * kTile;
  const int64_t i0 = q0 + warp * 16 + g;
  load_tile<HD>(q, d, d.Tq, b, h, q0, sq);
  load_dout_tile<HD>(dout, d, b, h, q0, sdo);
  __syncthreads();
  uint32_t qf[HD / 16][4], dof[HD / 16][4];
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    load_a(qf[kk], sq, ld, warp * 16, kk * 16, lane);
    load_a(dof[kk], sdo, ld, warp * 16, kk * 16, lane);
  }
  float row_lse[2], row_d[2];
  for (int r = 0; r < 2; ++r) row_stats(lse, dsum, d, b, h, i0 + 8 * r, row_lse[r], row_d[r]);
  float dq_acc[HD / 8][4];
  zero<HD>(dq_acc);
  for (int64_t kt = 0; kt < d.k_tiles(); ++kt) {
    const TileClass cls = d.tile(map, b, qt, kt);
    if (cls == kHidden) continue;
    const int64_t k0 = kt * kTile;
    __syncthreads();
    load_tile<HD>(k, d, d.Tk, b, h, k0, sk);
    load_tile<HD>(v, d, d.Tk, b, h, k0, sv);
    __syncthreads();
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

template <int HD>
void forward_hd(const float* q, const float* k, const float* v, const uint8_t* mask, const uint8_t* map, const Dims& d,
                float* o, float* lse) {
  launch(k_flash_forward<HD>, 3 * tile_bytes<HD>(), dim3((unsigned)d.q_tiles(), (unsigned)(d.B * d.H)), q, k, v, mask,
         map, d, o, lse);
}

template <int HD>
void backward_hd(const float* q, const float* k, const float* v, const float* dout, const float* lse, const float* dsum,
                 const uint8_t* mask, const uint8_t* map, const Dims& d, float* dq, float* dk, float* dv) {
  const unsigned bh = (unsigned)(d.B * d.H);
  launch(k_flash_backward_dkdv<HD>, 4 * tile_bytes<HD>() + 2 * kTile * sizeof(float), dim3((unsigned)d.k_tiles(), bh),
         q, k, v, dout, lse, dsum, mask, map, d, dk, dv);
  launch(k_flash_backward_dq<HD>, 4 * tile_bytes<HD>(), dim3((unsigned)d.q_tiles(), bh), q, k, v, dout, lse, dsum, mask,
         map, d, dq);
}

Dims dims_of(const FlashAttentionShape& s) {
  return {s.batch, s.tq, s.tk, s.heads, s.row_stride ? s.row_stride : s.heads * s.head_dim, s.scale};
}

}  // namespace

bool flash_attention_supported(int64_t head_dim) { return head_dim == 32 || head_dim == 64 || head_dim == 128; }

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

void flash_attention_forward(const float* q, const float* k, const float* v, const uint8_t* mask, const uint8_t* map,
                             const FlashAttentionShape& s, float* out, float* lse) {
  const Dims d = dims_of(s);
  if (d.B == 0 || d.Tq == 0) return;
  switch (s.head_dim) {
    case 32:
      return forward_hd<32>(q, k, v, mask, map, d, out, lse);
    case 64:
      return forward_hd<64>(q, k, v, mask, map, d, out, lse);
    case 128:
      return forward_hd<128>(q, k, v, mask, map, d, out, lse);
  }
  throw Error(fmt::format("flash attention: head size {} (32, 64 or 128)", s.head_dim));
}

void flash_attention_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                              const float* lse, const uint8_t* mask, const uint8_t* map, const FlashAttentionShape& s,
                              float* dq, float* dk, float* dv) {
  const Dims d = dims_of(s);
  if (d.B == 0 || d.Tq == 0 || d.Tk == 0) return;
  float* dsum = static_cast<float*>(allocate(d.B * d.H * d.Tq * sizeof(float)));
  const int64_t rows = d.B * d.Tq * d.H;
  k_row_dot<<<(unsigned)((rows + 7) / 8), 256, 0, stream()>>>(dout, out, dsum, rows, d.H, d.Tq, (int)s.head_dim);
  TAPELM_CUDA_LAUNCHED();
  switch (s.head_dim) {
    case 32:
      backward_hd<32>(q, k, v, dout, lse, dsum, mask, map, d, dq, dk, dv);
      break;
    case 64:
      backward_hd<64>(q, k, v, dout, lse, dsum, mask, map, d, dq, dk, dv);
      break;
    case 128:
      backward_hd<128>(q, k, v, dout, lse, dsum, mask, map, d, dq, dk, dv);
      break;
    default:
      release(dsum);
      throw Error(fmt::format("flash attention: head size {} (32, 64 or 128)", s.head_dim));
  }
  release(dsum);  // stream-ordered: after the kernels that read it
}

}  // namespace tapelm::cuda
