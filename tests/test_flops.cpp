// The FLOP counter: exact per-op forward and backward tallies.
#include "tests/test_helpers.h"

using namespace tapelm;

TEST(Flops, MatmulCountsTwoMNKForwardAndFourMNKBackward) {
  const int64_t m = 6, k = 5, n = 7, b = 3;
  Tensor a = ones({b, m, k}).requires_grad_();
  Tensor w = ones({k, n}).requires_grad_();
  FlopCounter::reset();
  Tensor y = matmul(a, w);
  EXPECT_EQ(FlopCounter::of("matmul").forward, 2 * b * m * n * k);
  backward(sum(y));
  EXPECT_EQ(FlopCounter::of("matmul").backward, 4 * b * m * n * k);
  EXPECT_EQ(FlopCounter::of("sum").forward, b * m * n);
}

TEST(Flops, BackwardFlopsAreBookedToTheOpWhoseBackwardRan) {
  Tensor a = ones({4, 4}).requires_grad_();
  Tensor b = ones({4, 4}).requires_grad_();
  FlopCounter::reset();
  Tensor y = mul(a, b);  // forward: 16
  backward(sum(y));      // mul backward: g·b and g·a = 32, booked to "mul"
  EXPECT_EQ(FlopCounter::of("mul").forward, 16);
  EXPECT_EQ(FlopCounter::of("mul").backward, 32);
  FlopTally t = FlopCounter::total();
  EXPECT_EQ(t.forward, 16 + 16);  // mul + sum
  FlopCounter::reset();
  EXPECT_EQ(FlopCounter::total().total(), 0);
}

TEST(Flops, NoGradForwardStillCounts) {
  NoGradGuard ng;
  FlopCounter::reset();
  matmul(ones({2, 3}), ones({3, 4}));
  EXPECT_EQ(FlopCounter::of("matmul").forward, 2 * 2 * 3 * 4);
  EXPECT_EQ(FlopCounter::of("matmul").backward, 0);
}
