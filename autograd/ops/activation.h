// The activations a linear can read its input through (ops.h's Activation),
// one table in ops/unary.cpp: each one's op, its CUDA function and its FLOP
// counts per element, so the fused form (ops/matmul.cpp) books what the op would.
#pragma once
#include <cstdint>

#include "autograd/cuda/kernels.h"
#include "autograd/ops.h"

namespace tapelm::detail {

struct ActivationOp {
  const char* name;       // the op: "gelu"
  const char* in_linear;  // its FLOPs inside a linear: "linear.gelu" (a part of linear, see flops.h)
  cuda::Unary kind;
  int64_t forward_flops, backward_flops;  // per element
  Tensor (*apply)(const Tensor&);         // the op itself: gelu
};
const ActivationOp& activation_op(Activation a);  // not Activation::none

}  // namespace tapelm::detail
