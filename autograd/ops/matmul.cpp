// Matrix product through Eigen GEMM on Eigen::Map views of our contiguous
// buffers: no copies, transposed operands read in place.
//
// Backward of C = op(A)·op(B) with G = dC:
//   d op(A) = G·op(B)ᵀ,  d op(B) = op(A)ᵀ·G,
// each mapped back through the transpose flags (see below), then summed over
// broadcast batch dimensions. Forward 2·m·n·k FLOPs, backward 4·m·n·k.
#include <Eigen/Core>

#include "autograd/flops.h"
#include "autograd/ops.h"

namespace tapelm {

namespace {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// C[m,n] = op(A)·op(B), A stored [m,k] or [k,m], B stored [k,n] or [n,k].
template <class T>
void gemm(const T* a, bool ta, const T* b, bool tb, T* c, int64_t m, int64_t n, int64_t k) {
  Eigen::Map<RowMat<T>> C(c, m, n);
  if (k == 0) {
    C.setZero();
    return;
  }
  Eigen::Map<const RowMat<T>> A(a, ta ? k : m, ta ? m : k);
  Eigen::Map<const RowMat<T>> B(b, tb ? n : k, tb ? k : n);
  if (!ta && !tb) C.noalias() = A * B;
  else if (ta && !tb) C.noalias() = A.transpose() * B;
  else if (!ta && tb) C.noalias() = A * B.transpose();
  else C.noalias() = A.transpose() * B.transpose();
}

Shape batch_of(const Shape& s) { return Shape(s.begin(), s.end() - 2); }

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const char* op = "matmul";
  TAPELM_CHECK(a.dim() >= 2 && b.dim() >= 2,
               "matmul: {} @ {}: both operands need at least 2 dimensions", a.str_shape(),
               b.str_shape());
  TAPELM_CHECK(a.dtype() == b.dtype(), "matmul: {} @ {}: dtypes {} and {} differ", a.str_shape(),
               b.str_shape(), dtype_name(a.dtype()), dtype_name(b.dtype()));
  const int64_t m = ta ? a.size(-1) : a.size(-2);
  const int64_t k = ta ? a.size(-2) : a.size(-1);
  const int64_t kb = tb ? b.size(-1) : b.size(-2);
  const int64_t n = tb ? b.size(-2) : b.size(-1);
  TAPELM_CHECK(k == kb, "matmul: {}{} @ {}{}: inner dimensions {} and {} differ", a.str_shape(),
               ta ? "ᵀ" : "", b.str_shape(), tb ? "ᵀ" : "", k, kb);
  Shape batch = broadcast_shapes(op, batch_of(a.shape()), batch_of(b.shape()));
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor out = Tensor::empty(out_shape, a.dtype());
  const int64_t nbatch = numel_of(batch);

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
    // Many small products: one per thread, each single-threaded inside Eigen.
#pragma omp parallel for schedule(static) if (nbatch > 1)
    for (int64_t i = 0; i < nbatch; ++i) {
      int64_t oa, ob;
      offsets(i, oa, ob);
      gemm(pa + oa * m * k, ta, pb + ob * k * n, tb, pc + i * m * n, m, n, k);
    }
  });
  FlopCounter::add(op, 2 * nbatch * m * n * k);

  return record(op, out, {a, b}, [a, b, ta, tb](const Tensor& g) -> std::vector<Tensor> {
    Tensor ga, gb;
    if (a.requires_grad()) {
      // d op(A) = G·op(B)ᵀ; if A is stored transposed, dA = op(B)·Gᵀ.
      ga = ta ? matmul(b, g, tb, true) : matmul(g, b, false, !tb);
      ga = sum_to(ga, a.shape());
    }
    if (b.requires_grad()) {
      // d op(B) = op(A)ᵀ·G; if B is stored transposed, dB = Gᵀ·op(A).
      if (b.dim() == 2 && !ta && a.dim() > 2) {
        // Fold a's batch into rows so the weight gradient is one GEMM.
        Tensor a2 = reshape(a, {-1, a.size(-1)});
        Tensor g2 = reshape(g, {-1, g.size(-1)});
        gb = tb ? matmul(g2, a2, true, false) : matmul(a2, g2, true, false);
      } else {
        gb = tb ? matmul(g, a, true, ta) : matmul(a, g, !ta, false);
        gb = sum_to(gb, b.shape());
      }
    }
    return {ga, gb};
  });
}

// linear(x, W, b) = x Wᵀ + b (torch.nn.functional.linear), x [..., in],
// W [out, in], b [out] or undefined. One GEMM over the folded rows with the
// bias written first and the product accumulated onto it (no separate add
// pass); backward dx = G W, dW = Gᵀ x (one GEMM each), db = Σ_rows G.
// FLOPs: "linear" 2·rows·out·in forward, 4·rows·out·in backward (the same
// count as matmul); "linear.bias" rows·out each way.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  const char* op = "linear";
  TAPELM_CHECK(x.dim() >= 1 && w.dim() == 2 && x.size(-1) == w.size(1) && x.dtype() == w.dtype() &&
                   (!b.defined() || (b.dim() == 1 && b.size(0) == w.size(0) && b.dtype() == w.dtype())),
               "linear: input {} with weight {}{}: expected [..., in], [out, in] and [out] of one dtype",
               x.str_shape(), w.str_shape(), b.defined() ? " and bias " + b.str_shape() : std::string());
  const int64_t in = w.size(1), out_f = w.size(0), rows = x.numel() / std::max<int64_t>(in, 1);
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  Tensor y = Tensor::empty(out_shape, x.dtype());
  dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Eigen::Map<RowMat<T>> Y(y.data<T>(), rows, out_f);
    Eigen::Map<const RowMat<T>> X(x.data<T>(), rows, in), W(w.data<T>(), out_f, in);
    if (b.defined()) {
      Y.rowwise() = Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(b.data<T>(), out_f);
      Y.noalias() += X * W.transpose();
    } else {
      Y.noalias() = X * W.transpose();
    }
  });
  FlopCounter::add(op, 2 * rows * out_f * in);
  if (b.defined()) FlopCounter::add("linear.bias", rows * out_f);
  return record(op, y, {x, w, b}, [x, w, b, rows, in, out_f](const Tensor& g) -> std::vector<Tensor> {
    Tensor gx, gw, gb;
    dispatch_float("linear", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      Eigen::Map<const RowMat<T>> G(g.data<T>(), rows, out_f), X(x.data<T>(), rows, in), W(w.data<T>(), out_f, in);
      if (x.requires_grad()) {
        gx = Tensor::empty(x.shape(), x.dtype());
        Eigen::Map<RowMat<T>>(gx.data<T>(), rows, in).noalias() = G * W;
      }
      if (w.requires_grad()) {
        gw = Tensor::empty(w.shape(), w.dtype());
        Eigen::Map<RowMat<T>>(gw.data<T>(), out_f, in).noalias() = G.transpose() * X;
      }
      if (b.defined() && b.requires_grad()) {
        gb = Tensor::empty(b.shape(), b.dtype());
        Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>(gb.data<T>(), out_f) = G.colwise().sum();
      }
    });
    FlopCounter::add("linear", (x.requires_grad() ? 2 : 0) * rows * out_f * in + (w.requires_grad() ? 2 : 0) * rows * out_f * in);
    if (b.defined()) FlopCounter::add("linear.bias", rows * out_f);
    return {gx, gw, gb};
  });
}

}  // namespace tapelm
