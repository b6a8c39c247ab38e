// Row gather (embedding lookup): out[i, :] = weight[ids[i], :].
// Backward scatter-adds each output row's gradient into its source row, so a
// token appearing twice gets both contributions. 0 FLOPs forward, D per row back.
#include <cstring>

#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  TAPELM_CHECK(weight.dim() == 2, "embedding: weight must be [rows, dim], got {}", weight.str_shape());
  TAPELM_CHECK(ids.dtype() == DType::i32, "embedding: ids must be int32, got {} {}", dtype_name(ids.dtype()),
               ids.str_shape());
  const int64_t V = weight.size(0), D = weight.size(1), n = ids.numel();
  const int32_t* pid = ids.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    TAPELM_CHECK(pid[i] >= 0 && pid[i] < V, "embedding: index {} out of range for weight {}", pid[i],
                 weight.str_shape());
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
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
