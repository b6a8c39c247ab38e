// Forward values of every op against hand-computed or closed-form results.
#include <cmath>

#include "nn/attention.h"
#include "tests/test_helpers.h"

using namespace tapelm;

static Tensor v64(std::vector<double> v, Shape s) { return from_vector(v, s, DType::f64); }

static void expect_near(const Tensor& t, const std::vector<double>& want, double tol = 1e-12) {
  ASSERT_EQ((size_t)t.numel(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(t.flat(i), want[i], tol) << "at " << i;
}

TEST(Forward, BroadcastArithmetic) {
  Tensor a = v64({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor row = v64({10, 20, 30}, {3});
  Tensor col = v64({100, 200}, {2, 1});
  expect_near(add(a, row), {11, 22, 33, 14, 25, 36});
  expect_near(sub(a, col), {-99, -98, -97, -196, -195, -194});
  expect_near(mul(a, row), {10, 40, 90, 40, 100, 180});
  expect_near(div(a, col), {0.01, 0.02, 0.03, 0.02, 0.025, 0.03});
  EXPECT_EQ(add(col, row).shape(), (Shape{2, 3}));
  expect_near(a * 2.0 + 1.0, {3, 5, 7, 9, 11, 13});
  expect_near(1.0 - a, {0, -1, -2, -3, -4, -5});
  expect_near(6.0 / a, {6, 3, 2, 1.5, 1.2, 1});
  expect_near(pow(a, 0.5), {1, std::sqrt(2), std::sqrt(3), 2, std::sqrt(5), std::sqrt(6)});
}

TEST(Forward, UnaryFunctions) {
  Tensor x = v64({-2, -0.5, 0.5, 3}, {4});
  auto each = [&](double (*f)(double)) {
    std::vector<double> r;
    for (double v : x.to_vector()) r.push_back(f(v));
    return r;
  };
  expect_near(neg(x), {2, 0.5, -0.5, -3});
  expect_near(exp(x), each([](double v) { return std::exp(v); }));
  expect_near(tanh(x), each([](double v) { return std::tanh(v); }));
  expect_near(sigmoid(x), each([](double v) { return 1 / (1 + std::exp(-v)); }));
  expect_near(relu(x), {0, 0, 0.5, 3});
  expect_near(square(x), {4, 0.25, 0.25, 9});
  expect_near(silu(x), each([](double v) { return v / (1 + std::exp(-v)); }));
  expect_near(softplus(x), each([](double v) { return std::log(1 + std::exp(v)); }));
  expect_near(elu(x), each([](double v) { return v > 0 ? v : std::exp(v) - 1; }));
  // Reference values of torch.nn.functional.gelu at these points.
  expect_near(gelu(x), {-0.04550026389635842, -0.15426876936299344, 0.34573123063700656, 2.99595030590511});
  expect_near(gelu_tanh(x), {-0.04540230591222494, -0.15428599017485606, 0.34571400982514394, 2.996362607918227});
  Tensor p = v64({0.25, 4}, {2});
  expect_near(log(p), {std::log(0.25), std::log(4.0)});
  expect_near(sqrt(p), {0.5, 2});
  // softplus is linear past its threshold, without overflow.
  expect_near(softplus(v64({50, 800}, {2})), {50, 800});
}

TEST(Forward, MatmulWithTransposesAndBatches) {
  Tensor a = v64({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = v64({1, 0, 0, 1, 1, 1}, {3, 2});
  expect_near(matmul(a, b), {4, 5, 10, 11});
  // aᵀ stored as [3,2]: transpose flags read it in place.
  Tensor at = transpose(a, 0, 1);
  expect_near(matmul(at, b, true, false), {4, 5, 10, 11});
  Tensor bt = transpose(b, 0, 1);
  expect_near(matmul(a, bt, false, true), {4, 5, 10, 11});
  expect_near(matmul(at, bt, true, true), {4, 5, 10, 11});
  // Batch broadcast: [2,1,2,3] @ [3,3,2] -> [2,3,2,2]
  Tensor A = reshape(concat({a, mul_scalar(a, 2.0)}, 0), {2, 1, 2, 3});
  Tensor B = reshape(concat({b, b, b}, 0), {3, 3, 2});
  Tensor C = matmul(A, B);
  EXPECT_EQ(C.shape(), (Shape{2, 3, 2, 2}));
  expect_near(slice(slice(C, 0, 1, 2), 1, 2, 3), {8, 10, 20, 22});
}

TEST(Forward, Reductions) {
  Tensor a = v64({1, 5, 3, 4, 2, 6}, {2, 3});
  expect_near(sum(a), {21});
  expect_near(sum(a, {0}), {5, 7, 9});
  expect_near(sum(a, {1}, true), {9, 12});
  EXPECT_EQ(sum(a, {1}, true).shape(), (Shape{2, 1}));
  expect_near(mean(a, {-1}), {3, 4});
  expect_near(max(a, {1}), {5, 6});
  expect_near(max(a, {0}), {4, 5, 6});
  expect_near(max(a, {0, 1}), {6});
  expect_near(sum_to(a, {1, 3}), {5, 7, 9});
}

TEST(Forward, ShapeOps) {
  Tensor a = v64({0, 1, 2, 3, 4, 5}, {1, 2, 3});
  expect_near(permute(a, {2, 0, 1}), {0, 3, 1, 4, 2, 5});
  EXPECT_EQ(permute(a, {2, 0, 1}).shape(), (Shape{3, 1, 2}));
  expect_near(slice(a, 2, -2, 3), {1, 2, 4, 5});
  auto parts = split(a, {1, 2}, -1);
  expect_near(parts[0], {0, 3});
  expect_near(parts[1], {1, 2, 4, 5});
  expect_near(concat({parts[1], parts[0]}, 2), {1, 2, 0, 4, 5, 3});
  expect_near(expand(v64({1, 2}, {2, 1}), {2, 3}), {1, 1, 1, 2, 2, 2});
  EXPECT_EQ(unsqueeze(a, -1).shape(), (Shape{1, 2, 3, 1}));
  EXPECT_EQ(squeeze(a, 0).shape(), (Shape{2, 3}));
  EXPECT_EQ(chunk(a, 3, 2).size(), 3u);
}

TEST(Forward, EmbeddingGathersRows) {
  Tensor w = v64({0, 1, 10, 11, 20, 21}, {3, 2});
  Tensor e = embedding(w, from_ints({2, 0, 2}, {3}));
  EXPECT_EQ(e.shape(), (Shape{3, 2}));
  expect_near(e, {20, 21, 0, 1, 20, 21});
}

TEST(Forward, SoftmaxIsStableAndNormalised) {
  Tensor x = v64({1000, 1001, 1002, -5, 0, 5}, {2, 3});
  Tensor s = softmax(x);
  double e1 = std::exp(-1), e2 = std::exp(-2), z = 1 + e1 + e2;
  expect_near(slice(s, 0, 0, 1), {e2 / z, e1 / z, 1 / z});
  Tensor ls = log_softmax(x);
  expect_near(slice(ls, 0, 0, 1), {std::log(e2 / z), std::log(e1 / z), std::log(1 / z)});
  for (double v : s.to_vector()) EXPECT_TRUE(std::isfinite(v));
  // A row that is entirely −∞ (a fully masked query) gives zeros, not NaN,
  // and passes a zero gradient.
  Tensor inf = full({2, 3}, -INFINITY, DType::f64).requires_grad_();
  Tensor s_inf = softmax(inf);
  for (double v : s_inf.to_vector()) EXPECT_EQ(v, 0.0);
  backward(sum(s_inf));
  for (double v : inf.grad().to_vector()) EXPECT_EQ(v, 0.0);
}

TEST(Forward, CrossEntropyMatchesLogSoftmaxAndIgnoresIndex) {
  Tensor logits = v64({1, 2, 3, 0.5, 0.1, -1, 2, 2, 2}, {3, 3});
  Tensor t = from_ints({2, 0, kIgnoreIndex}, {3});
  Tensor ls = log_softmax(logits);
  double want = -(ls.flat(2) + ls.flat(3)) / 2;
  EXPECT_NEAR(cross_entropy(logits, t).item(), want, 1e-14);
  EXPECT_NEAR(cross_entropy(logits, from_ints({1, 1, 1}, {3})).item(), -(ls.flat(1) + ls.flat(4) + ls.flat(7)) / 3,
              1e-14);
  // Uniform logits over V classes: loss = log V.
  EXPECT_NEAR(cross_entropy(zeros({4, 65}, DType::f64), from_ints({0, 1, 2, 64}, {4})).item(), std::log(65.0), 1e-13);
  EXPECT_EQ(cross_entropy(logits, from_ints({-1, -1, -1}, {3})).item(), 0.0);  // kIgnoreIndex by default
}

TEST(Forward, MasksAndWhere) {
  Tensor a = v64({1, 2, 3, 4}, {2, 2});
  Tensor causal = from_bools({false, true, false, false}, {2, 2});
  expect_near(masked_fill(a, causal, -1e9), {1, -1e9, 3, 4});
  Tensor col = from_bools({true, false}, {2, 1});
  expect_near(where(col, a, v64({0}, {})), {1, 2, 0, 0});
  expect_near(logical_not(col).to(DType::f64), {0, 1});
}

TEST(Forward, DropoutTrainEvalAndSeed) {
  Tensor a = ones({10000}, DType::f64);
  Generator g1(3), g2(3);
  Tensor d1 = dropout(a, 0.25, true, g1), d2 = dropout(a, 0.25, true, g2);
  EXPECT_EQ(d1.to_vector(), d2.to_vector());
  int zeros_seen = 0;
  for (double v : d1.to_vector()) {
    EXPECT_TRUE(v == 0.0 || std::fabs(v - 4.0 / 3.0) < 1e-15);
    zeros_seen += v == 0.0;
  }
  EXPECT_NEAR(zeros_seen / 10000.0, 0.25, 0.02);
  EXPECT_TRUE(dropout(a, 0.25, false, g1).same_storage(a));  // eval: identity
}

TEST(Forward, Cumsum) {
  Tensor a = v64({1, 2, 3, 4, 5, 6}, {2, 3});
  expect_near(cumsum(a, 1), {1, 3, 6, 4, 9, 15});
  expect_near(cumsum(a, 0), {1, 2, 3, 5, 7, 9});
}

TEST(Forward, Float32AgreesWithFloat64) {
  Generator g(11);
  Tensor x64 = randn({5, 7}, g, DType::f64);
  Tensor w64 = randn({7, 3}, g, DType::f64);
  Tensor x32 = x64.to(DType::f32), w32 = w64.to(DType::f32);
  auto f = [](const Tensor& x, const Tensor& w) { return log_softmax(gelu(matmul(x, w))); };
  Tensor y64 = f(x64, w64), y32 = f(x32, w32);
  for (int64_t i = 0; i < y64.numel(); ++i) EXPECT_NEAR(y32.flat(i), y64.flat(i), 1e-5);
}

TEST(Forward, CausalConv1dMixesOnlyThePast) {
  // One channel, kernel [1, 10, 100]: y_t = 100 x_t + 10 x_{t-1} + x_{t-2} + 0.5.
  Tensor x = from_vector({1, 2, 3, 4}, {1, 4, 1}, DType::f64);
  Tensor y = causal_conv1d(x, from_vector({1, 10, 100}, {1, 3}, DType::f64), from_vector({0.5}, {1}, DType::f64));
  expect_near(y, {100.5, 210.5, 321.5, 432.5});
}

// The fused attention op equals the composed ops it replaces (matmul, scale,
// masked_fill, softmax, matmul over [B,H,T,hd]), values and gradients, in float64.
TEST(FusedAttention, EqualsComposedOps) {
  Generator gen(7);
  const int64_t B = 2, T = 5, H = 3, hd = 4;
  Tensor q = randn({B, T, H, hd}, gen, DType::f64).requires_grad_();
  Tensor k = randn({B, T, H, hd}, gen, DType::f64).requires_grad_();
  Tensor v = randn({B, T, H, hd}, gen, DType::f64).requires_grad_();
  Tensor pad = zeros({B, T}, DType::b8);
  pad.data<uint8_t>()[T] = 1;  // batch 1 is left-padded by one token
  Tensor mask = attention_mask(B, T, T, pad);
  Tensor R = randn({B, T, H, hd}, gen, DType::f64);
  auto grads = [&](const Tensor& y) {
    for (Tensor* t : {&q, &k, &v}) t->zero_grad();
    backward(sum(mul(y, R)));
    return std::vector<std::vector<double>>{q.grad().to_vector(), k.grad().to_vector(), v.grad().to_vector()};
  };
  Tensor fused = scaled_dot_product_attention(q, k, v, mask, 0.5);
  std::vector<double> fused_values = fused.to_vector();
  auto fused_grads = grads(fused);
  auto hf = [](const Tensor& t) { return permute(t, {0, 2, 1, 3}); };
  Tensor composed =
      permute(matmul(softmax(masked_fill(mul_scalar(matmul(hf(q), hf(k), false, true), 0.5), mask, -INFINITY)), hf(v)),
              {0, 2, 1, 3});
  std::vector<double> composed_values = composed.to_vector();
  auto composed_grads = grads(composed);
  for (size_t i = 0; i < fused_values.size(); ++i) EXPECT_NEAR(fused_values[i], composed_values[i], 1e-13);
  for (int t = 0; t < 3; ++t)
    for (size_t i = 0; i < fused_grads[t].size(); ++i) EXPECT_NEAR(fused_grads[t][i], composed_grads[t][i], 1e-13);
}
