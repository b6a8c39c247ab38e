// Token shift (FLASH-pytorch's shift_tokens, after BlinkDL's RWKV): the first
// half of the features of each token are replaced by those of the token before,
//   y_t = [x_{t−1}[:h], x_t[h:]],  h = ⌈d/2⌉ (torch.chunk's split),
// so a layer sees two tokens at the cost of none. "The token before" is the
// last real (unpadded) one: padding neither feeds it nor moves it, so logits
// at real tokens do not depend on padding. Before the first real token the
// shifted half is zero, or, when decoding, the `last` carried from the step before.
#pragma once
#include "autograd/tensor.h"

namespace tapelm::nn {

// x [B,T,d]; pad [B,T] bool (true at padding) or undefined. With `last`
// (decoding; [B,h], zeros when undefined) the shift starts from it and leaves
// the first half of each row's last real token there.
Tensor shift_tokens(const Tensor& x, const Tensor& pad, Tensor* last = nullptr);

}  // namespace tapelm::nn
