// The tape: recording, backward, accumulation, no-grad, and memory release.
#include "tests/test_helpers.h"

using namespace tapelm;
using namespace tapelm::testing;

TEST(Tape, SimpleChainRule) {
  // y = sum(x² · 3)  =>  dy/dx = 6x
  Tensor x = from_vector({1, -2, 3}, {3}, DType::f64).requires_grad_();
  Tensor y = sum(mul_scalar(square(x), 3.0));
  EXPECT_DOUBLE_EQ(y.item(), 42.0);
  backward(y);
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{6, -12, 18}));
  EXPECT_EQ(tape_size(), 0u);
}

TEST(Tape, TensorUsedSeveralTimesAccumulates) {
  // y = x·x + x  =>  dy/dx = 2x + 1
  Tensor x = from_vector({2.0}, {1}, DType::f64).requires_grad_();
  Tensor y = sum(add(mul(x, x), x));
  backward(y);
  EXPECT_DOUBLE_EQ(x.grad().item(), 5.0);
}

TEST(Tape, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = from_vector({1.0, 2.0}, {2}, DType::f64).requires_grad_();
  backward(sum(mul_scalar(x, 2.0)));
  backward(sum(mul_scalar(x, 3.0)));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{5, 5}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Tape, SharedGradientBuffersDoNotAlias) {
  // add's backward hands the same gradient to both inputs; accumulating into
  // one must not change the other.
  Tensor a = from_vector({1.0}, {1}, DType::f64).requires_grad_();
  Tensor b = from_vector({1.0}, {1}, DType::f64).requires_grad_();
  backward(sum(add(a, b)));
  backward(sum(mul_scalar(a, 10.0)));
  EXPECT_DOUBLE_EQ(a.grad().item(), 11.0);
  EXPECT_DOUBLE_EQ(b.grad().item(), 1.0);
}

TEST(Tape, ExplicitUpstreamGradient) {
  Tensor x = from_vector({1, 2, 3}, {3}, DType::f64).requires_grad_();
  Tensor y = mul_scalar(x, 2.0);
  backward(y, from_vector({1, 10, 100}, {3}, DType::f64));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2, 20, 200}));
}

TEST(Tape, NonScalarBackwardNeedsAGradient) {
  Tensor x = ones({3}, DType::f64).requires_grad_();
  Tensor y = mul_scalar(x, 2.0);
  EXPECT_ERROR_CONTAINS(backward(y), "gradient must be given for a non-scalar output of shape [3]");
  clear_tape();
}

TEST(Tape, NoGradGuardRecordsNothing) {
  Tensor x = ones({3}, DType::f64).requires_grad_();
  {
    NoGradGuard guard;
    EXPECT_FALSE(grad_enabled());
    Tensor y = sum(exp(x));
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(tape_size(), 0u);
  }
  EXPECT_TRUE(grad_enabled());
  Tensor y = sum(exp(x));
  EXPECT_TRUE(y.requires_grad());
  EXPECT_GT(tape_size(), 0u);
  clear_tape();
}

TEST(Tape, ConstantsAreNotRecorded) {
  Tensor a = ones({3}), b = ones({3});
  Tensor c = add(a, b);
  EXPECT_FALSE(c.requires_grad());
  EXPECT_EQ(tape_size(), 0u);
}

TEST(Tape, IntermediateGradientsAreFreedUnlessRetained) {
  Tensor x = ones({2}, DType::f64).requires_grad_();
  Tensor h = mul_scalar(x, 3.0);
  Tensor k = mul_scalar(x, 4.0);
  k.retain_grad();
  backward(sum(add(h, k)));
  EXPECT_FALSE(h.grad().defined());
  ASSERT_TRUE(k.grad().defined());
  EXPECT_EQ(k.grad().to_vector(), (std::vector<double>{1, 1}));
}

TEST(Tape, DetachCutsTheGraph) {
  Tensor x = from_vector({3.0}, {1}, DType::f64).requires_grad_();
  Tensor y = sum(mul(x, x.detach()));  // d/dx = x (detached factor is constant)
  backward(y);
  EXPECT_DOUBLE_EQ(x.grad().item(), 3.0);
}

// A tiny MLP training step, repeated: after each backward the tape is empty and
// the live bytes are exactly those of the parameters and their gradients.
TEST(Tape, MemoryDoesNotGrowStepAfterStep) {
  Generator g(0);
  Tensor w1 = randn({8, 16}, g, DType::f32, 0, 0.3).requires_grad_();
  Tensor w2 = randn({16, 1}, g, DType::f32, 0, 0.3).requires_grad_();
  Tensor x = randn({32, 8}, g);
  Tensor y = randn({32, 1}, g);
  std::vector<int64_t> live;
  for (int step = 0; step < 5; ++step) {
    Tensor pred = matmul(tanh(matmul(x, w1)), w2);
    Tensor loss = mean(square(sub(pred, y)));
    backward(loss);
    EXPECT_EQ(tape_size(), 0u);
    {
      NoGradGuard ng;
      add_(w1, mul_scalar(w1.grad(), -0.01));
      add_(w2, mul_scalar(w2.grad(), -0.01));
    }
    w1.zero_grad();
    w2.zero_grad();
    pred = Tensor();
    loss = Tensor();
    live.push_back(Storage::live_bytes());
  }
  for (size_t i = 1; i < live.size(); ++i) EXPECT_EQ(live[i], live[0]) << "step " << i;
}

TEST(Tape, SavedTensorsAreReleasedByBackward) {
  int64_t before = Storage::live_buffers();
  {
    Tensor x = ones({64, 64}).requires_grad_();
    Tensor loss = sum(exp(tanh(matmul(x, x))));
    backward(loss);
  }
  EXPECT_EQ(Storage::live_buffers(), before);
}

TEST(Tape, TheProfilerBooksEveryOpForwardAndBackward) {
  Profiler::reset();
  Profiler::enable(true);
  Generator gen(3);
  Tensor x = randn({64, 64}, gen).requires_grad_();
  backward(sum(square(tanh(x))));
  Profiler::enable(false);
  const auto& t = Profiler::tallies();
  for (const char* op : {"tanh", "square", "sum"}) {
    ASSERT_TRUE(t.count(op)) << op;
    EXPECT_EQ(t.at(op).forward_calls, 1) << op;
    EXPECT_EQ(t.at(op).backward_calls, 1) << op;
    EXPECT_GE(t.at(op).forward_s, 0) << op;
    EXPECT_DOUBLE_EQ(t.at(op).host_s, t.at(op).forward_s + t.at(op).backward_s) << op;  // one clock on the CPU
  }
  Profiler::reset();
  EXPECT_TRUE(Profiler::tallies().empty());
}
