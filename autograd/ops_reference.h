// The fused cores written again as plain loops of primitive ops, for tests:
// each form of a core must equal its reference in values and gradients
// (tests/test_recurrence.cpp). Each is defined beside its core in autograd/ops/.
#pragma once
#include "autograd/ops.h"

namespace tapelm {

Tensor gated_recurrence_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g);
Tensor delta_rule_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, const Tensor& g);
Tensor selective_scan_reference(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                const Tensor& Cm);
Tensor gau_attention_reference(const GauAttentionInputs& in);

}  // namespace tapelm
