// Shape ops: reshape (a view), permute/transpose, slice, concat, split,
// expand. None does arithmetic, so all count 0 FLOPs.
#include <cstring>

#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/ops.h"
#include "autograd/ops/broadcast_loop.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {

// A tensor sharing a's storage with another shape and element offset.
Tensor view_of(const Tensor& a, const Shape& shape, int64_t extra_offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = a.dtype();
  impl->storage = a.impl().storage;
  impl->offset = a.impl().offset + extra_offset;
  return Tensor(std::move(impl));
}

// On the GPU: `shape` elements from src (element offset src_off, strides
// ss) to dst (offset dst_off, strides ds), both cuda tensors of 4-byte or
// 1-byte elements; the one kernel behind every shape op there.
void cuda_copy_view(const Tensor& src, int64_t src_off, const Shape& ss, const Tensor& dst, int64_t dst_off,
                    const Shape& ds, const Shape& shape) {
  TAPELM_CHECK((int)shape.size() <= cuda::kMaxDims, "shape op: {} dimensions on cuda (at most {})", shape.size(),
               cuda::kMaxDims);
  cuda::Strided s, d;
  s.ndim = d.ndim = (int)shape.size();
  for (int i = 0; i < s.ndim; ++i) s.size[i] = d.size[i] = shape[i], s.stride[i] = ss[i], d.stride[i] = ds[i];
  const size_t es = dtype_size(src.dtype());
  if (es == 4)
    cuda::copy_strided((const float*)src.address() + src_off, s, (float*)dst.address() + dst_off, d);
  else if (es == 1)
    cuda::copy_strided_bytes((const uint8_t*)src.address() + src_off, s, (uint8_t*)dst.address() + dst_off, d);
  else
    throw Error(fmt::format("shape op: {} elements cannot be on cuda", dtype_name(src.dtype())));
}

// Copies a (any dtype) into `out` of shape `out_shape`, reading a through
// the given strides: the one kernel behind permute and expand.
void strided_copy(const Tensor& a, const Shape& src_strides, Tensor& out) {
  if (a.is_cuda()) {
    cuda_copy_view(a, 0, src_strides, out, 0, contiguous_strides(out.shape()), out.shape());
    return;
  }
  size_t es = dtype_size(a.dtype());
  const char* src = (const char*)a.raw_data();
  char* dst = (char*)out.raw_data();
  std::array<Shape, 1> st{src_strides};
  detail::broadcast_rows<1>(out.shape(), st, [&](int64_t o, auto s, auto step, int64_t len) {
    if (step[0] == 1) {
      std::memcpy(dst + o * es, src + s[0] * es, len * es);
    } else if (es == 4) {
      for (int64_t j = 0; j < len; ++j) std::memcpy(dst + (o + j) * 4, src + (s[0] + j * step[0]) * 4, 4);
    } else {
      for (int64_t j = 0; j < len; ++j) std::memcpy(dst + (o + j) * es, src + (s[0] + j * step[0]) * es, es);
    }
  });
}

}  // namespace

Tensor reshape(const Tensor& a, Shape shape) {
  int64_t known = 1, infer = -1;
  for (int64_t d = 0; d < (int64_t)shape.size(); ++d) {
    if (shape[d] == -1) {
      TAPELM_CHECK(infer < 0, "reshape: {} -> {}: only one dimension can be -1", a.str_shape(), shape_str(shape));
      infer = d;
    } else {
      TAPELM_CHECK(shape[d] >= 0, "reshape: {} -> {}: negative dimension", a.str_shape(), shape_str(shape));
      known *= shape[d];
    }
  }
  if (infer >= 0) {
    TAPELM_CHECK(known > 0 && a.numel() % known == 0, "reshape: {} -> {}: {} elements do not fit", a.str_shape(),
                 shape_str(shape), a.numel());
    shape[infer] = a.numel() / known;
  }
  TAPELM_CHECK(numel_of(shape) == a.numel(), "reshape: {} -> {}: {} elements vs {}", a.str_shape(), shape_str(shape),
               a.numel(), numel_of(shape));
  if (shape == a.shape() && !a.requires_grad()) return a;
  Tensor out = view_of(a, shape, 0);
  Shape in_shape = a.shape();
  return record("reshape", out, {a},
                [in_shape](const Tensor& grad) -> std::vector<Tensor> { return {reshape(grad, in_shape)}; });
}

Tensor unsqueeze(const Tensor& a, int64_t axis) {
  int64_t ax = normalize_axis("unsqueeze", axis, a.dim() + 1);
  Shape s = a.shape();
  s.insert(s.begin() + ax, 1);
  return reshape(a, s);
}

Tensor squeeze(const Tensor& a, int64_t axis) {
  int64_t ax = normalize_axis("squeeze", axis, a.dim());
  TAPELM_CHECK(a.size(ax) == 1, "squeeze: axis {} of {} has size {}, not 1", axis, a.str_shape(), a.size(ax));
  Shape s = a.shape();
  s.erase(s.begin() + ax);
  return reshape(a, s);
}

Tensor permute(const Tensor& a, const std::vector<int64_t>& dims) {
  TAPELM_CHECK((int64_t)dims.size() == a.dim(), "permute: {} dims given for a tensor {}", dims.size(), a.str_shape());
  std::vector<int64_t> p(dims.size()), inverse(dims.size(), -1);
  for (size_t i = 0; i < dims.size(); ++i) {
    p[i] = normalize_axis("permute", dims[i], a.dim());
    TAPELM_CHECK(inverse[p[i]] < 0, "permute: dimension {} repeated for {}", p[i], a.str_shape());
    inverse[p[i]] = (int64_t)i;
  }
  Shape out_shape(p.size()), src_strides(p.size());
  Shape in_strides = contiguous_strides(a.shape());
  for (size_t i = 0; i < p.size(); ++i) {
    out_shape[i] = a.shape()[p[i]];
    src_strides[i] = in_strides[p[i]];
  }
  Tensor out = Tensor::empty(out_shape, a.dtype(), op_device("permute", {&a}));
  strided_copy(a, src_strides, out);
  return record("permute", out, {a},
                [inverse](const Tensor& grad) -> std::vector<Tensor> { return {permute(grad, inverse)}; });
}

Tensor transpose(const Tensor& a, int64_t d0, int64_t d1) {
  std::vector<int64_t> p(a.dim());
  for (int64_t i = 0; i < a.dim(); ++i) p[i] = i;
  std::swap(p[normalize_axis("transpose", d0, a.dim())], p[normalize_axis("transpose", d1, a.dim())]);
  return permute(a, p);
}

// Writes `src` into the [start, start+src.size(axis)) block of dst along axis.
static void copy_block(const Tensor& src, Tensor& dst, int64_t axis, int64_t start) {
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= dst.size(d);
  for (int64_t d = axis + 1; d < dst.dim(); ++d) inner *= dst.size(d);
  if (dst.is_cuda()) {
    cuda_copy_view(src, 0, contiguous_strides(src.shape()), dst, start * inner, contiguous_strides(dst.shape()),
                   src.shape());
    return;
  }
  size_t es = dtype_size(dst.dtype());
  int64_t n_src = src.size(axis), n_dst = dst.size(axis);
  const char* s = (const char*)src.raw_data();
  char* o = (char*)dst.raw_data();
#pragma omp parallel for schedule(static) if (outer * n_src * inner > kParallelElements)
  for (int64_t i = 0; i < outer; ++i)
    std::memcpy(o + ((i * n_dst + start) * inner) * es, s + (i * n_src * inner) * es, n_src * inner * es);
}

Tensor slice(const Tensor& a, int64_t axis, int64_t start, int64_t end) {
  int64_t ax = normalize_axis("slice", axis, a.dim());
  int64_t n = a.size(ax);
  if (start < 0) start += n;
  if (end < 0) end += n;
  TAPELM_CHECK(0 <= start && start <= end && end <= n, "slice: [{}:{}] out of range for axis {} of size {} in {}",
               start, end, axis, n, a.str_shape());
  Shape out_shape = a.shape();
  out_shape[ax] = end - start;
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < ax; ++d) outer *= a.size(d);
  for (int64_t d = ax + 1; d < a.dim(); ++d) inner *= a.size(d);
  Tensor out;
  if (outer == 1) {
    out = view_of(a, out_shape, start * inner);  // contiguous block: a view
  } else if (a.is_cuda()) {
    out = Tensor::empty(out_shape, a.dtype(), Device::cuda);
    cuda_copy_view(a, start * inner, contiguous_strides(a.shape()), out, 0, contiguous_strides(out_shape), out_shape);
  } else {
    out = Tensor::empty(out_shape, a.dtype());
    size_t es = dtype_size(a.dtype());
    const char* s = (const char*)a.raw_data();
    char* o = (char*)out.raw_data();
    int64_t m = end - start;
#pragma omp parallel for schedule(static) if (outer * m * inner > kParallelElements)
    for (int64_t i = 0; i < outer; ++i)
      std::memcpy(o + i * m * inner * es, s + ((i * n + start) * inner) * es, m * inner * es);
  }
  Shape in_shape = a.shape();
  return record("slice", out, {a},
                [in_shape, ax, start, end, n, outer, inner](const Tensor& grad) -> std::vector<Tensor> {
                  if (grad.is_cuda()) {  // zeros, then g's block
                    Tensor ga = zeros(in_shape, grad.dtype(), Device::cuda);
                    cuda_copy_view(grad, 0, contiguous_strides(grad.shape()), ga, start * inner,
                                   contiguous_strides(in_shape), grad.shape());
                    return {ga};
                  }
                  // Each outer row of the gradient: zeros, g's block, zeros (one pass).
                  Tensor ga = Tensor::empty(in_shape, grad.dtype());
                  const size_t es = dtype_size(grad.dtype());
                  const char* src = (const char*)grad.raw_data();
                  char* dst = (char*)ga.raw_data();
                  const int64_t m = end - start;
#pragma omp parallel for schedule(static) if (outer * n * inner > kParallelElements)
                  for (int64_t i = 0; i < outer; ++i) {
                    char* row = dst + i * n * inner * es;
                    std::memset(row, 0, start * inner * es);
                    std::memcpy(row + start * inner * es, src + i * m * inner * es, m * inner * es);
                    std::memset(row + end * inner * es, 0, (n - end) * inner * es);
                  }
                  return {ga};
                });
}

Tensor concat(const std::vector<Tensor>& parts, int64_t axis) {
  TAPELM_CHECK(!parts.empty(), "concat: no tensors given");
  const Tensor& first = parts[0];
  int64_t ax = normalize_axis("concat", axis, first.dim());
  Shape out_shape = first.shape();
  out_shape[ax] = 0;
  for (const Tensor& p : parts) {
    bool ok = p.dim() == first.dim() && p.dtype() == first.dtype();
    for (int64_t d = 0; ok && d < p.dim(); ++d) ok = d == ax || p.size(d) == first.size(d);
    TAPELM_CHECK(ok, "concat: {} {} does not match {} {} outside axis {}", dtype_name(p.dtype()), p.str_shape(),
                 dtype_name(first.dtype()), first.str_shape(), axis);
    out_shape[ax] += p.size(ax);
  }
  Tensor out = Tensor::empty(out_shape, first.dtype(), first.device());
  for (const Tensor& p : parts)
    TAPELM_CHECK(p.device() == first.device(), "concat: parts on different devices ({} and {})",
                 device_name(first.device()), device_name(p.device()));
  std::vector<int64_t> starts;
  int64_t at = 0;
  for (const Tensor& p : parts) {
    copy_block(p, out, ax, at);
    starts.push_back(at);
    at += p.size(ax);
  }
  std::vector<int64_t> sizes;
  for (const Tensor& p : parts) sizes.push_back(p.size(ax));
  return record("concat", out, parts,
                [ax, sizes](const Tensor& grad) -> std::vector<Tensor> { return split(grad, sizes, ax); });
}

std::vector<Tensor> split(const Tensor& a, const std::vector<int64_t>& sizes, int64_t axis) {
  int64_t ax = normalize_axis("split", axis, a.dim());
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  TAPELM_CHECK(total == a.size(ax), "split: sizes sum to {} but axis {} of {} has {}", total, axis, a.str_shape(),
               a.size(ax));
  std::vector<Tensor> out;
  int64_t at = 0;
  for (int64_t s : sizes) {
    out.push_back(slice(a, ax, at, at + s));
    at += s;
  }
  return out;
}

std::vector<Tensor> chunk(const Tensor& a, int64_t n, int64_t axis) {
  int64_t ax = normalize_axis("chunk", axis, a.dim());
  TAPELM_CHECK(n > 0 && a.size(ax) % n == 0, "chunk: axis {} of {} does not split into {} parts", axis, a.str_shape(),
               n);
  return split(a, std::vector<int64_t>(n, a.size(ax) / n), ax);
}

Tensor expand(const Tensor& a, const Shape& shape) {
  Shape b = broadcast_shapes("expand", a.shape(), shape);
  TAPELM_CHECK(b == shape, "expand: {} cannot be broadcast to {}", a.str_shape(), shape_str(shape));
  if (a.shape() == shape) return a;
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  strided_copy(a, broadcast_strides(a.shape(), shape), out);
  Shape in_shape = a.shape();
  return record("expand", out, {a},
                [in_shape](const Tensor& grad) -> std::vector<Tensor> { return {sum_to(grad, in_shape)}; });
}

}  // namespace tapelm
