// Every differentiable op passes float64 gradcheck (eps 1e-6, atol 1e-8,
// rtol 1e-6 — GradcheckOptions' defaults) on random inputs, including
// broadcasting, non-last axes, batched and transposed matmul, a tensor reused
// in one graph, and ops chained into a small graph.
#include "tests/test_helpers.h"

using namespace tapelm;
using namespace tapelm::testing;

namespace {

struct Case {
  std::string name;
  std::function<std::vector<Tensor>()> make_inputs;
  GradcheckFn f;
};

Tensor bmask(const std::vector<bool>& v, const Shape& s) { return from_bools(v, s); }

std::vector<Case> cases() {
  using V = std::vector<Tensor>;
  std::vector<Case> c;
  auto P = [](Shape s, uint64_t seed, double scale = 1.0) { return param(s, seed, scale); };
  auto Q = [](Shape s, uint64_t seed) { return positive_param(s, seed); };
  // Binary broadcasting.
  c.push_back({"add_same", [=] { return V{P({3, 4}, 1), P({3, 4}, 2)}; }, [](const V& x) { return add(x[0], x[1]); }});
  c.push_back({"add_broadcast_row",
               [=] {
                 return V{P({3, 4}, 1), P({4}, 2)};
               },
               [](const V& x) { return add(x[0], x[1]); }});
  c.push_back({"sub_broadcast_both",
               [=] {
                 return V{P({3, 1}, 1), P({1, 4}, 2)};
               },
               [](const V& x) { return sub(x[0], x[1]); }});
  c.push_back({"mul_broadcast_middle",
               [=] {
                 return V{P({2, 3, 4}, 1), P({2, 1, 4}, 2)};
               },
               [](const V& x) { return mul(x[0], x[1]); }});
  c.push_back({"div_broadcast_scalar_tensor",
               [=] {
                 return V{P({2, 3}, 1), Q({}, 2)};
               },
               [](const V& x) { return div(x[0], x[1]); }});
  c.push_back({"div_broadcast",
               [=] {
                 return V{P({2, 3}, 1), Q({2, 1}, 2)};
               },
               [](const V& x) { return div(x[0], x[1]); }});
  // Scalars.
  c.push_back({"add_scalar", [=] { return V{P({5}, 1)}; }, [](const V& x) { return x[0] + 2.5; }});
  c.push_back({"mul_scalar", [=] { return V{P({5}, 1)}; }, [](const V& x) { return x[0] * -1.5; }});
  c.push_back({"rsub_scalar", [=] { return V{P({5}, 1)}; }, [](const V& x) { return 3.0 - x[0]; }});
  c.push_back({"rdiv_scalar", [=] { return V{Q({5}, 1)}; }, [](const V& x) { return 3.0 / x[0]; }});
  c.push_back({"pow", [=] { return V{Q({5}, 1)}; }, [](const V& x) { return pow(x[0], 2.7); }});
  // Unary.
  c.push_back({"neg", [=] { return V{P({6}, 1)}; }, [](const V& x) { return neg(x[0]); }});
  c.push_back({"exp", [=] { return V{P({6}, 1)}; }, [](const V& x) { return exp(x[0]); }});
  c.push_back({"log", [=] { return V{Q({6}, 1)}; }, [](const V& x) { return log(x[0]); }});
  c.push_back({"sqrt", [=] { return V{Q({6}, 1)}; }, [](const V& x) { return sqrt(x[0]); }});
  c.push_back({"tanh", [=] { return V{P({6}, 1)}; }, [](const V& x) { return tanh(x[0]); }});
  c.push_back({"sigmoid", [=] { return V{P({6}, 1)}; }, [](const V& x) { return sigmoid(x[0]); }});
  c.push_back({"relu",
               [=] {
                 return V{from_vector({-1.2, -0.3, 0.4, 2.0}, {4}, DType::f64).requires_grad_()};
               },
               [](const V& x) { return relu(x[0]); }});
  c.push_back({"gelu", [=] { return V{P({6}, 1, 2.0)}; }, [](const V& x) { return gelu(x[0]); }});
  c.push_back({"gelu_tanh", [=] { return V{P({6}, 1, 2.0)}; }, [](const V& x) { return gelu_tanh(x[0]); }});
  c.push_back({"silu", [=] { return V{P({6}, 1, 2.0)}; }, [](const V& x) { return silu(x[0]); }});
  c.push_back({"softplus", [=] { return V{P({6}, 1, 3.0)}; }, [](const V& x) { return softplus(x[0]); }});
  c.push_back({"elu",
               [=] {
                 return V{from_vector({-1.5, -0.2, 0.3, 1.1}, {4}, DType::f64).requires_grad_()};
               },
               [](const V& x) { return elu(x[0], 0.7); }});
  c.push_back({"square", [=] { return V{P({6}, 1)}; }, [](const V& x) { return square(x[0]); }});
  // Matmul.
  c.push_back({"matmul_2d",
               [=] {
                 return V{P({3, 4}, 1), P({4, 5}, 2)};
               },
               [](const V& x) { return matmul(x[0], x[1]); }});
  c.push_back({"matmul_trans_a",
               [=] {
                 return V{P({4, 3}, 1), P({4, 5}, 2)};
               },
               [](const V& x) { return matmul(x[0], x[1], true, false); }});
  c.push_back({"matmul_trans_b",
               [=] {
                 return V{P({3, 4}, 1), P({5, 4}, 2)};
               },
               [](const V& x) { return matmul(x[0], x[1], false, true); }});
  c.push_back({"matmul_trans_both",
               [=] {
                 return V{P({4, 3}, 1), P({5, 4}, 2)};
               },
               [](const V& x) { return matmul(x[0], x[1], true, true); }});
  c.push_back({"matmul_batched",
               [=] {
                 return V{P({2, 3, 4}, 1), P({2, 4, 5}, 2)};
               },
               [](const V& x) { return matmul(x[0], x[1]); }});
  c.push_back({"matmul_batched_times_2d",
               [=] {
                 return V{P({2, 3, 4}, 1), P({4, 5}, 2)};
               },
               [](const V& x) { return matmul(x[0], x[1]); }});
  c.push_back({"matmul_batched_times_2d_trans_b",
               [=] {
                 return V{P({2, 3, 4}, 1), P({5, 4}, 2)};
               },
               [](const V& x) { return matmul(x[0], x[1], false, true); }});
  c.push_back({"matmul_2d_times_batched",
               [=] {
                 return V{P({3, 4}, 1), P({2, 4, 5}, 2)};
               },
               [](const V& x) { return matmul(x[0], x[1]); }});
  c.push_back({"matmul_broadcast_batch",
               [=] {
                 return V{P({2, 1, 3, 4}, 1), P({3, 5, 4}, 2)};
               },
               [](const V& x) { return matmul(x[0], x[1], false, true); }});
  c.push_back({"matmul_batched_trans_a",
               [=] {
                 return V{P({2, 4, 3}, 1), P({2, 4, 5}, 2)};
               },
               [](const V& x) { return matmul(x[0], x[1], true, false); }});
  // Reductions.
  c.push_back({"sum_all", [=] { return V{P({3, 4}, 1)}; }, [](const V& x) { return sum(x[0]); }});
  c.push_back({"sum_axis0", [=] { return V{P({3, 4, 2}, 1)}; }, [](const V& x) { return sum(x[0], {0}); }});
  c.push_back({"sum_axes_keepdim",
               [=] {
                 return V{P({3, 4, 2}, 1)};
               },
               [](const V& x) {
                 return sum(x[0], {0, 2}, true);
               }});
  c.push_back({"mean_axis1", [=] { return V{P({3, 4, 2}, 1)}; }, [](const V& x) { return mean(x[0], {1}); }});
  c.push_back({"mean_all", [=] { return V{P({3, 4}, 1)}; }, [](const V& x) { return mean(x[0]); }});
  c.push_back({"max_last", [=] { return V{P({3, 5}, 1)}; }, [](const V& x) { return max(x[0], {-1}); }});
  c.push_back({"max_middle_keepdim",
               [=] {
                 return V{P({2, 5, 3}, 1)};
               },
               [](const V& x) { return max(x[0], {1}, true); }});
  c.push_back({"max_two_axes", [=] { return V{P({2, 5, 3}, 1)}; }, [](const V& x) { return max(x[0], {0, 2}); }});
  c.push_back({"sum_to", [=] { return V{P({2, 3, 4}, 1)}; }, [](const V& x) { return sum_to(x[0], {3, 1}); }});
  // Shape ops.
  c.push_back({"reshape", [=] { return V{P({2, 6}, 1)}; }, [](const V& x) { return exp(reshape(x[0], {3, -1})); }});
  c.push_back({"permute", [=] { return V{P({2, 3, 4}, 1)}; }, [](const V& x) { return permute(x[0], {2, 0, 1}); }});
  c.push_back({"transpose_4d",
               [=] {
                 return V{P({2, 3, 4, 2}, 1)};
               },
               [](const V& x) { return transpose(x[0], 1, 2); }});
  c.push_back({"slice_middle_axis",
               [=] {
                 return V{P({2, 5, 3}, 1)};
               },
               [](const V& x) { return slice(x[0], 1, 1, 4); }});
  c.push_back({"slice_leading_view", [=] { return V{P({5, 3}, 1)}; }, [](const V& x) { return slice(x[0], 0, 2, 5); }});
  c.push_back({"concat",
               [=] {
                 return V{P({2, 3}, 1), P({2, 1}, 2), P({2, 2}, 3)};
               },
               [](const V& x) {
                 return concat({x[0], x[1], x[2]}, 1);
               }});
  c.push_back({"split",
               [=] {
                 return V{P({2, 6}, 1)};
               },
               [](const V& x) {
                 auto p = split(x[0], {1, 2, 3}, 1);
                 return concat({mul_scalar(p[0], 2.0), exp(p[1]), p[2]}, 1);
               }});
  c.push_back({"expand", [=] { return V{P({3, 1}, 1)}; }, [](const V& x) { return expand(x[0], {2, 3, 4}); }});
  // Gather.
  c.push_back({"embedding_repeated_ids",
               [=] {
                 return V{P({5, 3}, 1)};
               },
               [](const V& x) {
                 return embedding(x[0], from_ints({4, 0, 4, 2, 4, 1}, {2, 3}));
               }});
  // Fused linear (nn::Linear): batched rows, with and without bias.
  c.push_back({"linear_bias",
               [=] {
                 return V{P({2, 3, 4}, 1), P({5, 4}, 2), P({5}, 3)};
               },
               [](const V& x) { return linear(x[0], x[1], x[2]); }});
  c.push_back({"linear_no_bias_1d",
               [=] {
                 return V{P({4}, 1), P({3, 4}, 2)};
               },
               [](const V& x) { return linear(x[0], x[1], Tensor()); }});
  // A linear that reads its input through an activation (the GPT FFN's c_proj).
  for (Activation a : {Activation::relu, Activation::gelu, Activation::gelu_tanh, Activation::silu})
    c.push_back({"linear_through_" + std::string(a == Activation::relu        ? "relu"
                                                 : a == Activation::gelu      ? "gelu"
                                                 : a == Activation::gelu_tanh ? "gelu_tanh"
                                                                              : "silu"),
                 [=] {
                   return V{P({2, 3, 4}, 1), P({5, 4}, 2), P({5}, 3)};
                 },
                 [a](const V& x) { return linear(x[0], x[1], x[2], a); }});
  // Fused attention, [B,T,H,hd] layout: a causal mask, a query with every key
  // hidden (row 0 of batch 1: zeros, no gradient), and cross-length Tq < Tk.
  c.push_back({"attention_masked",
               [=] {
                 return V{P({2, 3, 2, 4}, 1), P({2, 3, 2, 4}, 2), P({2, 3, 2, 4}, 3)};
               },
               [](const V& x) {
                 Tensor m = bmask({0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0}, {2, 1, 3, 3});
                 return scaled_dot_product_attention(x[0], x[1], x[2], m, 0.7);
               }});
  c.push_back({"attention_no_mask_tq_lt_tk",
               [=] {
                 return V{P({1, 2, 3, 2}, 1), P({1, 4, 3, 2}, 2), P({1, 4, 3, 2}, 3)};
               },
               [](const V& x) { return scaled_dot_product_attention(x[0], x[1], x[2], Tensor(), 0.5); }});
  c.push_back({"attention_qkv_packed",
               [=] {
                 return V{P({2, 3, 12}, 1)};
               },  // H = 2, hd = 2
               [](const V& x) {
                 Tensor m = bmask({0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0}, {2, 1, 3, 3});
                 return attention_qkv(x[0], 2, m, 0.7);
               }});
  // Fused norms (nn's LayerNorm / RMSNorm / ScaleNorm).
  c.push_back({"layer_norm",
               [=] {
                 return V{P({2, 3, 5}, 1), P({5}, 2), P({5}, 3)};
               },
               [](const V& x) { return layer_norm(x[0], x[1], x[2]); }});
  c.push_back({"layer_norm_no_bias",
               [=] {
                 return V{P({4, 6}, 1), P({6}, 2)};
               },
               [](const V& x) { return layer_norm(x[0], x[1], Tensor()); }});
  c.push_back({"rms_norm",
               [=] {
                 return V{P({3, 7}, 1), P({7}, 2)};
               },
               [](const V& x) { return rms_norm(x[0], x[1]); }});
  // ScaleNorm: row 0 scaled to ‖x‖·d^−½ ≈ 1e-7 < ε, where the clamp holds (dx = g/ε).
  c.push_back({"scale_norm_with_a_clamped_row",
               [=] {
                 return V{P({3, 6}, 1), P({1}, 2)};
               },
               [](const V& x) {
                 return scale_norm(mul(x[0], from_vector({1e-7, 1, 1}, {3, 1}, DType::f64)), x[1]);
               }});
  // Softmax family.
  c.push_back({"softmax", [=] { return V{P({3, 5}, 1)}; }, [](const V& x) { return softmax(x[0]); }});
  c.push_back({"log_softmax", [=] { return V{P({2, 2, 5}, 1)}; }, [](const V& x) { return log_softmax(x[0]); }});
  c.push_back({"cross_entropy",
               [=] {
                 return V{P({4, 6}, 1)};
               },
               [](const V& x) {
                 return cross_entropy(x[0], from_ints({5, 0, 3, 3}, {4}));
               }});
  c.push_back({"cross_entropy_ignore_3d",
               [=] {
                 return V{P({2, 3, 6}, 1)};
               },
               [](const V& x) {
                 return cross_entropy(x[0], from_ints({1, -1, 2, 5, -1, 0}, {2, 3}), -1);
               }});
  c.push_back({"linear_cross_entropy_ignore",
               [=] {
                 return V{P({2, 3, 4}, 1), P({6, 4}, 2)};
               },
               [](const V& x) {
                 return linear_cross_entropy(x[0], x[1], from_ints({1, -1, 2, 5, -1, 0}, {2, 3}));
               }});
  // Masks.
  c.push_back({"masked_fill_broadcast",
               [=] {
                 return V{P({2, 3, 3}, 1)};
               },
               [](const V& x) {
                 return masked_fill(x[0], bmask({0, 1, 1, 0, 0, 1, 0, 0, 0}, {3, 3}), -7.0);
               }});
  c.push_back({"where_broadcast",
               [=] {
                 return V{P({2, 3}, 1), P({3}, 2)};
               },
               [](const V& x) {
                 return where(bmask({1, 0}, {2, 1}), x[0], x[1]);
               }});
  // Dropout (a fixed generator per call makes the mask identical each time).
  c.push_back({"dropout",
               [=] {
                 return V{P({4, 5}, 1)};
               },
               [](const V& x) {
                 Generator g(9);
                 return dropout(x[0], 0.3, true, g);
               }});
  c.push_back({"cumsum_axis0", [=] { return V{P({4, 3}, 1)}; }, [](const V& x) { return cumsum(x[0], 0); }});
  c.push_back({"cumsum_last", [=] { return V{P({2, 5}, 1)}; }, [](const V& x) { return cumsum(x[0], -1); }});
  c.push_back({"causal_conv1d",
               [=] {
                 return V{P({2, 5, 3}, 1), P({3, 4}, 2), P({3}, 3)};
               },
               [](const V& x) { return causal_conv1d(x[0], x[1], x[2]); }});
  c.push_back({"causal_conv1d_no_bias_k1",
               [=] {
                 return V{P({1, 4, 2}, 1), P({2, 1}, 2)};
               },
               [](const V& x) { return causal_conv1d(x[0], x[1]); }});
  c.push_back({"decay_scores",  // L in any order: the op assumes nothing of it
               [=] {
                 return V{P({2, 4, 3}, 1), P({2, 4, 3}, 2), P({2, 4, 3}, 3)};
               },
               [](const V& x) { return decay_scores(x[0], x[1], x[2]); }});
  c.push_back({"unit_tril_inverse",  // N's diagonal and upper part are not read: their gradient is 0
               [=] {
                 return V{P({2, 5, 5}, 1, 0.4)};
               },
               [](const V& x) { return unit_tril_inverse(x[0]); }});
  // Graph-level cases.
  c.push_back({"reused_tensor",
               [=] {
                 return V{P({3, 3}, 1)};
               },
               [](const V& x) { return add(matmul(x[0], x[0]), mul(tanh(x[0]), x[0])); }});
  c.push_back({"small_mlp_graph",
               [=] {
                 return V{P({4, 3}, 1), P({3, 5}, 2), P({5}, 3), P({5, 2}, 4)};
               },
               [](const V& x) {
                 Tensor h = gelu(add(matmul(x[0], x[1]), x[2]));
                 return log_softmax(matmul(h, x[3]));
               }});
  c.push_back({"attention_like_graph",
               [=] {
                 return V{P({2, 4, 3}, 1), P({2, 4, 3}, 2), P({2, 4, 3}, 3)};
               },
               [](const V& x) {
                 Tensor causal = bmask({0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0}, {4, 4});
                 Tensor s = masked_fill(matmul(x[0], x[1], false, true) * 0.5, causal, -1e30);
                 return matmul(softmax(s), x[2]);
               }});
  return c;
}

// gtest prints a case by its name rather than its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class OpGradcheck : public ::testing::TestWithParam<Case> {};

TEST_P(OpGradcheck, MatchesFiniteDifferences) {
  const Case& c = GetParam();
  expect_gradcheck(c.f, c.make_inputs());
  EXPECT_EQ(tape_size(), 0u);
}

INSTANTIATE_TEST_SUITE_P(AllOps, OpGradcheck, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace

// gradcheck must catch a wrong backward: plant one (d/dx x³ reported as 2x²).
TEST(Gradcheck, CatchesAPlantedWrongGradient) {
  auto wrong_cube = [](const Tensor& x) {
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    for (int64_t i = 0; i < x.numel(); ++i) y.set_flat(i, std::pow(x.flat(i), 3));
    return record("wrong_cube", y, {x}, [x](const Tensor& g) -> std::vector<Tensor> {
      return {mul(g, mul_scalar(square(x), 2.0))};  // should be 3x²
    });
  };
  Tensor x = param({4}, 5);
  GradcheckResult r = gradcheck([&](const std::vector<Tensor>& v) { return wrong_cube(v[0]); }, {x});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.report.find("worst element: input 0 [4]"), std::string::npos) << r.report;
  // And the correct gradient passes with the same machinery.
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& v) { return pow(v[0], 3.0); }, {x}).ok);
}

TEST(Gradcheck, CatchesAMissingGradient) {
  auto half_detached = [](const std::vector<Tensor>& v) {
    Tensor y = mul(v[0], v[0].detach());  // true gradient is 2x, backward gives x
    return record("pretend_square", y.detach(), {v[0]},
                  [v](const Tensor& g) -> std::vector<Tensor> { return {mul(g, v[0])}; });
  };
  EXPECT_FALSE(gradcheck(half_detached, {param({3}, 2)}).ok);
}

TEST(Gradcheck, RejectsFloat32Inputs) {
  Tensor x = ones({2}).requires_grad_();
  EXPECT_ERROR_CONTAINS(gradcheck([](const std::vector<Tensor>& v) { return v[0]; }, {x}),
                        "gradcheck: inputs must be float64");
}
