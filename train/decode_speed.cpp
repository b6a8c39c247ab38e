#include "train/decode_speed.h"

#include <chrono>

#include "autograd/ops.h"

namespace tapelm::train {

std::vector<DecodePoint> measure_decode_speed(nn::GPT& model, const std::vector<int64_t>& contexts, int64_t tokens,
                                              uint64_t seed) {
  const nn::ModelConfig& c = model.config;
  Generator gen(seed);
  const bool was_training = model.training();
  model.eval();
  NoGradGuard no_grad;
  std::vector<DecodePoint> points;
  for (int64_t ctx : contexts) {
    TAPELM_CHECK(ctx >= 1 && ctx - 1 + tokens <= c.block_size,
                 "decode speed: context {} plus {} timed tokens does not fit the model's context {}", ctx, tokens,
                 c.block_size);
    nn::DecodeState state = model.init_decode(1);
    if (ctx > 1) model.forward(randint({1, ctx - 1}, c.vocab_size, gen), Tensor(), &state);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < tokens; ++i) model.forward(randint({1, 1}, c.vocab_size, gen), Tensor(), &state);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    points.push_back({ctx, tokens / dt, state.bytes()});
  }
  model.train(was_training);
  return points;
}

}  // namespace tapelm::train
