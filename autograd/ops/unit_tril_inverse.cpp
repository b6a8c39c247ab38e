// The inverse of a unit lower-triangular matrix, X = (I + N)⁻¹ with N
// strictly lower-triangular [..., C, C] (its diagonal and upper part are not
// read): the UT transform of the delta rule's chunkwise form (Yang et al.
// 2024, §3.2; fla's solve_tril), where I + N = I + diag(β) (KKᵀ ⊙ decay).
// Forward substitution, column by column, as fla solves it in float32:
//   X_jj = 1,  X_ij = −Σ_{j≤m<i} N_im X_mj  (i > j),  X_ij = 0 (i < j).
// Backward (d(A⁻¹) = −A⁻¹ dA A⁻¹): dN = −(Xᵀ dX Xᵀ) on the strictly lower
// part, made of recorded products. FLOPs: C(C−1)(C+1)/3 a matrix forward.
#include "autograd/cuda/kernels.h"
#include "autograd/device_dispatch.h"
#include "autograd/flops.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace tapelm {

namespace {

template <typename S>
void forward_substitution(const S* N, S* X, int64_t matrices, int64_t C) {
#pragma omp parallel for if (matrices * C * C * C / 3 > kParallelElements)
  for (int64_t b = 0; b < matrices; ++b) {
    const S* Nb = N + b * C * C;
    S* Xb = X + b * C * C;
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j < C; ++j) {
        S acc = 0;
        for (int64_t m = j; m < i; ++m) acc -= Nb[i * C + m] * Xb[m * C + j];
        Xb[i * C + j] = i == j ? S(1) : i > j ? acc : S(0);
      }
  }
}

}  // namespace

Tensor unit_tril_inverse(const Tensor& N) {
  const char* op = "unit_tril_inverse";
  const Device device = op_device(op, {&N});
  TAPELM_CHECK(N.dim() >= 2 && N.size(-1) == N.size(-2), "{}: expects square matrices [..., C, C], got {}", op,
               N.str_shape());
  const int64_t C = N.size(-1), matrices = C == 0 ? 0 : N.numel() / (C * C);
  Tensor X = Tensor::empty_like(N);
  if (device == Device::cuda) {  // autograd/cuda/unit_tril_inverse.cu
    TAPELM_CHECK(N.dtype() == DType::f32, "{}: cuda tensors must be float32, got {}", op, dtype_name(N.dtype()));
    cuda::unit_tril_inverse(N.cuda_data<float>(), X.cuda_data<float>(), matrices, C);
  } else {
    dispatch_float(op, N.dtype(), [&](auto tag) {
      using S = decltype(tag);
      forward_substitution<S>(N.data<S>(), X.data<S>(), matrices, C);
    });
  }
  FlopCounter::add(op, matrices * C * (C - 1) * (C + 1) / 3);
  return record(op, X, {N}, [X, C](const Tensor& dX) -> std::vector<Tensor> {
    const Tensor full = neg(matmul(matmul(X, dX, true, false), X, false, true));  // −Xᵀ dX Xᵀ
    return {masked_fill(full, above_diagonal(C, true, X.device()), 0.0)};
  });
}

}  // namespace tapelm
