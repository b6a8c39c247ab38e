// Matrix product through Eigen GEMM on Eigen::Map views of our contiguous
// buffers: no copies, transposed operands read in place.
//
// Backward of C = op(A)·op(B) with G = dC:
//   d op(A) = G·op(B)ᵀ,  d op(B) = op(A)ᵀ·G,
// each mapped back through the transpose flags (see below), then summed over
// broadcast batch dimensions. Forward 2·m·n·k FLOPs, backward 4·m·n·k.
#include <Eigen/Core>

#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/gemm.h"
#include "autograd/ops.h"
#include "autograd/ops/activation.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Shape batch_of(const Shape& s) { return Shape(s.begin(), s.end() - 2); }

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const char* op = "matmul";
  TAPELM_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: {} @ {}: both operands need at least 2 dimensions", a.str_shape(),
               b.str_shape());
  TAPELM_CHECK(a.dtype() == b.dtype(), "matmul: {} @ {}: dtypes {} and {} differ", a.str_shape(), b.str_shape(),
               dtype_name(a.dtype()), dtype_name(b.dtype()));
  const int64_t m = ta ? a.size(-1) : a.size(-2);
  const int64_t k = ta ? a.size(-2) : a.size(-1);
  const int64_t kb = tb ? b.size(-1) : b.size(-2);
  const int64_t n = tb ? b.size(-2) : b.size(-1);
  TAPELM_CHECK(k == kb, "matmul: {}{} @ {}{}: inner dimensions {} and {} differ", a.str_shape(), ta ? "ᵀ" : "",
               b.str_shape(), tb ? "ᵀ" : "", k, kb);
  Shape batch = broadcast_shapes(op, batch_of(a.shape()), batch_of(b.shape()));
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  const int64_t nbatch = numel_of(batch);
  const Device device = op_device(op, {&a, &b});
  Tensor out = Tensor::empty(out_shape, a.dtype(), device);

  if (device == Device::cuda) {
    TAPELM_CHECK(a.dtype() == DType::f32, "matmul: cuda tensors must be float32, got {}", dtype_name(a.dtype()));
    const float *pa = a.cuda_data<float>(), *pb = b.cuda_data<float>();
    float* pc = out.cuda_data<float>();
    const bool a_full = batch_of(a.shape()) == batch, b_full = batch_of(b.shape()) == batch;
    if ((a_full || a.dim() == 2) && (b_full || b.dim() == 2)) {  // one strided-batched product
      cuda::gemm(ta, tb, m, n, k, pa, a.dim() == 2 ? 0 : m * k, pb, b.dim() == 2 ? 0 : k * n, pc, m * n, nbatch, 0.f);
    } else {  // a partial broadcast of the batch: one product per batch entry
      const Shape sa = broadcast_strides(batch_of(a.shape()), batch),
                  sb = broadcast_strides(batch_of(b.shape()), batch);
      for (int64_t i = 0; i < nbatch; ++i) {
        int64_t oa = 0, ob = 0;
        for (int64_t d = (int64_t)batch.size() - 1, r = i; d >= 0; --d) {
          oa += r % batch[d] * sa[d], ob += r % batch[d] * sb[d];
          r /= batch[d];
        }
        cuda::gemm(ta, tb, m, n, k, pa + oa * m * k, 0, pb + ob * k * n, 0, pc + i * m * n, 0, 1, 0.f);
      }
    }
  } else
    dispatch_float(op, a.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* pa = a.data<T>();
      const T* pb = b.data<T>();
      T* pc = out.data<T>();
      if (b.dim() == 2 && !ta) {
        // [..., m, k] @ [k, n]: one GEMM with the batch folded into the rows.
        gemm(pa, false, pb, tb, pc, nbatch * m, n, k);
        return;
      }
      Shape sa = broadcast_strides(batch_of(a.shape()), batch);
      Shape sb = broadcast_strides(batch_of(b.shape()), batch);
      auto offsets = [&](int64_t i, int64_t& oa, int64_t& ob) {
        oa = ob = 0;
        for (int64_t d = (int64_t)batch.size() - 1; d >= 0; --d) {
          int64_t idx = i % batch[d];
          i /= batch[d];
          oa += idx * sa[d];
          ob += idx * sb[d];
        }
      };
      // Many small products: one per thread, each single-threaded (gemm inside a
      // parallel region).
#pragma omp parallel for schedule(static) if (nbatch > 1)
      for (int64_t i = 0; i < nbatch; ++i) {
        int64_t oa, ob;
        offsets(i, oa, ob);
        gemm(pa + oa * m * k, ta, pb + ob * k * n, tb, pc + i * m * n, m, n, k);
      }
    });
  FlopCounter::add(op, 2 * nbatch * m * n * k);

  return record(op, out, {a, b}, [a, b, ta, tb](const Tensor& grad) -> std::vector<Tensor> {
    Tensor ga, gb;
    if (a.requires_grad()) {
      // d op(A) = G·op(B)ᵀ; if A is stored transposed, dA = op(B)·Gᵀ.
      ga = ta ? matmul(b, grad, tb, true) : matmul(grad, b, false, !tb);
      ga = sum_to(ga, a.shape());
    }
    if (b.requires_grad()) {
      // d op(B) = op(A)ᵀ·G; if B is stored transposed, dB = Gᵀ·op(A).
      if (b.dim() == 2 && !ta && a.dim() > 2) {
        // Fold a's batch into rows so the weight gradient is one GEMM.
        Tensor a2 = reshape(a, {-1, a.size(-1)});
        Tensor g2 = reshape(grad, {-1, grad.size(-1)});
        gb = tb ? matmul(g2, a2, true, false) : matmul(a2, g2, true, false);
      } else {
        gb = tb ? matmul(grad, a, true, ta) : matmul(a, grad, !ta, false);
        gb = sum_to(gb, b.shape());
      }
    }
    return {ga, gb};
  });
}

// linear(x, W, b) = x Wᵀ + b (torch.nn.functional.linear), x [..., in],
// W [out, in], b [out] or undefined. One GEMM over the folded rows, each
// thread writing the bias into its own tile and accumulating the product onto
// it (no separate add pass); backward dx = G W, dW = Gᵀ x (one GEMM each), db = Σ_rows G.
// FLOPs: "linear" 2·rows·out·in forward, 4·rows·out·in backward (the same
// count as matmul); "linear.bias" rows·out each way.
// With an activation a: y = a(x) Wᵀ + b. On the GPU a(x) exists only as the
// product's operand (ProductOperand applies a as it makes it), dW reads that
// operand and dx = a'(x) ⊙ (G W); its FLOPs are booked as "linear.<a>", the
// activation op's counts. On the CPU: the activation op, then the product.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b, Activation activation) {
  const char* op = "linear";
  if (activation != Activation::none && !x.is_cuda()) return linear(detail::activation_op(activation).apply(x), w, b);
  TAPELM_CHECK(x.dim() >= 1 && w.dim() == 2 && x.size(-1) == w.size(1) && x.dtype() == w.dtype() &&
                   (!b.defined() || (b.dim() == 1 && b.size(0) == w.size(0) && b.dtype() == w.dtype())),
               "linear: input {} with weight {}{}: expected [..., in], [out, in] and [out] of one dtype", x.str_shape(),
               w.str_shape(), b.defined() ? " and bias " + b.str_shape() : std::string());
  const int64_t in = w.size(1), out_f = w.size(0), rows = x.numel() / std::max<int64_t>(in, 1);
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  const Device device = op_device(op, {&x, &w, &b});
  Tensor y = Tensor::empty(out_shape, x.dtype(), device);
  // On the GPU, the operands as the products read them (bf16 copies in bf16
  // precision), kept for the backward's products: x for dW, W for dx.
  cuda::ProductOperand x_operand, w_operand;
  if (device == Device::cuda) {
    TAPELM_CHECK(x.dtype() == DType::f32, "linear: cuda tensors must be float32, got {}", dtype_name(x.dtype()));
    x_operand = cuda::ProductOperand(
        x.cuda_data<float>(), rows, in, in, nullptr,
        activation == Activation::none ? cuda::Unary::identity : detail::activation_op(activation).kind);
    w_operand = cuda::ProductOperand(w.cuda_data<float>(), out_f, in, in);
    cuda::linear_forward(rows, out_f, in, x_operand.ref(), w_operand.ref(),
                         b.defined() ? b.cuda_data<float>() : nullptr, y.cuda_data<float>());
    if (!w.requires_grad()) x_operand = {};
    if (!x.requires_grad()) w_operand = {};
  } else {
    dispatch_float(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      gemm(x.data<T>(), false, w.data<T>(), true, y.data<T>(), rows, out_f, in, false,
           b.defined() ? b.data<T>() : nullptr);
    });
  }
  FlopCounter::add(op, 2 * rows * out_f * in);
  if (b.defined()) FlopCounter::add("linear.bias", rows * out_f);
  if (activation != Activation::none)
    FlopCounter::add(detail::activation_op(activation).in_linear,
                     detail::activation_op(activation).forward_flops * rows * in);
  return record(
      op, y, {x, w, b},
      [x, w, b, rows, in, out_f, x_operand, w_operand, activation](const Tensor& grad) -> std::vector<Tensor> {
        Tensor gx, gw, gb;
        if (grad.is_cuda()) {
          // Rounded once for both products; its column sums are the bias's gradient (deterministic: chunks of
          // rows in order, autograd/cuda/column_sums.cuh).
          if (b.defined() && b.requires_grad()) gb = Tensor::empty_like(b);
          const cuda::ProductOperand g(grad.cuda_data<float>(), rows, out_f, out_f,
                                       gb.defined() ? gb.cuda_data<float>() : nullptr);
          if (x.requires_grad()) {
            gx = Tensor::empty_like(x);
            cuda::gemm(false, false, rows, in, out_f, g.ref(), w_operand.ref(), {gx.cuda_data<float>(), in, 0}, 1, 0.f);
            if (activation != Activation::none) {  // dx = a'(x) ⊙ (G W), in place
              const detail::ActivationOp& a = detail::activation_op(activation);
              cuda::unary_backward(a.kind, x.cuda_data<float>(), nullptr, gx.cuda_data<float>(), gx.cuda_data<float>(),
                                   rows * in, 0.f);
              FlopCounter::add(a.in_linear, a.backward_flops * rows * in);
            }
          }
          if (w.requires_grad()) {
            gw = Tensor::empty_like(w);
            cuda::gemm(true, false, out_f, in, rows, g.ref(), x_operand.ref(), {gw.cuda_data<float>(), in, 0}, 1, 0.f);
          }
        } else
          dispatch_float("linear", x.dtype(), [&](auto tag) {
            using T = decltype(tag);
            if (x.requires_grad()) {
              gx = Tensor::empty(x.shape(), x.dtype());
              gemm(grad.data<T>(), false, w.data<T>(), false, gx.data<T>(), rows, in, out_f);
            }
            if (w.requires_grad()) {
              gw = Tensor::empty(w.shape(), w.dtype());
              gemm(grad.data<T>(), true, x.data<T>(), false, gw.data<T>(), out_f, in, rows);
            }
            if (b.defined() && b.requires_grad()) {
              gb = Tensor::empty(b.shape(), b.dtype());
              // Column blocks in parallel; each column summed in row order, so the
              // result does not depend on the thread count.
              constexpr int64_t kCols = 64;
              const T* pg = grad.data<T>();
              T* pb = gb.data<T>();
#pragma omp parallel for schedule(static) if (rows * out_f > kParallelElements)
              for (int64_t c0 = 0; c0 < out_f; c0 += kCols) {
                const int64_t cols = std::min(kCols, out_f - c0);
                Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>> G(pg + c0, rows, cols,
                                                                       Eigen::OuterStride<>(out_f));
                Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>(pb + c0, cols) = G.colwise().sum();
              }
            }
          });
        FlopCounter::add("linear", (x.requires_grad() ? 2 : 0) * rows * out_f * in +
                                       (w.requires_grad() ? 2 : 0) * rows * out_f * in);
        if (b.defined()) FlopCounter::add("linear.bias", rows * out_f);
        return {gx, gw, gb};
      });
}

}  // namespace tapelm
