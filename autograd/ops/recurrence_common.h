// Internal: the driver the recurrence ops (gated_recurrence, delta_rule,
// selective_scan) share. Each core supplies only its own arithmetic:
//   step(t, S)               advance S from S_{t−1} to S_t (forward recurrence)
//   block(t0, t1, S)         positions [t0, t1) at once (parallel and chunkwise forms)
//   reverse(t, S_prev, S_t)  one step of the reverse-time backward pass
// and the driver runs them over a carried state, block by block, or backwards
// with the states recomputed chunk by chunk from checkpoints.
//
// Determinism: every slice (a batch row and head, or a channel) writes only
// its own outputs, and a sum across slices (such as selective_scan's dA) is
// added in slice order, never in the order threads finish. So gradients are
// bit-identical from run to run and for any number of threads.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <vector>

#include "autograd/ops.h"
#include "autograd/parallel.h"

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

// Scratch that Eigen reads, aligned as Eigen's own matrices are. Eigen's sums
// start their vector lanes at the first aligned element, which it finds at run
// time: over a plain std::vector (16-byte aligned by malloc) the order of the
// additions, hence the last bits, followed where the heap put the buffer, and
// two identical runs could differ (a resumed Mamba run by 2.4e-7).
template <class T>
using AlignedVector = std::vector<T, Eigen::aligned_allocator<T>>;

// Checks and prepares a carried state (inference only): zeros of `shape` on
// `device` when undefined, else it must have that shape and be there.
inline void prepare_state(const char* op, Tensor* state, const Shape& shape, DType dtype,
                          const std::vector<Tensor>& inputs, Device device = Device::cpu) {
  bool any_grad = false;
  for (const Tensor& t : inputs) any_grad = any_grad || t.requires_grad();
  TAPELM_CHECK(!grad_enabled() || !any_grad, "{}: a carried state is for inference; run it under NoGradGuard", op);
  if (!state->defined()) *state = zeros(shape, dtype, device);
  TAPELM_CHECK(state->shape() == shape && state->dtype() == dtype, "{}: state {} {} does not match {} {}", op,
               dtype_name(state->dtype()), state->str_shape(), dtype_name(dtype), shape_str(shape));
  TAPELM_CHECK(state->device() == device, "{}: state on {}, inputs on {}", op, device_name(state->device()),
               device_name(device));
}

// The precision of the chunk forms' products, forward and backward, whatever
// the model's: fp32. The recipe, fla's and mamba_ssm's keep states,
// decays and their sums in float32; in bf16 the products would round the
// carried state S_in, the decayed scores and the UT inverse to 8 bits, which
// the recurrent kernels never do. These products are a small share of the
// step's FLOPs (the chunk is 64 steps, the head 64 wide).
inline constexpr Precision kChunkProducts = Precision::fp32;

// gated_recurrence's chunkwise form (a decay per step, g [B,H,T,1], or per
// key, g [B,H,T,K]) as products of chunks of C steps, made of recorded ops:
// the GPU's form (ops/recurrence.cpp); on either device, from a zero state.
Tensor gated_recurrence_chunks(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g, int64_t C);

// delta_rule's chunkwise form (the WY/UT representation, g and beta
// [B,H,T,1]) as products of chunks of C steps, made of recorded ops: the
// GPU's form (ops/delta_rule.cpp); on either device, from a zero state.
Tensor delta_rule_chunks(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, const Tensor& g,
                         int64_t C);

// The block length a form runs with: the whole sequence for the parallel form.
inline int64_t block_length(RecurrenceForm form, int64_t chunk, int64_t T) {
  return form == RecurrenceForm::parallel ? std::max<int64_t>(T, 1) : chunk;
}

// Runs body(slice) for slice = 0 … n−1 on the OpenMP team. Slices must write
// disjoint outputs; then the schedule changes no number. Slices cost the same,
// so a static schedule balances them.
template <class Body>
void for_each_slice(int64_t n, Body body) {
#pragma omp parallel for schedule(static) if (n > 1)
  for (int64_t i = 0; i < n; ++i) body(i);
}

// Runs body(S) on a K×V state loaded from *state_data (zeros if null) and
// written back there afterwards.
template <class T, class Body>
void with_state(T* state_data, int64_t K, int64_t V, Body body) {
  Mat<T> S = Mat<T>::Zero(K, V);
  if (state_data) S = CMapM<T>(state_data, K, V);
  body(S);
  if (state_data) MapM<T>(state_data, K, V) = S;
}

// The recurrent form of one slice: step(t, S) for t = 0 … steps−1.
template <class T, class Step>
void run_recurrent(T* state_data, int64_t K, int64_t V, int64_t steps, Step step) {
  with_state(state_data, K, V, [&](Mat<T>& S) {
    for (int64_t t = 0; t < steps; ++t) step(t, S);
  });
}

// The forward pass of one slice in `form`: the recurrent form steps; the
// others call block(t0, t1, S) over blocks of block_length(form, chunk, steps).
template <class T, class Step, class Block>
void run_forward(RecurrenceForm form, int64_t chunk, T* state_data, int64_t K, int64_t V, int64_t steps, Step step,
                 Block block) {
  if (form == RecurrenceForm::recurrent) return run_recurrent<T>(state_data, K, V, steps, step);
  const int64_t len = block_length(form, chunk, steps);
  with_state(state_data, K, V, [&](Mat<T>& S) {
    for (int64_t t0 = 0; t0 < steps; t0 += len) block(t0, std::min(steps, t0 + len), S);
  });
}

// Buffers of run_reverse, reused across the slices one thread runs.
template <class T>
struct ReverseWorkspace {
  AlignedVector<T> entries;  // the state entering each chunk
  AlignedVector<T> states;   // S_{t0−1} … S_{t1−1} of the chunk being reversed
};

// The backward pass of one slice, from a zero initial state: calls
// reverse(t, S_{t−1}, S_t) for t = steps−1 … 0 in that order. The states are
// recomputed with step() one chunk at a time from checkpoints taken every
// `chunk` steps, so memory is O((steps/chunk + chunk)·K·V); with chunk ≥ steps
// there is no checkpoint pass and every state is kept.
template <class T, class Step, class Reverse>
void run_reverse(int64_t K, int64_t V, int64_t steps, int64_t chunk, ReverseWorkspace<T>& ws, Step step,
                 Reverse reverse) {
  const int64_t KV = K * V, n_chunks = ceil_div(steps, chunk), held = std::min(chunk, steps) + 1;
  ws.entries.assign(std::max<int64_t>(n_chunks, 1) * KV, T(0));
  if (n_chunks > 1) {
    Mat<T> running = Mat<T>::Zero(K, V);
    for (int64_t t = 0; t < (n_chunks - 1) * chunk; ++t) {
      step(t, running);
      if ((t + 1) % chunk == 0) MapM<T>(ws.entries.data() + (t + 1) / chunk * KV, K, V) = running;
    }
  }
  ws.states.resize(held * KV);
  auto state = [&](int64_t j) { return MapM<T>(ws.states.data() + j * KV, K, V); };
  for (int64_t c = n_chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * chunk, t1 = std::min(steps, t0 + chunk);
    state(0) = CMapM<T>(ws.entries.data() + c * KV, K, V);  // state(j) = S_{t0+j−1}
    for (int64_t t = t0; t < t1; ++t) {
      MapM<T> S = state(t - t0 + 1);
      S = state(t - t0);
      step(t, S);
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const MapM<T> S_prev = state(t - t0), S_t = state(t - t0 + 1);
      reverse(t, S_prev, S_t);
    }
  }
}

}  // namespace tapelm::detail
