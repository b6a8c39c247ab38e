// The tapelm command-line tool. Until the language model lands, its main job
// is a demo of the autograd stack: a two-layer MLP fitting sin(x) on [−π, π]
// with full-batch gradient descent, printing its loss as it falls.
#include <fmt/core.h>

#include <cmath>
#include <cstring>

#include "autograd/autograd.h"

using namespace tapelm;

static int demo() {
  Generator gen(0);
  const int64_t n = 256, hidden = 32;
  Tensor x = Tensor::empty({n, 1});
  Tensor y = Tensor::empty({n, 1});
  for (int64_t i = 0; i < n; ++i) {
    double v = -M_PI + 2 * M_PI * i / (n - 1);
    x.set_flat(i, v);
    y.set_flat(i, std::sin(v));
  }
  Tensor w1 = randn({1, hidden}, gen, DType::f32, 0, 1.0).requires_grad_();
  Tensor b1 = zeros({hidden}).requires_grad_();
  Tensor w2 = randn({hidden, 1}, gen, DType::f32, 0, 1.0 / std::sqrt(hidden)).requires_grad_();
  Tensor b2 = zeros({1}).requires_grad_();
  std::vector<Tensor> params{w1, b1, w2, b2};
  // lr below 2/λ_max: the output layer's Hessian has λ_max ≈ 2·hidden·E[tanh²] ≈ 30.
  const double lr = 0.03;
  fmt::print("tapelm demo: MLP 1-{}-1 (tanh) fitting sin(x), full-batch gradient descent, lr {}\n",
             hidden, lr);
  double first = 0, last = 0;
  for (int step = 0; step <= 3000; ++step) {
    Tensor pred = add(matmul(tanh(add(matmul(x, w1), b1)), w2), b2);
    Tensor loss = mean(square(sub(pred, y)));
    backward(loss);
    {
      NoGradGuard no_grad;
      for (Tensor& p : params) {
        add_(p, mul_scalar(p.grad(), -lr));
        p.zero_grad();
      }
    }
    last = loss.item();
    if (step == 0) first = last;
    if (step % 500 == 0) fmt::print("step {:5d}  mse {:.6f}\n", step, last);
  }
  fmt::print("mse fell from {:.4f} to {:.6f}\n", first, last);
  return last < first ? 0 : 1;
}

int main(int argc, char** argv) {
  try {
    if (argc >= 2 && std::strcmp(argv[1], "demo") == 0) return demo();
    fmt::print(stderr, "usage: tapelm demo\n");
    return 2;
  } catch (const Error& e) {
    fmt::print(stderr, "tapelm: error: {}\n", e.what());
    return 1;
  }
}
