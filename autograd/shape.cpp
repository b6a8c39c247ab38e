#include "autograd/shape.h"

#include "autograd/error.h"

namespace tapelm {

const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32:
      return "float32";
    case DType::f64:
      return "float64";
    case DType::i32:
      return "int32";
    case DType::b8:
      return "bool";
  }
  return "?";
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::f32:
      return 4;
    case DType::f64:
      return 8;
    case DType::i32:
      return 4;
    case DType::b8:
      return 1;
  }
  return 0;
}

int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    TAPELM_CHECK(d >= 0, "shape {}: negative dimension", shape_str(s));
    // Shapes can come from files: a product past int64 is an error, not UB.
    TAPELM_CHECK(!__builtin_mul_overflow(n, d, &n), "shape {}: more elements than int64 can count", shape_str(s));
  }
  return n;
}

int64_t bytes_of(const Shape& s, DType d) {
  int64_t bytes = 0;
  TAPELM_CHECK(!__builtin_mul_overflow(numel_of(s), (int64_t)dtype_size(d), &bytes),
               "shape {}: more {} bytes than int64 can count", shape_str(s), dtype_name(d));
  return bytes;
}

std::string shape_str(const Shape& s) { return fmt::format("[{}]", fmt::join(s, ",")); }

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = (int64_t)s.size() - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

int64_t normalize_axis(const char* op, int64_t axis, int64_t ndim) {
  int64_t a = axis < 0 ? axis + ndim : axis;
  TAPELM_CHECK(a >= 0 && a < ndim, "{}: axis {} is out of range for a tensor of {} dimensions", op, axis, ndim);
  return a;
}

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    TAPELM_CHECK(da == db || da == 1 || db == 1, "{}: shapes {} and {} cannot be broadcast (dimension {}: {} vs {})",
                 op, shape_str(a), shape_str(b), i, da, db);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Shape broadcast_strides(const Shape& in, const Shape& out) {
  Shape st(out.size(), 0);
  Shape cs = contiguous_strides(in);
  size_t off = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) st[off + i] = in[i] == 1 ? 0 : cs[i];
  return st;
}

}  // namespace tapelm
