// dst += src in place, same shape and dtype; not recorded on the tape. The
// tape's gradient accumulation and the optimizers' updates use it, so it sits
// below both (ops.h re-exports it beside the ops).
#pragma once
#include "autograd/tensor.h"

namespace tapelm {

void add_(Tensor& dst, const Tensor& src);

}  // namespace tapelm
