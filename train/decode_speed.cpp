#include "train/decode_speed.h"

#include <algorithm>
#include <chrono>

#include "autograd/ops.h"

namespace tapelm::train {

std::vector<DecodePoint> measure_decode_speed(nn::GPT& model, const std::vector<int64_t>& contexts, int64_t tokens,
                                              int64_t batch, uint64_t seed) {
  const nn::ModelConfig& c = model.config;
  Generator gen(seed);
  const bool was_training = model.training();
  model.eval();
  NoGradGuard no_grad;
  TAPELM_CHECK(batch >= 1, "decode speed: batch {} must be positive", batch);
  std::vector<DecodePoint> points;
  for (int64_t ctx : contexts) {
    TAPELM_CHECK(ctx >= 1 && ctx - 1 + tokens <= c.block_size,
                 "decode speed: context {} plus {} timed tokens does not fit the model's context {}", ctx, tokens,
                 c.block_size);
    nn::DecodeState state = model.init_decode(batch);
    for (int64_t done = 0; done < ctx - 1;) {
      const int64_t n = std::min<int64_t>(256, ctx - 1 - done);
      model.forward(randint({batch, n}, c.vocab_size, gen), Tensor(), &state);
      done += n;
    }
    std::vector<double> step_s;
    for (int64_t i = 0; i < tokens; ++i) {
      Tensor next = randint({batch, 1}, c.vocab_size, gen);
      const auto t0 = std::chrono::steady_clock::now();
      model.forward(next, Tensor(), &state);
      step_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::nth_element(step_s.begin(), step_s.begin() + tokens / 2, step_s.end());
    points.push_back({ctx, batch, batch / step_s[tokens / 2], state.bytes() / batch});
  }
  model.train(was_training);
  return points;
}

}  // namespace tapelm::train
