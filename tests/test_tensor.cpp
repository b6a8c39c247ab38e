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

// Shapes can come from files: overflow and negative sizes are errors, never UB.
TEST(Tensor, ShapeSizesAreChecked) {
  EXPECT_EQ(numel_of({3, 0, 5}), 0);
  EXPECT_EQ(bytes_of({2, 3}, DType::f64), 48);
  EXPECT_ERROR_CONTAINS(numel_of({int64_t(1) << 62, 8}), "more elements than int64 can count");
  EXPECT_ERROR_CONTAINS(numel_of({4, -1}), "negative dimension");
  EXPECT_ERROR_CONTAINS(bytes_of({int64_t(1) << 62}, DType::f32), "more float32 bytes than int64 can count");
  EXPECT_ERROR_CONTAINS(Tensor::empty({int64_t(1) << 40, int64_t(1) << 40}, DType::f32), "int64");
}

TEST(Tensor, AllocationBudgetStopsAndNests) {
  {
    AllocationBudget outer(1000, "outer job");
    Tensor a = Tensor::empty({100}, DType::f32);  // 400 bytes
    {
      AllocationBudget inner(1 << 20, "inner job");
      // The inner budget has room; the enclosing one (600 left) has not.
      EXPECT_ERROR_CONTAINS(Tensor::empty({200}, DType::f32), "outer job (its budget of 0.0 MB exceeded)");
      Tensor b = Tensor::empty({100}, DType::f32);  // 800 of the outer's 1000
    }
    EXPECT_ERROR_CONTAINS(Tensor::empty({100}, DType::f32), "outer job");
  }
  Tensor free_again = Tensor::empty({1 << 20}, DType::f32);  // no budget left behind
  EXPECT_EQ(free_again.numel(), 1 << 20);
}
