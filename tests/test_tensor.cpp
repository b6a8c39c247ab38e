#include "tests/test_helpers.h"

using namespace tapelm;

TEST(Tensor, CreationHelpers) {
  Tensor z = zeros({2, 3});
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.dtype(), DType::f32);
  for (double v : z.to_vector()) EXPECT_EQ(v, 0.0);
  Tensor o = ones({4}, DType::f64);
  for (double v : o.to_vector()) EXPECT_EQ(v, 1.0);
  Tensor f = full({2}, 2.5);
  EXPECT_EQ(f.to_vector(), (std::vector<double>{2.5, 2.5}));
  Tensor v = from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, DType::f64);
  EXPECT_EQ(v.flat(4), 5.0);
  EXPECT_EQ(arange(4).to_vector(), (std::vector<double>{0, 1, 2, 3}));
  EXPECT_EQ(from_ints({3, 1}, {2}).dtype(), DType::i32);
}

TEST(Tensor, RandomIsReproducibleFromSeed) {
  Generator a(42), b(42), c(43);
  Tensor ta = randn({100}, a), tb = randn({100}, b), tc = randn({100}, c);
  EXPECT_EQ(ta.to_vector(), tb.to_vector());
  EXPECT_NE(ta.to_vector(), tc.to_vector());
  // Moments of 100k normals: mean ~ 0, var ~ 1 (6-sigma bounds).
  Generator g(7);
  Tensor big = randn({100000}, g, DType::f64);
  double m = 0, v = 0;
  for (double x : big.to_vector()) m += x;
  m /= big.numel();
  for (double x : big.to_vector()) v += (x - m) * (x - m);
  v /= big.numel();
  EXPECT_NEAR(m, 0.0, 6 / std::sqrt(1e5));
  EXPECT_NEAR(v, 1.0, 0.03);
  Tensor u = uniform({1000}, g, -2, 3);
  for (double x : u.to_vector()) {
    EXPECT_GE(x, -2);
    EXPECT_LT(x, 3);
  }
}

TEST(Tensor, GeneratorStateRoundTrips) {
  Generator g(5);
  g.normal();
  Generator::State s = g.state();
  double a = g.normal(), b = g.uniform();
  g.set_state(s);
  EXPECT_EQ(g.normal(), a);
  EXPECT_EQ(g.uniform(), b);
}

TEST(Tensor, ReshapeIsAViewSharingStorage) {
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor r = reshape(a, {3, -1});
  EXPECT_EQ(r.shape(), (Shape{3, 2}));
  EXPECT_TRUE(r.same_storage(a));
  r.set_flat(0, 9);
  EXPECT_EQ(a.flat(0), 9);
}

TEST(Tensor, LeadingSliceIsAViewOthersCopy) {
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor rows = slice(a, 0, 1, 3);
  EXPECT_TRUE(rows.same_storage(a));
  EXPECT_EQ(rows.to_vector(), (std::vector<double>{3, 4, 5, 6}));
  Tensor col = slice(a, 1, 1, 2);
  EXPECT_FALSE(col.same_storage(a));
  EXPECT_EQ(col.to_vector(), (std::vector<double>{2, 4, 6}));
}

TEST(Tensor, DtypeConversionAndClone) {
  Tensor a = from_vector({1.5, -2.25}, {2}, DType::f64);
  Tensor b = a.to(DType::f32);
  EXPECT_EQ(b.dtype(), DType::f32);
  EXPECT_EQ(b.to_vector(), (std::vector<double>{1.5, -2.25}));
  Tensor c = a.clone();
  c.set_flat(0, 0);
  EXPECT_EQ(a.flat(0), 1.5);
}

TEST(Tensor, WrongDtypeAccessThrows) {
  Tensor a = zeros({2});
  EXPECT_ERROR_CONTAINS(a.data<double>(), "data<float64>() on a float32 tensor");
  EXPECT_ERROR_CONTAINS(from_ints({1}, {1}).requires_grad_(), "int32 tensor cannot have a gradient");
}
