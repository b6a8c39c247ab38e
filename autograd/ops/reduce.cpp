// Reductions over axes: sum, mean, max (keepdim or not), and sum_to, the
// adjoint of broadcasting. An axis reduction views the tensor as
// [outer, n, inner] and reduces the middle; several axes reduce one by one.
#include <algorithm>
#include <limits>

#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {

std::vector<int64_t> normalize_axes(const char* op, std::vector<int64_t> axes, int64_t ndim) {
  for (auto& ax : axes) ax = normalize_axis(op, ax, ndim);
  std::sort(axes.begin(), axes.end());
  axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
  return axes;
}

void split_at(const Shape& s, int64_t axis, int64_t& outer, int64_t& n, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= s[d];
  n = s[axis];
  for (int64_t d = axis + 1; d < (int64_t)s.size(); ++d) inner *= s[d];
}

// Sum over one axis, keeping it as size 1.
Tensor sum_axis_kernel(const Tensor& a, int64_t axis) {
  int64_t outer, n, inner;
  split_at(a.shape(), axis, outer, n, inner);
  Shape os = a.shape();
  os[axis] = 1;
  Tensor out = zeros(os, a.dtype());
  dispatch_float("sum", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    T* po = out.data<T>();
    if (inner == 1) {
#pragma omp parallel for if (outer * n > kParallelElements)
      for (int64_t o = 0; o < outer; ++o) {
        T acc = 0;
        for (int64_t i = 0; i < n; ++i) acc += pa[o * n + i];
        po[o] = acc;
      }
    } else {
#pragma omp parallel for if (outer * n * inner > kParallelElements)
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < inner; ++j) po[o * inner + j] += pa[(o * n + i) * inner + j];
    }
  });
  return out;
}

Shape reduced_shape(const Shape& s, const std::vector<int64_t>& axes, bool keepdim) {
  Shape out;
  for (int64_t d = 0; d < (int64_t)s.size(); ++d) {
    bool reduced = std::find(axes.begin(), axes.end(), d) != axes.end();
    if (!reduced)
      out.push_back(s[d]);
    else if (keepdim)
      out.push_back(1);
  }
  return out;
}

}  // namespace

// On the GPU: every axis at once, each output element in a fixed order.
Tensor sum_cuda(const Tensor& a, const std::vector<int64_t>& axes) {
  TAPELM_CHECK(a.dtype() == DType::f32 && a.dim() <= cuda::kMaxDims,
               "sum: a cuda {} tensor {} (float32, at most {} "
               "dimensions)",
               dtype_name(a.dtype()), a.str_shape(), cuda::kMaxDims);
  const Shape strides = contiguous_strides(a.shape());
  cuda::Strided kept, reduced;
  for (int64_t d = 0; d < a.dim(); ++d) {
    cuda::Strided& part = std::find(axes.begin(), axes.end(), d) != axes.end() ? reduced : kept;
    part.size[part.ndim] = a.size(d), part.stride[part.ndim] = strides[d], ++part.ndim;
  }
  Tensor out = Tensor::empty(reduced_shape(a.shape(), axes, true), a.dtype(), Device::cuda);
  cuda::reduce_sum(a.cuda_data<float>(), kept, reduced, out.cuda_data<float>(), 1.f);
  return out;
}

Tensor sum(const Tensor& a, std::vector<int64_t> axes, bool keepdim) {
  axes = normalize_axes("sum", axes, a.dim());
  Tensor out = a;
  if (axes.empty())  // nothing to reduce: a copy, not a view of a
    out = a.clone();
  else if (op_device("sum", {&a}) == Device::cuda)
    out = sum_cuda(a, axes);
  else
    for (int64_t ax : axes) out = sum_axis_kernel(out, ax);
  FlopCounter::add("sum", a.numel());
  out = reshape(out.detach(), reduced_shape(a.shape(), axes, keepdim));
  Shape in_shape = a.shape(), keep_shape = reduced_shape(a.shape(), axes, true);
  return record("sum", out, {a}, [in_shape, keep_shape](const Tensor& grad) -> std::vector<Tensor> {
    return {expand(reshape(grad, keep_shape), in_shape)};
  });
}

Tensor sum(const Tensor& a) {
  std::vector<int64_t> all(a.dim());
  for (int64_t d = 0; d < a.dim(); ++d) all[d] = d;
  return sum(a, all, false);
}

Tensor mean(const Tensor& a, std::vector<int64_t> axes, bool keepdim) {
  axes = normalize_axes("mean", axes, a.dim());
  int64_t count = 1;
  for (int64_t ax : axes) count *= a.size(ax);
  TAPELM_CHECK(count > 0, "mean: reducing {} over an empty axis", a.str_shape());
  return mul_scalar(sum(a, axes, keepdim), 1.0 / (double)count);
}

Tensor mean(const Tensor& a) {
  std::vector<int64_t> all(a.dim());
  for (int64_t d = 0; d < a.dim(); ++d) all[d] = d;
  return mean(a, all, false);
}

// Max over one axis (kept); the gradient goes to the first maximal element.
static Tensor max_axis(const Tensor& a, int64_t axis) {
  int64_t outer, n, inner;
  split_at(a.shape(), axis, outer, n, inner);
  TAPELM_CHECK(n > 0, "max: reducing {} over an empty axis {}", a.str_shape(), axis);
  Shape os = a.shape();
  os[axis] = 1;
  Tensor out = Tensor::empty(os, a.dtype());
  auto argmax = std::make_shared<std::vector<int64_t>>(outer * inner);
  dispatch_float("max", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    T* po = out.data<T>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < inner; ++j) {
        int64_t best = 0;
        T bv = pa[o * n * inner + j];
        for (int64_t i = 1; i < n; ++i) {
          T v = pa[(o * n + i) * inner + j];
          if (v > bv) bv = v, best = i;
        }
        po[o * inner + j] = bv;
        (*argmax)[o * inner + j] = best;
      }
  });
  FlopCounter::add("max", a.numel());
  Shape in_shape = a.shape();
  return record("max", out, {a}, [in_shape, argmax, outer, n, inner](const Tensor& grad) -> std::vector<Tensor> {
    Tensor ga = zeros(in_shape, grad.dtype());
    dispatch_float("max", grad.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* pg = grad.data<T>();
      T* po = ga.data<T>();
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < inner; ++j) po[(o * n + (*argmax)[o * inner + j]) * inner + j] = pg[o * inner + j];
    });
    return {ga};
  });
}

Tensor max(const Tensor& a, std::vector<int64_t> axes, bool keepdim) {
  if (op_device("max", {&a}) == Device::cuda)
    return cpu_fallback("max", {a}, [&](const std::vector<Tensor>& c) { return max(c[0], axes, keepdim); });
  axes = normalize_axes("max", axes, a.dim());
  Tensor out = a;
  for (int64_t ax : axes) out = max_axis(out, ax);
  return reshape(out, reduced_shape(a.shape(), axes, keepdim));
}

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  TAPELM_CHECK(grad.dim() >= (int64_t)shape.size(), "sum_to: cannot sum {} down to {}", grad.str_shape(),
               shape_str(shape));
  const int64_t lead = grad.dim() - (int64_t)shape.size();
  std::vector<int64_t> axes;
  for (int64_t d = 0; d < grad.dim(); ++d) {
    if (d < lead) {
      axes.push_back(d);
    } else if (shape[d - lead] == 1 && grad.size(d) != 1) {
      axes.push_back(d);
    } else {
      TAPELM_CHECK(shape[d - lead] == grad.size(d), "sum_to: cannot sum {} down to {}", grad.str_shape(),
                   shape_str(shape));
    }
  }
  return reshape(sum(grad, axes, true), shape);
}

}  // namespace tapelm
