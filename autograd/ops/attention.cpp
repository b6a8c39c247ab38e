// Fused scaled dot-product attention (Vaswani et al. 2017, eq. 1) with a
// boolean mask, one (batch, head) pair per OpenMP task:
//   S = scale·Q Kᵀ,  S[i,j] = −∞ where mask[i,j],  P = softmax_rows(S),  O = P V
// Backward (G = dO):
//   dV = Pᵀ G,  dP = G Vᵀ,  dS = P ⊙ (dP − rowsum(dP ⊙ P)),  dQ = scale·dS K,  dK = scale·dSᵀ Q
// Q, K, V and O use the [B, T, H, hd] layout (what a [B,T,C] projection gives
// after a free reshape); each head is read in place through an Eigen map with
// row stride H·hd, so no permute copies are made. Only P is saved.
// A row whose keys are all masked gives zeros (as softmax does).
// Queries run in blocks of kQueryBlock rows, each against keys [0, kend):
// kend is one past the last key the mask lets any row of the block see, so a
// causal mask skips the masked upper triangle (about 45% of the products at
// T = 256) and P stays zero there, as softmax would make it.
// FLOPs: the GEMMs, booked as "attention", are 4·Tq·Tk·hd forward and
// 8·Tq·Tk·hd backward per (batch, head), the same full-square count as the
// composed matmul form; scale, mask and softmax are booked as
// "attention.softmax": 7 per score forward, 5 backward.
#include <Eigen/Core>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/runtime.h"
#include "autograd/device_dispatch.h"
#include "autograd/eigen_maps.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {

struct Dims {
  int64_t B, Tq, Tk, H, hd;
};

constexpr int64_t kQueryBlock = 32;

// For each batch row and query block, one past the last unmasked key of any
// query in the block (Tk without a mask).
std::vector<int64_t> block_key_ends(const uint8_t* mask, const Dims& d) {
  const int64_t blocks = ceil_div(d.Tq, kQueryBlock);
  std::vector<int64_t> ends(d.B * blocks, d.Tk);
  if (!mask) return ends;
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      int64_t end = 0;
      for (int64_t i = blk * kQueryBlock; i < std::min(d.Tq, (blk + 1) * kQueryBlock); ++i) {
        const uint8_t* row = mask + (b * d.Tq + i) * d.Tk;
        for (int64_t j = d.Tk - 1; j >= end; --j)
          if (!row[j]) {
            end = j + 1;
            break;
          }
      }
      ends[b * blocks + blk] = end;
    }
  return ends;
}

// bf16 mode at head sizes 32, 64, 128: the fused kernel
// (autograd/cuda/flash_attention.cu), which saves only each row's
// log-sum-exp; the backward recomputes P. Same FLOP count as the other forms.
// `inputs` is {q, k, v}, or {qkv} packed [B,T,3·H·hd] (attention_qkv): the
// kernels read the three in place, token rows 3·H·hd apart, and write the
// gradient as one packed tensor, so no split copies or gradient concatenation.
Tensor flash_attention_cuda(const std::vector<Tensor>& inputs, const Tensor& mask, double scale, const Dims& d) {
  const bool packed = inputs.size() == 1;
  const int64_t width = d.H * d.hd;
  cuda::FlashAttentionShape shape{d.B, d.Tq, d.Tk, d.H, d.hd, (float)scale, packed ? 3 * width : width};
  // q, k and v (or their gradients) within the given tensors.
  auto parts = [=](const std::vector<Tensor>& t) {
    return packed ? std::array<float*, 3>{t[0].cuda_data<float>(), t[0].cuda_data<float>() + width,
                                          t[0].cuda_data<float>() + 2 * width}
                  : std::array<float*, 3>{t[0].cuda_data<float>(), t[1].cuda_data<float>(), t[2].cuda_data<float>()};
  };
  const uint8_t* pm = mask.defined() ? mask.cuda_data<uint8_t>() : nullptr;
  Tensor tile_map = Tensor::empty({cuda::flash_attention_tile_map_size(shape)}, DType::b8, Device::cuda);
  cuda::flash_attention_tile_map(pm, shape, tile_map.cuda_data<uint8_t>());
  // The kernels' bfloat16 copies of q, k and v (head-major, whole tiles), kept for the backward.
  const int64_t q_elements = d.B * d.H * cuda::flash_attention_padded(d.Tq) * d.hd,
                k_elements = d.B * d.H * cuda::flash_attention_padded(d.Tk) * d.hd;
  const std::shared_ptr<void> operands(cuda::allocate((q_elements + 2 * k_elements) * 2), cuda::release);
  // The copies within that one buffer (2 bytes an element): q16, k16, v16.
  auto copies = [=] {
    char* q16 = static_cast<char*>(operands.get());
    return std::array<char*, 3>{q16, q16 + 2 * q_elements, q16 + 2 * (q_elements + k_elements)};
  };
  const auto [q16, k16, v16] = copies();
  const std::array<float*, 3> in = parts(inputs);
  cuda::flash_attention_round_operands(in[0], in[1], in[2], shape, q16, k16, v16);
  Tensor out = Tensor::empty({d.B, d.Tq, d.H, d.hd}, DType::f32, Device::cuda);
  Tensor lse = Tensor::empty({d.B, d.H, cuda::flash_attention_padded(d.Tq)}, DType::f32, Device::cuda);
  cuda::flash_attention_forward(q16, k16, v16, pm, tile_map.cuda_data<uint8_t>(), shape, out.cuda_data<float>(),
                                lse.cuda_data<float>());
  const int64_t scores = d.B * d.H * d.Tq * d.Tk;
  FlopCounter::add("attention", 4 * scores * d.hd);
  FlopCounter::add("attention.softmax", 7 * scores);
  return record("attention", out, inputs, [=](const Tensor& given) -> std::vector<Tensor> {
    // A gradient that does not start on 16 bytes (a view at an offset) is copied to one that does.
    const Tensor grad = reinterpret_cast<uintptr_t>(given.cuda_data<float>()) % 16 ? given.clone() : given;
    std::vector<Tensor> grads;
    for (const Tensor& t : inputs) grads.push_back(Tensor::empty_like(t));
    const std::array<float*, 3> g = parts(grads);
    const auto [q16, k16, v16] = copies();  // the closure holds the buffer
    cuda::flash_attention_backward(q16, k16, v16, out.cuda_data<float>(), grad.cuda_data<float>(),
                                   lse.cuda_data<float>(), mask.defined() ? mask.cuda_data<uint8_t>() : nullptr,
                                   tile_map.cuda_data<uint8_t>(), shape, g[0], g[1], g[2]);
    FlopCounter::add("attention", 8 * scores * d.hd);
    FlopCounter::add("attention.softmax", 5 * scores);
    return grads;
  });
}

// The fused kernel reads rows as float4: its inputs must start on 16 bytes (fresh tensors do).
bool aligned_16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.cuda_data<float>()) % 16 == 0; }

bool flash_applies(const Dims& d) {
  return gpu_precision() == Precision::bf16 && cuda::flash_attention_supported(d.hd);
}

// The CUDA form: the same equations through cuBLAS, batched over the heads
// (one call per batch row: a head is read in place at column h·hd with row
// stride H·hd) and masked-softmax kernels. It computes the whole Tq×Tk square
// (masked scores get P = 0); the fused kernel that keeps P out of memory is
// part 2's (docs/cuda.md). In fp32, P [B,H,Tq,Tk] is saved in float32, as on
// the CPU. In bf16 (autocast's products), P and dS exist only as the
// bfloat16 operands the products read: the softmax kernels write them so, at
// half the bytes, with no separate rounding pass.
Tensor attention_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double scale,
                      const Dims& d) {
  TAPELM_CHECK(q.dtype() == DType::f32, "attention: cuda runs float32, got {}", dtype_name(q.dtype()));
  const Tensor mask_on_device = mask.defined() && !mask.is_cuda() ? mask.to(Device::cuda) : mask;
  if (flash_applies(d) && aligned_16(q) && aligned_16(k) && aligned_16(v))
    return flash_attention_cuda({q, k, v}, mask_on_device, scale, d);
  const cuda::Element pe = gpu_precision() == Precision::bf16 ? cuda::Element::bf16 : cuda::Element::f32;
  const int64_t row_stride = d.H * d.hd, square = d.Tq * d.Tk, scores = d.B * d.H * square;
  const size_t p_bytes = scores * (pe == cuda::Element::bf16 ? 2 : 4);
  // A buffer of the pool, held by the backward closure (P) or by this call (S, dP, dS).
  auto buffer = [](size_t bytes) { return std::shared_ptr<void>(cuda::allocate(bytes), cuda::release); };
  Tensor out = Tensor::empty_like(q);
  std::shared_ptr<void> probs = buffer(p_bytes);
  // Batch row b of a [B,T,H,hd] tensor as H matrices T×hd, and of [B,H,Tq,Tk] scores as H matrices Tq×Tk.
  auto heads = [=](const Tensor& t, int64_t T, int64_t b) {
    return cuda::MatrixRef{t.cuda_data<float>() + b * T * row_stride, row_stride, d.hd};
  };
  auto heads_out = [=](const Tensor& t, int64_t T, int64_t b) {
    return cuda::MutableMatrixRef{t.cuda_data<float>() + b * T * row_stride, row_stride, d.hd};
  };
  auto squares = [=](const void* p, cuda::Element e, int64_t b) {
    return cuda::MatrixRef{(const char*)p + b * d.H * square * (e == cuda::Element::bf16 ? 2 : 4), d.Tk, square, e};
  };
  auto squares_out = [=](float* p, int64_t b) { return cuda::MutableMatrixRef{p + b * d.H * square, d.Tk, square}; };
  {
    std::shared_ptr<void> s = pe == cuda::Element::f32 ? probs : buffer(scores * 4);  // fp32: S becomes P in place
    float* ps = static_cast<float*>(s.get());
    for (int64_t b = 0; b < d.B; ++b)  // S = Q Kᵀ
      cuda::gemm(false, true, d.Tq, d.Tk, d.hd, heads(q, d.Tq, b), heads(k, d.Tk, b), squares_out(ps, b), d.H, 0.f);
    cuda::masked_softmax(ps, mask.defined() ? mask_on_device.cuda_data<uint8_t>() : nullptr, probs.get(), pe, d.B, d.H,
                         d.Tq, d.Tk, (float)scale);
  }
  for (int64_t b = 0; b < d.B; ++b)  // O = P V
    cuda::gemm(false, false, d.Tq, d.hd, d.Tk, squares(probs.get(), pe, b), heads(v, d.Tk, b), heads_out(out, d.Tq, b),
               d.H, 0.f);
  FlopCounter::add("attention", 4 * scores * d.hd);
  FlopCounter::add("attention.softmax", 7 * scores);
  return record("attention", out, {q, k, v}, [=](const Tensor& grad) -> std::vector<Tensor> {
    Tensor dq = Tensor::empty_like(q), dk = Tensor::empty_like(k);
    Tensor dv = Tensor::empty_like(v);
    std::shared_ptr<void> dp = buffer(scores * 4), ds = pe == cuda::Element::f32 ? dp : buffer(p_bytes);
    for (int64_t b = 0; b < d.B; ++b) {
      cuda::gemm(true, false, d.Tk, d.hd, d.Tq, squares(probs.get(), pe, b), heads(grad, d.Tq, b),
                 heads_out(dv, d.Tk, b), d.H, 0.f);  // dV = Pᵀ G
      cuda::gemm(false, true, d.Tq, d.Tk, d.hd, heads(grad, d.Tq, b), heads(v, d.Tk, b),
                 squares_out(static_cast<float*>(dp.get()), b), d.H, 0.f);  // dP = G Vᵀ
    }
    // dS = scale·P ⊙ (dP − rowsum(dP ⊙ P))
    cuda::masked_softmax_backward(probs.get(), pe, static_cast<const float*>(dp.get()), ds.get(), pe, d.B * d.H * d.Tq,
                                  d.Tk, (float)scale);
    for (int64_t b = 0; b < d.B; ++b) {
      cuda::gemm(false, false, d.Tq, d.hd, d.Tk, squares(ds.get(), pe, b), heads(k, d.Tk, b), heads_out(dq, d.Tq, b),
                 d.H, 0.f);  // dQ = dS K
      cuda::gemm(true, false, d.Tk, d.hd, d.Tq, squares(ds.get(), pe, b), heads(q, d.Tq, b), heads_out(dk, d.Tk, b),
                 d.H, 0.f);  // dK = dSᵀ Q
    }
    FlopCounter::add("attention", 8 * scores * d.hd);
    FlopCounter::add("attention.softmax", 5 * scores);
    return {dq, dk, dv};
  });
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                    double scale) {
  const char* op = "attention";
  const Device device = op_device("scaled_dot_product_attention", {&q, &k, &v});
  TAPELM_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && k.shape() == v.shape() && q.size(0) == k.size(0) &&
                   q.size(2) == k.size(2) && q.size(3) == k.size(3),
               "attention: q {}, k {}, v {}: expected [B,Tq,H,hd] and two [B,Tk,H,hd]", q.str_shape(), k.str_shape(),
               v.str_shape());
  TAPELM_CHECK(q.dtype() == k.dtype() && k.dtype() == v.dtype(), "attention: dtypes differ");
  const Dims d{q.size(0), q.size(1), k.size(1), q.size(2), q.size(3)};
  TAPELM_CHECK(!mask.defined() || (mask.dtype() == DType::b8 && mask.numel() == d.B * d.Tq * d.Tk),
               "attention: mask {} must be bool with B·Tq·Tk = {} elements ([B,1,Tq,Tk] or [B,Tq,Tk])",
               mask.defined() ? mask.str_shape() : "", d.B * d.Tq * d.Tk);
  if (device == Device::cuda) return attention_cuda(q, k, v, mask, scale, d);
  TAPELM_CHECK(!mask.defined() || !mask.is_cuda(), "attention: the mask is on cuda and q, k, v on the cpu");
  Tensor out = Tensor::empty(q.shape(), q.dtype());
  Tensor probs = Tensor::empty({d.B, d.H, d.Tq, d.Tk}, q.dtype());
  const int64_t row_stride = d.H * d.hd;
  auto kend =
      std::make_shared<const std::vector<int64_t>>(block_key_ends(mask.defined() ? mask.data<uint8_t>() : nullptr, d));
  dispatch_float(op, q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const uint8_t* pm = mask.defined() ? mask.data<uint8_t>() : nullptr;
    const int64_t blocks = ceil_div(d.Tq, kQueryBlock);
#pragma omp parallel for schedule(static) if (d.B * d.H > 1)
    for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
      const int64_t b = bh / d.H, h = bh % d.H;
      const Eigen::OuterStride<> s(row_stride);
      ConstStridedMatrixMap<T> Q(q.data<T>() + b * d.Tq * row_stride + h * d.hd, d.Tq, d.hd, s);
      ConstStridedMatrixMap<T> K(k.data<T>() + b * d.Tk * row_stride + h * d.hd, d.Tk, d.hd, s);
      ConstStridedMatrixMap<T> V(v.data<T>() + b * d.Tk * row_stride + h * d.hd, d.Tk, d.hd, s);
      StridedMatrixMap<T> O(out.data<T>() + b * d.Tq * row_stride + h * d.hd, d.Tq, d.hd, s);
      Eigen::Map<RowMajorMatrix<T>> P(probs.data<T>() + bh * d.Tq * d.Tk, d.Tq, d.Tk);
      const uint8_t* mb = pm ? pm + b * d.Tq * d.Tk : nullptr;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t i0 = blk * kQueryBlock, rows = std::min(kQueryBlock, d.Tq - i0), ke = (*kend)[b * blocks + blk];
        auto Pb = P.block(i0, 0, rows, ke);
        P.block(i0, ke, rows, d.Tk - ke).setZero();
        Pb.noalias() = Q.middleRows(i0, rows) * K.topRows(ke).transpose();
        for (int64_t i = i0; i < i0 + rows; ++i) {
          auto row = P.row(i).head(ke).array();
          row *= T(scale);
          if (mb)
            for (int64_t j = 0; j < ke; ++j)
              if (mb[i * d.Tk + j]) row(j) = -std::numeric_limits<T>::infinity();
          const T m = ke ? row.maxCoeff() : -std::numeric_limits<T>::infinity();
          if (m == -std::numeric_limits<T>::infinity()) {
            row.setZero();
            continue;
          }
          row = (row - m).exp();
          row *= T(1) / row.sum();
        }
        O.middleRows(i0, rows).noalias() = Pb * V.topRows(ke);
      }
    }
  });
  const int64_t scores = d.B * d.H * d.Tq * d.Tk;
  FlopCounter::add(op, 4 * scores * d.hd);
  FlopCounter::add("attention.softmax", 7 * scores);
  return record(op, out, {q, k, v}, [q, k, v, probs, d, scale, kend](const Tensor& grad) -> std::vector<Tensor> {
    Tensor dq = Tensor::empty(q.shape(), q.dtype()), dk = Tensor::empty(k.shape(), k.dtype());
    Tensor dv = Tensor::empty(v.shape(), v.dtype());
    const int64_t row_stride = d.H * d.hd;
    dispatch_float("attention", q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const int64_t blocks = ceil_div(d.Tq, kQueryBlock);
#pragma omp parallel for schedule(static) if (d.B * d.H > 1)
      for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
        const int64_t b = bh / d.H, h = bh % d.H;
        const int64_t oq = b * d.Tq * row_stride + h * d.hd, ok = b * d.Tk * row_stride + h * d.hd;
        const Eigen::OuterStride<> s(row_stride);
        ConstStridedMatrixMap<T> Q(q.data<T>() + oq, d.Tq, d.hd, s), K(k.data<T>() + ok, d.Tk, d.hd, s);
        ConstStridedMatrixMap<T> V(v.data<T>() + ok, d.Tk, d.hd, s), G(grad.data<T>() + oq, d.Tq, d.hd, s);
        StridedMatrixMap<T> dQ(dq.data<T>() + oq, d.Tq, d.hd, s), dK(dk.data<T>() + ok, d.Tk, d.hd, s);
        StridedMatrixMap<T> dV(dv.data<T>() + ok, d.Tk, d.hd, s);
        Eigen::Map<const RowMajorMatrix<T>> P(probs.data<T>() + bh * d.Tq * d.Tk, d.Tq, d.Tk);
        dK.setZero();
        dV.setZero();
        RowMajorMatrix<T> dS(kQueryBlock, d.Tk);
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t i0 = blk * kQueryBlock, rows = std::min(kQueryBlock, d.Tq - i0), ke = (*kend)[b * blocks + blk];
          const auto Pb = P.block(i0, 0, rows, ke);
          const auto Gb = G.middleRows(i0, rows);
          dV.topRows(ke).noalias() += Pb.transpose() * Gb;
          auto dSb = dS.topLeftCorner(rows, ke);
          dSb.noalias() = Gb * V.topRows(ke).transpose();  // dP, then dS in place
          for (int64_t i = 0; i < rows; ++i) {
            auto ds = dSb.row(i).array();
            const auto p = Pb.row(i).array();
            ds = p * (ds - (ds * p).sum()) * T(scale);
          }
          dQ.middleRows(i0, rows).noalias() = dSb * K.topRows(ke);
          dK.topRows(ke).noalias() += dSb.transpose() * Q.middleRows(i0, rows);
        }
      }
    });
    const int64_t scores = d.B * d.H * d.Tq * d.Tk;
    FlopCounter::add("attention", 8 * scores * d.hd);
    FlopCounter::add("attention.softmax", 5 * scores);
    return {dq, dk, dv};
  });
}

Tensor attention_qkv(const Tensor& qkv, int64_t heads, const Tensor& mask, double scale) {
  TAPELM_CHECK(qkv.dim() == 3 && heads > 0 && qkv.size(2) % (3 * heads) == 0,
               "attention_qkv: qkv {} must be [B,T,3·H·hd] for {} heads", qkv.str_shape(), heads);
  const int64_t B = qkv.size(0), T = qkv.size(1), hd = qkv.size(2) / (3 * heads);
  const Dims d{B, T, T, heads, hd};
  if (qkv.is_cuda() && flash_applies(d) && aligned_16(qkv)) {
    TAPELM_CHECK(!mask.defined() || (mask.dtype() == DType::b8 && mask.numel() == B * T * T),
                 "attention_qkv: mask {} must be bool with B·T·T = {} elements", mask.defined() ? mask.str_shape() : "",
                 B * T * T);
    return flash_attention_cuda({qkv}, mask.defined() && !mask.is_cuda() ? mask.to(Device::cuda) : mask, scale, d);
  }
  // Every other case: the three parts as tensors of their own.
  std::vector<Tensor> parts = split(qkv, {heads * hd, heads * hd, heads * hd}, -1);
  for (Tensor& p : parts) p = reshape(p, {B, T, heads, hd});
  return scaled_dot_product_attention(parts[0], parts[1], parts[2], mask, scale);
}

}  // namespace tapelm
