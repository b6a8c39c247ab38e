// Cross-entropy of logits [..., V] against int32 targets [...]:
//   loss = (1/K) Σ_{kept i} (logsumexp(x_i) − x_i[t_i]),  K = #targets ≠ ignore_index
//   dx_i = (softmax(x_i) − onehot(t_i)) · g / K   (0 for ignored rows)
// Fused: one pass for the forward, the softmax recomputed in backward from the
// saved per-row logsumexp, so no [N, V] probability tensor is kept.
// FLOPs: 4 per logit forward (max, sub, exp, sum), 4 per logit backward.
#include <Eigen/Core>
#include <cmath>
#include <vector>

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/runtime.h"
#include "autograd/device.h"
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {
// The loss on the GPU: the rows' losses summed in a fixed order, divided by K.
Tensor mean_over_kept(const Tensor& row_loss, int64_t kept) {
  Tensor loss = Tensor::empty({}, DType::f32, Device::cuda);
  cuda::Strided scalar, all_rows;
  all_rows.ndim = 1, all_rows.size[0] = row_loss.numel(), all_rows.stride[0] = 1;
  cuda::reduce_sum(row_loss.cuda_data<float>(), scalar, all_rows, loss.cuda_data<float>(),
                   kept ? 1.f / (float)kept : 0.f);
  return loss;
}

// The targets on the host (a copy when they are on the GPU), each checked
// against the class count; K, the number not ignored, goes to `kept`.
Tensor checked_targets(const char* op, const Tensor& targets, int64_t V, int32_t ignore_index, int64_t& kept) {
  TAPELM_CHECK(targets.dtype() == DType::i32, "{}: targets must be int32, got {}", op, dtype_name(targets.dtype()));
  Tensor host = targets.is_cuda() ? targets.to(Device::cpu) : targets;
  const int32_t* pt = host.data<int32_t>();
  kept = 0;
  for (int64_t r = 0; r < host.numel(); ++r) {
    if (pt[r] == ignore_index) continue;
    TAPELM_CHECK(pt[r] >= 0 && pt[r] < V, "{}: target {} out of range for {} classes", op, pt[r], V);
    ++kept;
  }
  return host;
}

// On the GPU: a warp per row gives its loss and log-sum-exp; the rows' losses
// are summed in a fixed order and divided by K.
Tensor cross_entropy_cuda(const Tensor& logits, const Tensor& host_targets, int64_t rows, int64_t V, int64_t kept,
                          int32_t ignore_index) {
  TAPELM_CHECK(logits.dtype() == DType::f32, "cross_entropy: cuda logits must be float32");
  const Tensor targets = host_targets.to(Device::cuda);
  Tensor row_loss = Tensor::empty({rows}, DType::f32, Device::cuda),
         lse = Tensor::empty({rows}, DType::f32, Device::cuda);
  cuda::cross_entropy_forward(logits.cuda_data<float>(), cuda::Element::f32, V, targets.cuda_data<int32_t>(),
                              row_loss.cuda_data<float>(), lse.cuda_data<float>(), rows, V, ignore_index);
  const Tensor loss = mean_over_kept(row_loss, kept);
  FlopCounter::add("cross_entropy", 4 * rows * V);
  return record("cross_entropy", loss, {logits, Tensor()},
                [logits, targets, lse, rows, V, kept, ignore_index](const Tensor& grad) -> std::vector<Tensor> {
                  Tensor gx = Tensor::empty_like(logits);
                  cuda::cross_entropy_backward(logits.cuda_data<float>(), cuda::Element::f32, V,
                                               targets.cuda_data<int32_t>(), lse.cuda_data<float>(),
                                               gx.cuda_data<float>(), rows, V, rows, V, ignore_index,
                                               grad.cuda_data<float>(), kept ? 1.f / (float)kept : 0.f);
                  FlopCounter::add("cross_entropy", 4 * rows * V);
                  return {gx, Tensor()};
                });
}
}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index) {
  TAPELM_CHECK(logits.dim() >= 1, "cross_entropy: logits need a class axis, got {}", logits.str_shape());
  Shape lead(logits.shape().begin(), logits.shape().end() - 1);
  TAPELM_CHECK(targets.shape() == lead, "cross_entropy: logits {} need targets of shape {}, got {}", logits.str_shape(),
               shape_str(lead), targets.str_shape());
  const int64_t V = logits.size(-1), rows = targets.numel();
  int64_t kept = 0;
  const Tensor host_targets = checked_targets("cross_entropy", targets, V, ignore_index, kept);
  const int32_t* pt = host_targets.data<int32_t>();
  if (op_device("cross_entropy", {&logits}) == Device::cuda)
    return cross_entropy_cuda(logits, host_targets, rows, V, kept, ignore_index);
  auto lse = std::make_shared<std::vector<double>>(rows, 0.0);
  Tensor loss = Tensor::empty({}, logits.dtype());
  dispatch_float("cross_entropy", logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = logits.data<T>();
    std::vector<double> row_loss(rows, 0.0);  // summed in row order below: the same bits for any thread count
#pragma omp parallel for if (rows * V > kParallelElements)
    for (int64_t r = 0; r < rows; ++r) {
      if (pt[r] == ignore_index) continue;
      Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> xr(px + r * V, V);
      const T m = xr.maxCoeff();
      const T l = m + std::log((xr - m).exp().sum());
      (*lse)[r] = (double)l;
      row_loss[r] = (double)(l - xr[pt[r]]);
    }
    double total = 0;
    for (double l : row_loss) total += l;
    loss.data<T>()[0] = kept ? (T)(total / kept) : T(0);
  });
  FlopCounter::add("cross_entropy", 4 * rows * V);

  Tensor saved_logits = logits, saved_targets = host_targets;
  return record(
      "cross_entropy", loss, {logits, Tensor()},
      [saved_logits, saved_targets, lse, rows, V, kept, ignore_index](const Tensor& grad) -> std::vector<Tensor> {
        if (kept == 0) return {zeros(saved_logits.shape(), saved_logits.dtype()), Tensor()};
        Tensor gx = Tensor::empty(saved_logits.shape(), saved_logits.dtype());  // every row written below
        dispatch_float("cross_entropy", gx.dtype(), [&](auto tag) {
          using T = decltype(tag);
          const T* px = saved_logits.data<T>();
          const int32_t* pt = saved_targets.data<int32_t>();
          T* po = gx.data<T>();
          const T scale = grad.data<T>()[0] / (T)kept;
#pragma omp parallel for if (rows * V > kParallelElements)
          for (int64_t r = 0; r < rows; ++r) {
            using Row = Eigen::Array<T, Eigen::Dynamic, 1>;
            Eigen::Map<Row> orow(po + r * V, V);
            if (pt[r] == ignore_index) {
              orow.setZero();
              continue;
            }
            orow = (Eigen::Map<const Row>(px + r * V, V) - (T)(*lse)[r]).exp() * scale;
            orow[pt[r]] -= scale;
          }
        });
        FlopCounter::add("cross_entropy", 4 * rows * V);
        return {gx, Tensor()};
      });
}

// linear_cross_entropy(x, W, t) = cross_entropy(linear(x, W), t): a
// classifier without bias and its loss as one op. On the GPU in bf16
// precision the logits never exist in float32: the product writes them as
// bfloat16 (as autocast's linear does, accumulating in float32), the loss
// reads them, and the backward turns them in place into bfloat16 dlogits,
// which both gradient products read as they are. That removes, at B·T·V,
// the float32 logits, their float32 gradient, its bfloat16 copy and the
// results staged for the odd class count (GPT-2 at batch 16: about 8 GB of
// memory and 3.3 GB of traffic each way). Elsewhere (the CPU, fp32
// precision) it is the two ops composed. The node is recorded as "linear"
// with the loss as its part "linear.cross_entropy", so FLOP accounting books
// the products with the other linears' (the 6N part).
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, int32_t ignore_index) {
  TAPELM_CHECK(x.dim() >= 1 && weight.dim() == 2 && x.size(-1) == weight.size(1) && x.dtype() == weight.dtype(),
               "linear_cross_entropy: input {} with weight {}: expected [..., in] and [classes, in] of one dtype",
               x.str_shape(), weight.str_shape());
  Shape lead(x.shape().begin(), x.shape().end() - 1);
  TAPELM_CHECK(targets.shape() == lead, "linear_cross_entropy: input {} needs targets of shape {}, got {}",
               x.str_shape(), shape_str(lead), targets.str_shape());
  const int64_t V = weight.size(0), C = weight.size(1), rows = targets.numel();
  const Device device = op_device("linear_cross_entropy", {&x, &weight});
  if (device != Device::cuda || gpu_precision() != Precision::bf16 || rows == 0 || V == 0 || C == 0)
    return cross_entropy(linear(x, weight, Tensor()), targets, ignore_index);  // (empty: no bf16 copies to make)

  int64_t kept = 0;
  const Tensor d_targets = checked_targets("linear_cross_entropy", targets, V, ignore_index, kept).to(Device::cuda);
  const cuda::ProductOperand x_operand(x.cuda_data<float>(), rows, C, C), w_operand(weight.cuda_data<float>(), V, C, C);
  // The logits: bfloat16, padded with the operands to multiples of 8 rows and columns.
  const int64_t ld = cuda::round8(V), padded_rows = cuda::round8(rows);
  struct Saved {
    std::shared_ptr<void> logits;  // becomes dlogits in the backward, then released
  };
  auto saved = std::make_shared<Saved>();
  saved->logits = std::shared_ptr<void>(cuda::allocate(padded_rows * ld * 2), cuda::release);
  cuda::gemm_bf16_result(false, true, rows, V, C, x_operand.ref(), w_operand.ref(), saved->logits.get(), ld);
  Tensor row_loss = Tensor::empty({rows}, DType::f32, Device::cuda),
         lse = Tensor::empty({rows}, DType::f32, Device::cuda);
  cuda::cross_entropy_forward(saved->logits.get(), cuda::Element::bf16, ld, d_targets.cuda_data<int32_t>(),
                              row_loss.cuda_data<float>(), lse.cuda_data<float>(), rows, V, ignore_index);
  const Tensor loss = mean_over_kept(row_loss, kept);
  FlopCounter::add("linear", 2 * rows * V * C);
  FlopCounter::add("linear.cross_entropy", 4 * rows * V);
  return record("linear", loss, {x, weight, Tensor()},
                [x, weight, d_targets, lse, saved, x_operand, w_operand, rows, V, C, ld, padded_rows, kept,
                 ignore_index](const Tensor& grad) -> std::vector<Tensor> {
                  TAPELM_CHECK(saved->logits,
                               "linear_cross_entropy: a second backward (the first turned its logits into their "
                               "gradient); run the forward again");
                  void* dlogits = saved->logits.get();
                  cuda::cross_entropy_backward(dlogits, cuda::Element::bf16, ld, d_targets.cuda_data<int32_t>(),
                                               lse.cuda_data<float>(), dlogits, rows, V, padded_rows, ld, ignore_index,
                                               grad.cuda_data<float>(), kept ? 1.f / (float)kept : 0.f);
                  const cuda::MatrixRef d{dlogits, ld, 0, cuda::Element::bf16, true};
                  Tensor gx, gw;
                  if (x.requires_grad()) {
                    gx = Tensor::empty(x.shape(), DType::f32, Device::cuda);
                    cuda::gemm(false, false, rows, C, V, d, w_operand.ref(), {gx.cuda_data<float>(), C, 0}, 1, 0.f);
                  }
                  if (weight.requires_grad()) {
                    gw = Tensor::empty(weight.shape(), DType::f32, Device::cuda);
                    cuda::gemm(true, false, V, C, rows, d, x_operand.ref(), {gw.cuda_data<float>(), C, 0}, 1, 0.f);
                  }
                  saved->logits.reset();  // stream-ordered: after the products that read it
                  FlopCounter::add("linear.cross_entropy", 4 * rows * V);
                  FlopCounter::add("linear", (x.requires_grad() ? 2 : 0) * rows * V * C +
                                                 (weight.requires_grad() ? 2 : 0) * rows * V * C);
                  return {gx, gw, Tensor()};
                });
}

}  // namespace tapelm
