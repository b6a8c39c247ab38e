#include "nn/short_conv.h"

#include <cmath>

namespace tapelm::nn {

ShortConvolution::ShortConvolution(int64_t channels_, int64_t kernel_, bool with_bias, Generator& gen)
    : channels(channels_), kernel(kernel_) {
  const double bound = 1.0 / std::sqrt((double)kernel);  // fan_in = 1 channel × k taps
  weight = register_parameter("weight", uniform({channels, 1, kernel}, gen, -bound, bound));
  if (with_bias) bias = register_parameter("bias", uniform({channels}, gen, -bound, bound));
}

Tensor ShortConvolution::forward(const Tensor& x, Tensor* cache) const {
  TAPELM_CHECK(x.dim() == 3 && x.size(2) == channels, "ShortConvolution: expects [B,T,{}], got {}", channels,
               x.str_shape());
  Tensor w = reshape(weight, {channels, kernel});
  if (!cache) return causal_conv1d(x, w, bias);
  const int64_t B = x.size(0), T = x.size(1);
  if (!cache->defined()) *cache = zeros({B, kernel - 1, channels}, x.dtype(), x.device());
  TAPELM_CHECK(cache->size(0) == B, "ShortConvolution: the cache holds {} sequences, the input {}", cache->size(0), B);
  Tensor full = concat({*cache, x}, 1);
  *cache = slice(full, 1, T, T + kernel - 1).clone();
  return slice(causal_conv1d(full, w, bias), 1, kernel - 1, T + kernel - 1);
}

}  // namespace tapelm::nn
