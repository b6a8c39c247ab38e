// Internal: what the recurrence ops (gated_recurrence, delta_rule,
// selective_scan) share — Eigen views of row-major buffers, the carried
// decoding state, and running a form block by block over that state.
#pragma once
#include <Eigen/Core>
#include <vector>

#include "autograd/ops.h"

namespace tapelm::detail {

template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MapM = Eigen::Map<Mat<T>>;
template <class T>
using CMapM = Eigen::Map<const Mat<T>>;
template <class T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <class T>
using CMapV = Eigen::Map<const Vec<T>>;

// Checks and prepares a carried state (inference only): zeros of `shape` when
// undefined, else it must have that shape.
inline void prepare_state(const char* op, Tensor* state, const Shape& shape, DType dtype,
                          const std::vector<Tensor>& inputs) {
  bool any_grad = false;
  for (const Tensor& t : inputs) any_grad = any_grad || t.requires_grad();
  TAPELM_CHECK(!grad_enabled() || !any_grad, "{}: a carried state is for inference; run it under NoGradGuard", op);
  if (!state->defined()) *state = zeros(shape, dtype);
  TAPELM_CHECK(state->shape() == shape && state->dtype() == dtype, "{}: state {} {} does not match {} {}", op,
               dtype_name(state->dtype()), state->str_shape(), dtype_name(dtype), shape_str(shape));
}

// The block length a form runs with: the whole sequence for the parallel form.
inline int64_t block_length(RecurrenceForm form, int64_t chunk, int64_t T) {
  return form == RecurrenceForm::parallel ? std::max<int64_t>(T, 1) : chunk;
}

// Runs block(t0, t1, S) over [0, T) in blocks of `len`, with S (K×V) starting
// from *state_data (zeros if null) and written back there at the end.
template <class T, class Block>
void run_blocks(T* state_data, int64_t K, int64_t V, int64_t steps, int64_t len, Block block) {
  Mat<T> S = Mat<T>::Zero(K, V);
  if (state_data) S = CMapM<T>(state_data, K, V);
  for (int64_t t0 = 0; t0 < steps; t0 += len) block(t0, std::min(steps, t0 + len), S);
  if (state_data) MapM<T>(state_data, K, V) = S;
}

}  // namespace tapelm::detail
