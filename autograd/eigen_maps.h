// Eigen views over tapelm's flat buffers, named once: a contiguous vector
// (elementwise kernels: unary ops, norms, the selective scan, AdamW) and a
// row-major matrix with a row stride (GEMM tiles, attention heads read in place).
#pragma once
#include <Eigen/Core>

namespace tapelm {

template <class T>
using ArrayX = Eigen::Array<T, Eigen::Dynamic, 1>;
template <class T>
using ArrayMap = Eigen::Map<ArrayX<T>>;
template <class T>
using ConstArrayMap = Eigen::Map<const ArrayX<T>>;

template <class T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using StridedMatrixMap = Eigen::Map<RowMajorMatrix<T>, 0, Eigen::OuterStride<>>;
template <class T>
using ConstStridedMatrixMap = Eigen::Map<const RowMajorMatrix<T>, 0, Eigen::OuterStride<>>;

}  // namespace tapelm
