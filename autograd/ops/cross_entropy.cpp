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
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {
// On the GPU: a warp per row gives its loss and log-sum-exp; the rows' losses
// are summed in a fixed order and divided by K.
Tensor cross_entropy_cuda(const Tensor& logits, const Tensor& host_targets, int64_t rows, int64_t V, int64_t kept,
                          int32_t ignore_index) {
  TAPELM_CHECK(logits.dtype() == DType::f32, "cross_entropy: cuda logits must be float32");
  const Tensor targets = host_targets.to(Device::cuda);
  Tensor row_loss = Tensor::empty({rows}, DType::f32, Device::cuda),
         lse = Tensor::empty({rows}, DType::f32, Device::cuda);
  cuda::cross_entropy_forward(logits.cuda_data<float>(), targets.cuda_data<int32_t>(), row_loss.cuda_data<float>(),
                              lse.cuda_data<float>(), rows, V, ignore_index);
  Tensor loss = Tensor::empty({}, DType::f32, Device::cuda);
  cuda::Strided scalar, all_rows;
  all_rows.ndim = 1, all_rows.size[0] = rows, all_rows.stride[0] = 1;
  cuda::reduce_sum(row_loss.cuda_data<float>(), scalar, all_rows, loss.cuda_data<float>(),
                   kept ? 1.f / (float)kept : 0.f);
  FlopCounter::add("cross_entropy", 4 * rows * V);
  return record("cross_entropy", loss, {logits, Tensor()},
                [logits, targets, lse, rows, V, kept, ignore_index](const Tensor& grad) -> std::vector<Tensor> {
                  Tensor gx = Tensor::empty(logits.shape(), logits.dtype(), Device::cuda);
                  const float scale = kept ? (float)(grad.item() / (double)kept) : 0.f;
                  cuda::cross_entropy_backward(logits.cuda_data<float>(), targets.cuda_data<int32_t>(),
                                               lse.cuda_data<float>(), gx.cuda_data<float>(), rows, V, ignore_index,
                                               scale);
                  FlopCounter::add("cross_entropy", 4 * rows * V);
                  return {gx, Tensor()};
                });
}
}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index) {
  TAPELM_CHECK(logits.dim() >= 1, "cross_entropy: logits need a class axis, got {}", logits.str_shape());
  TAPELM_CHECK(targets.dtype() == DType::i32, "cross_entropy: targets must be int32, got {}",
               dtype_name(targets.dtype()));
  Shape lead(logits.shape().begin(), logits.shape().end() - 1);
  TAPELM_CHECK(targets.shape() == lead, "cross_entropy: logits {} need targets of shape {}, got {}", logits.str_shape(),
               shape_str(lead), targets.str_shape());
  const int64_t V = logits.size(-1), rows = targets.numel();
  const Tensor host_targets = targets.is_cuda() ? targets.to(Device::cpu) : targets;
  const int32_t* pt = host_targets.data<int32_t>();
  int64_t kept = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (pt[r] == ignore_index) continue;
    TAPELM_CHECK(pt[r] >= 0 && pt[r] < V, "cross_entropy: target {} out of range for {} classes", pt[r], V);
    ++kept;
  }
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

}  // namespace tapelm
