// Row gather (embedding lookup): out[i, :] = weight[ids[i], :].
// Backward scatter-adds each output row's gradient into its source row, so a
// token appearing twice gets both contributions. 0 FLOPs forward, D per row back.
#include <cstring>

#include <numeric>

#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {
// On the GPU the ids (a host tensor, checked above) are uploaded; the backward
// sums each id's rows in position order, grouped on the host (a stable sort
// by id), one block per id: no atomics, the same bits every run.
Tensor embedding_cuda(const Tensor& weight, const Tensor& ids, const Shape& out_shape) {
  TAPELM_CHECK(weight.dtype() == DType::f32, "embedding: a cuda weight must be float32");
  const int64_t V = weight.size(0), D = weight.size(1), n = ids.numel();
  const Tensor dev_ids = ids.is_cuda() ? ids : ids.to(Device::cuda);
  Tensor out = Tensor::empty(out_shape, weight.dtype(), Device::cuda);
  cuda::embedding_forward(weight.cuda_data<float>(), dev_ids.cuda_data<int32_t>(), out.cuda_data<float>(), n, D);
  const Tensor host_ids = ids.is_cuda() ? ids.to(Device::cpu) : ids;
  return record("embedding", out, {weight, Tensor()}, [host_ids, V, D, n](const Tensor& grad) -> std::vector<Tensor> {
    const int32_t* p = host_ids.data<int32_t>();
    std::vector<int32_t> order(n), starts(V + 1, 0);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [p](int32_t a, int32_t b) { return p[a] < p[b]; });
    for (int64_t i = 0; i < n; ++i) ++starts[p[i] + 1];
    for (int64_t v = 0; v < V; ++v) starts[v + 1] += starts[v];
    const Tensor dev_order = from_ints(order, {n}).to(Device::cuda),
                 dev_starts = from_ints(starts, {V + 1}).to(Device::cuda);
    Tensor gw = Tensor::empty({V, D}, grad.dtype(), Device::cuda);
    cuda::embedding_backward(grad.cuda_data<float>(), dev_order.cuda_data<int32_t>(), dev_starts.cuda_data<int32_t>(),
                             gw.cuda_data<float>(), V, D);
    FlopCounter::add("embedding", n * D);
    return {gw, Tensor()};
  });
}
}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  TAPELM_CHECK(weight.dim() == 2, "embedding: weight must be [rows, dim], got {}", weight.str_shape());
  TAPELM_CHECK(ids.dtype() == DType::i32, "embedding: ids must be int32, got {} {}", dtype_name(ids.dtype()),
               ids.str_shape());
  const int64_t V = weight.size(0), D = weight.size(1), n = ids.numel();
  const Tensor host_ids = ids.is_cuda() ? ids.to(Device::cpu) : ids;
  const int32_t* pid = host_ids.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    TAPELM_CHECK(pid[i] >= 0 && pid[i] < V, "embedding: index {} out of range for weight {}", pid[i],
                 weight.str_shape());
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  if (op_device("embedding", {&weight}) == Device::cuda) return embedding_cuda(weight, ids, out_shape);
  Tensor out = Tensor::empty(out_shape, weight.dtype());
  size_t row_bytes = D * dtype_size(weight.dtype());
  const char* pw = (const char*)weight.raw_data();
  char* po = (char*)out.raw_data();
#pragma omp parallel for if (n * D > kParallelElements)
  for (int64_t i = 0; i < n; ++i) std::memcpy(po + i * row_bytes, pw + pid[i] * row_bytes, row_bytes);

  Tensor ids_saved = ids;
  return record("embedding", out, {weight, Tensor()}, [ids_saved, V, D](const Tensor& grad) -> std::vector<Tensor> {
    Tensor gw = zeros({V, D}, grad.dtype());
    const int32_t* p = ids_saved.data<int32_t>();
    const int64_t n = ids_saved.numel();
    dispatch_float("embedding", grad.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* pg = grad.data<T>();
      T* pgw = gw.data<T>();
      for (int64_t i = 0; i < n; ++i) {
        T* row = pgw + (int64_t)p[i] * D;
        const T* src = pg + i * D;
        for (int64_t j = 0; j < D; ++j) row[j] += src[j];
      }
    });
    FlopCounter::add("embedding", n * D);
    return {gw, Tensor()};
  });
}

}  // namespace tapelm
