// Shapes, dtypes and the broadcasting rule (NumPy's: align from the right,
// a dimension of 1 stretches).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tapelm {

using Shape = std::vector<int64_t>;

enum class DType { f32, f64, i32, b8 };

const char* dtype_name(DType d);
size_t dtype_size(DType d);
inline bool is_floating(DType d) { return d == DType::f32 || d == DType::f64; }

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct dtype_of<double> {
  static constexpr DType value = DType::f64;
};
template <>
struct dtype_of<int32_t> {
  static constexpr DType value = DType::i32;
};
template <>
struct dtype_of<uint8_t> {
  static constexpr DType value = DType::b8;
};

// The element count; throws on a negative dimension or a count past int64.
int64_t numel_of(const Shape& s);
// numel_of(s) · dtype_size(d), with the same checks.
int64_t bytes_of(const Shape& s, DType d);
// "[2,3,4]"
std::string shape_str(const Shape& s);
// Row-major strides in elements.
Shape contiguous_strides(const Shape& s);
// Resolves a possibly negative axis; throws naming `op` when out of range.
int64_t normalize_axis(const char* op, int64_t axis, int64_t ndim);
// NumPy broadcast of two shapes; throws "op: [2,3] and [4,3] cannot be broadcast".
Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);
// Strides of `in` viewed as `out` (0 on stretched dimensions), length out.size().
Shape broadcast_strides(const Shape& in, const Shape& out);

}  // namespace tapelm
