// The fused sequence cores (gated_recurrence, delta_rule, selective_scan,
// gau_attention): recurrent == parallel == chunkwise (every chunk size that
// divides T and some that do not) == the primitive-op reference, in values and
// gradients; float64 gradcheck of every form; carried state; and the same bits
// at any thread count.
#include "autograd/ops/recurrence_common.h"
#include "autograd/ops_reference.h"
#include "tests/test_helpers.h"

using namespace tapelm;
using namespace tapelm::testing;

namespace {

struct Inputs {
  Tensor q, k, v, g;
};

// g = −softplus(·) ≤ 0 (a decay in (0, 1]); gk = K for a vector decay, 1 per head.
Inputs make(int64_t B, int64_t H, int64_t T, int64_t K, int64_t V, int64_t gk, uint64_t seed, DType dt = DType::f64) {
  Generator gen(seed);
  Inputs in{randn({B, H, T, K}, gen, dt, 0, 0.5), randn({B, H, T, K}, gen, dt, 0, 0.5), randn({B, H, T, V}, gen, dt),
            Tensor()};
  {
    NoGradGuard ng;
    in.g = neg(softplus(randn({B, H, T, gk}, gen, dt, -1.0, 1.0)));
  }
  for (Tensor* t : {&in.q, &in.k, &in.v, &in.g}) t->requires_grad_();
  return in;
}

std::vector<Tensor> grads_of(const Inputs& in, const std::function<Tensor()>& f, const Tensor& upstream) {
  for (const Tensor* t : {&in.q, &in.k, &in.v, &in.g}) const_cast<Tensor*>(t)->zero_grad();
  backward(f(), upstream);
  return {in.q.grad(), in.k.grad(), in.v.grad(), in.g.grad()};
}

}  // namespace

class RecurrenceForms : public ::testing::TestWithParam<int64_t> {};  // param: decay width (K or 1)

TEST_P(RecurrenceForms, AllFormsAndChunkSizesAgreeInValuesAndGradients) {
  const int64_t T = 12, K = 4, V = 3, gk = GetParam() == 1 ? 1 : K;
  Inputs in = make(2, 2, T, K, V, gk, 1);
  Generator gen(9);
  Tensor up = randn({2, 2, T, V}, gen, DType::f64);
  auto ref = [&] { return gated_recurrence_reference(in.q, in.k, in.v, in.g); };
  Tensor want = ref();
  std::vector<Tensor> want_grads = grads_of(in, ref, up);
  std::vector<std::pair<RecurrenceForm, int64_t>> forms{{RecurrenceForm::recurrent, 64},
                                                        {RecurrenceForm::parallel, 64}};
  for (int64_t c : {1, 2, 3, 4, 5, 6, 12, 16}) forms.push_back({RecurrenceForm::chunkwise, c});
  for (auto [form, chunk] : forms) {
    auto f = [&, form = form, chunk = chunk] { return gated_recurrence(in.q, in.k, in.v, in.g, form, chunk); };
    Tensor got = f();
    clear_tape();
    EXPECT_LT(max_abs_diff(got, want), 1e-12) << "form " << (int)form << " chunk " << chunk;
    std::vector<Tensor> g = grads_of(in, f, up);
    for (int i = 0; i < 4; ++i)
      EXPECT_LT(max_abs_diff(g[i], want_grads[i]), 1e-12)
          << "grad " << i << " form " << (int)form << " chunk " << chunk;
  }
}

// The GPU's chunkwise form, products of chunks (recurrence_common.h), run
// here on the CPU in float64 for a decay per step and per key: the
// reference's values and gradients for chunk sizes that divide T and some
// that do not (zero padding), one chunk (the parallel form) and a chunk
// longer than T; and a float64 gradcheck.
TEST(Recurrence, ChunkProductsFormMatchesTheReference) {
  const int64_t T = 12, K = 4;
  for (const int64_t gk : {int64_t(1), K}) {
    Inputs in = make(2, 2, T, K, 3, gk, 4);
    Generator gen(10);
    Tensor up = randn({2, 2, T, 3}, gen, DType::f64);
    auto ref = [&] { return gated_recurrence_reference(in.q, in.k, in.v, in.g); };
    Tensor want = ref();
    std::vector<Tensor> want_grads = grads_of(in, ref, up);
    for (int64_t C : {1, 2, 5, 12, 16}) {
      auto f = [&, C] { return detail::gated_recurrence_chunks(in.q, in.k, in.v, in.g, C); };
      EXPECT_LT(max_abs_diff(f(), want), 1e-12) << "chunk " << C << " gk " << gk;
      clear_tape();
      std::vector<Tensor> g = grads_of(in, f, up);
      for (int i = 0; i < 4; ++i)
        EXPECT_LT(max_abs_diff(g[i], want_grads[i]), 1e-12) << "grad " << i << " chunk " << C << " gk " << gk;
    }
    Inputs small = make(1, 2, 5, 3, 2, gk == 1 ? 1 : 3, 5);
    expect_gradcheck(
        [](const std::vector<Tensor>& x) { return detail::gated_recurrence_chunks(x[0], x[1], x[2], x[3], 2); },
        {small.q, small.k, small.v, small.g});
  }
}

// decay_scores (the chunk form's scores under a decay per key) against its
// definition written with primitive ops, A = Σ_k q_t k_s e^{L_t − L_s} masked
// to s ≤ t, on chunks of 1, 5 and 7 steps (its gradcheck is in
// test_gradcheck_ops.cpp).
TEST(Recurrence, DecayScoresMatchTheirDefinition) {
  Generator gen(21);
  const int64_t K = 3;
  for (const int64_t C : {1, 5, 7}) {
    Tensor q = randn({2, 3, C, K}, gen, DType::f64), k = randn({2, 3, C, K}, gen, DType::f64);
    Tensor L = cumsum(neg(softplus(randn({2, 3, C, K}, gen, DType::f64))), -2);
    Tensor terms = mul(mul(unsqueeze(q, -2), unsqueeze(k, -3)), exp(sub(unsqueeze(L, -2), unsqueeze(L, -3))));
    Tensor want = masked_fill(sum(terms, {-1}), above_diagonal(C), 0.0);
    EXPECT_LT(max_abs_diff(decay_scores(q, k, L), want), 1e-13) << "chunk " << C;
  }
}

// unit_tril_inverse (the delta rule's UT transform) inverts I + N for N
// strictly lower-triangular, whatever N holds on and above its diagonal
// (not read); a matrix of one entry and an empty batch too.
TEST(Recurrence, UnitTrilInverseInverts) {
  Generator gen(22);
  for (const int64_t C : {1, 2, 9}) {
    Tensor N = randn({3, 2, C, C}, gen, DType::f64, 0, 0.5);
    Tensor strict = masked_fill(N, above_diagonal(C, true), 0.0);
    Tensor eye = Tensor::empty({C, C}, DType::f64);
    for (int64_t i = 0; i < C * C; ++i) eye.data<double>()[i] = i % (C + 1) == 0;
    Tensor X = unit_tril_inverse(N);
    EXPECT_LT(max_abs_diff(matmul(add(eye, strict), X), expand(eye, {3, 2, C, C})), 1e-12) << "C " << C;
    EXPECT_LT(max_abs_diff(X, unit_tril_inverse(strict)), 1e-15) << "C " << C;
  }
  EXPECT_EQ(unit_tril_inverse(zeros({0, 4, 4}, DType::f64)).shape(), (Shape{0, 4, 4}));
}

TEST_P(RecurrenceForms, GradcheckEveryForm) {
  const int64_t gk = GetParam() == 1 ? 1 : 3;
  for (auto [form, chunk] : std::vector<std::pair<RecurrenceForm, int64_t>>{
           {RecurrenceForm::recurrent, 64}, {RecurrenceForm::parallel, 64}, {RecurrenceForm::chunkwise, 2}}) {
    Inputs in = make(1, 2, 5, 3, 2, gk, 2);
    expect_gradcheck(
        [form = form, chunk = chunk](const std::vector<Tensor>& x) {
          return gated_recurrence(x[0], x[1], x[2], x[3], form, chunk);
        },
        {in.q, in.k, in.v, in.g});
  }
}

TEST_P(RecurrenceForms, Float32MatchesFloat64) {
  const int64_t gk = GetParam() == 1 ? 1 : 8;
  Inputs in = make(2, 2, 40, 8, 8, gk, 3);
  NoGradGuard ng;
  Tensor want = gated_recurrence(in.q, in.k, in.v, in.g, RecurrenceForm::recurrent);
  double scale = 0;
  for (double x : want.to_vector()) scale = std::max(scale, std::fabs(x));
  for (auto form : {RecurrenceForm::recurrent, RecurrenceForm::parallel, RecurrenceForm::chunkwise}) {
    Tensor got =
        gated_recurrence(in.q.to(DType::f32), in.k.to(DType::f32), in.v.to(DType::f32), in.g.to(DType::f32), form, 16);
    EXPECT_LT(max_abs_diff(got, want) / scale, 1e-5) << (int)form;
  }
}

INSTANTIATE_TEST_SUITE_P(Decay, RecurrenceForms, ::testing::Values(1, 0),
                         [](const ::testing::TestParamInfo<int64_t>& i) {
                           return i.param == 1 ? "per_head" : "per_key_dim";
                         });

TEST(Recurrence, CarriedStateContinuesExactly) {
  Inputs in = make(2, 2, 10, 4, 3, 4, 4);
  NoGradGuard ng;
  Tensor full = gated_recurrence(in.q, in.k, in.v, in.g, RecurrenceForm::chunkwise, 4);
  Tensor state;
  std::vector<Tensor> parts;
  for (auto [a, b] : std::vector<std::pair<int, int>>{{0, 3}, {3, 4}, {4, 10}}) {
    auto cut = [&](const Tensor& x) { return slice(x, 2, a, b); };
    parts.push_back(gated_recurrence(cut(in.q), cut(in.k), cut(in.v), cut(in.g),
                                     b - a == 1 ? RecurrenceForm::recurrent : RecurrenceForm::chunkwise, 2, &state));
  }
  EXPECT_LT(max_abs_diff(concat(parts, 2), full), 1e-12);
  EXPECT_EQ(state.shape(), (Shape{2, 2, 4, 3}));
}

TEST(Recurrence, NoDecayIsCausalLinearAttention) {
  // g = 0: o_t = Σ_{s≤t} (q_t·k_s) v_s, i.e. (QKᵀ ⊙ causal) V.
  Inputs in = make(1, 1, 6, 3, 2, 1, 5);
  NoGradGuard ng;
  Tensor g0 = zeros({1, 1, 6, 1}, DType::f64);
  Tensor scores = matmul(in.q, in.k, false, true);
  std::vector<bool> upper;
  for (int t = 0; t < 6; ++t)
    for (int s = 0; s < 6; ++s) upper.push_back(s > t);
  Tensor want = matmul(masked_fill(scores, from_bools(upper, {6, 6}), 0.0), in.v);
  EXPECT_LT(max_abs_diff(gated_recurrence(in.q, in.k, in.v, g0), want), 1e-12);
}

TEST(Recurrence, ShapeErrors) {
  EXPECT_ERROR_CONTAINS(
      gated_recurrence(zeros({1, 2, 3, 4}), zeros({1, 2, 3, 5}), zeros({1, 2, 3, 4}), zeros({1, 2, 3, 1})),
      "gated_recurrence: expects q, k [B,H,T,K]");
  EXPECT_ERROR_CONTAINS(
      gated_recurrence(zeros({1, 2, 3, 4}), zeros({1, 2, 3, 4}), zeros({1, 2, 3, 4}), zeros({1, 2, 3, 2})),
      "gated_recurrence: shapes do not agree");
}

// ---- the delta rule ---------------------------------------------------------

namespace {
struct DeltaInputs {
  Tensor q, k, v, beta, g;
};

// L2-normalised keys and β ∈ (0, 1), as DeltaNet uses them; g = 0 when ungated.
DeltaInputs make_delta(int64_t B, int64_t H, int64_t T, int64_t K, int64_t V, bool gated, uint64_t seed) {
  Generator gen(seed);
  NoGradGuard ng;
  Tensor k = randn({B, H, T, K}, gen, DType::f64);
  k = div(k, sqrt(sum(square(k), {-1}, true)));
  DeltaInputs in{
      randn({B, H, T, K}, gen, DType::f64, 0, 0.5), k, randn({B, H, T, V}, gen, DType::f64),
      sigmoid(randn({B, H, T, 1}, gen, DType::f64)),
      gated ? neg(softplus(randn({B, H, T, 1}, gen, DType::f64, -1.0, 1.0))) : zeros({B, H, T, 1}, DType::f64)};
  for (Tensor* t : {&in.q, &in.k, &in.v, &in.beta, &in.g}) t->requires_grad_();
  return in;
}

// f's value, then the gradients of ⟨f, upstream⟩ with respect to q, k, v, β and g.
std::vector<Tensor> delta_grads(DeltaInputs& in, const std::function<Tensor()>& f, const Tensor& upstream) {
  for (Tensor* t : {&in.q, &in.k, &in.v, &in.beta, &in.g}) t->zero_grad();
  Tensor out = f();
  Tensor kept = out.detach().clone();
  backward(out, upstream);
  return {kept, in.q.grad(), in.k.grad(), in.v.grad(), in.beta.grad(), in.g.grad()};
}
}  // namespace

class DeltaRule : public ::testing::TestWithParam<bool> {};  // param: gated

TEST_P(DeltaRule, AllFormsAndChunkSizesAgreeInValuesAndGradients) {
  const int64_t T = 12;
  DeltaInputs in = make_delta(2, 2, T, 4, 3, GetParam(), 11);
  Generator gen(12);
  Tensor up = randn({2, 2, T, 3}, gen, DType::f64);
  auto grads = [&](const std::function<Tensor()>& f) { return delta_grads(in, f, up); };
  auto want = grads([&] { return delta_rule_reference(in.q, in.k, in.v, in.beta, in.g); });
  std::vector<std::pair<RecurrenceForm, int64_t>> forms{{RecurrenceForm::recurrent, 64},
                                                        {RecurrenceForm::parallel, 64}};
  for (int64_t c : {1, 2, 3, 4, 5, 12, 16}) forms.push_back({RecurrenceForm::chunkwise, c});
  for (auto [form, chunk] : forms) {
    auto got =
        grads([&, form = form, chunk = chunk] { return delta_rule(in.q, in.k, in.v, in.beta, in.g, form, chunk); });
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_LT(max_abs_diff(got[i], want[i]), 1e-12)
          << (i ? "grad " : "value ") << i << " form " << (int)form << " chunk " << chunk;
  }
}

// The GPU's chunkwise form, products of chunks with the UT transform
// (recurrence_common.h), run here on the CPU in float64: the reference's
// values and gradients for chunk sizes that divide T and some that do not,
// one chunk (the parallel form) and a chunk longer than T; and a gradcheck.
TEST_P(DeltaRule, ChunkProductsFormMatchesTheReference) {
  const int64_t T = 12;
  DeltaInputs in = make_delta(2, 2, T, 4, 3, GetParam(), 15);
  Generator gen(16);
  Tensor up = randn({2, 2, T, 3}, gen, DType::f64);
  auto grads = [&](const std::function<Tensor()>& f) { return delta_grads(in, f, up); };
  auto want = grads([&] { return delta_rule_reference(in.q, in.k, in.v, in.beta, in.g); });
  for (int64_t C : {1, 2, 5, 12, 16}) {
    auto got = grads([&, C] { return detail::delta_rule_chunks(in.q, in.k, in.v, in.beta, in.g, C); });
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_LT(max_abs_diff(got[i], want[i]), 1e-12) << (i ? "grad " : "value ") << i << " chunk " << C;
  }
  DeltaInputs small = make_delta(1, 2, 5, 3, 2, GetParam(), 17);
  expect_gradcheck(
      [](const std::vector<Tensor>& x) { return detail::delta_rule_chunks(x[0], x[1], x[2], x[3], x[4], 2); },
      {small.q, small.k, small.v, small.beta, small.g});
}

TEST_P(DeltaRule, GradcheckEveryForm) {
  for (auto [form, chunk] : std::vector<std::pair<RecurrenceForm, int64_t>>{
           {RecurrenceForm::recurrent, 64}, {RecurrenceForm::parallel, 64}, {RecurrenceForm::chunkwise, 2}}) {
    DeltaInputs in = make_delta(1, 2, 5, 3, 2, GetParam(), 13);
    expect_gradcheck(
        [form = form, chunk = chunk](const std::vector<Tensor>& x) {
          return delta_rule(x[0], x[1], x[2], x[3], x[4], form, chunk);
        },
        {in.q, in.k, in.v, in.beta, in.g});
  }
}

TEST_P(DeltaRule, CarriedStateAndFloat32) {
  DeltaInputs in = make_delta(2, 2, 40, 8, 8, GetParam(), 14);
  NoGradGuard ng;
  Tensor full = delta_rule(in.q, in.k, in.v, in.beta, in.g, RecurrenceForm::chunkwise, 16);
  Tensor state;
  std::vector<Tensor> parts;
  for (auto [a, b] : std::vector<std::pair<int, int>>{{0, 7}, {7, 8}, {8, 40}}) {
    auto cut = [&](const Tensor& x) { return slice(x, 2, a, b); };
    parts.push_back(
        delta_rule(cut(in.q), cut(in.k), cut(in.v), cut(in.beta), cut(in.g), RecurrenceForm::chunkwise, 5, &state));
  }
  EXPECT_LT(max_abs_diff(concat(parts, 2), full), 1e-12);
  double scale = 0;
  for (double x : full.to_vector()) scale = std::max(scale, std::fabs(x));
  for (auto form : {RecurrenceForm::recurrent, RecurrenceForm::parallel, RecurrenceForm::chunkwise}) {
    Tensor got = delta_rule(in.q.to(DType::f32), in.k.to(DType::f32), in.v.to(DType::f32), in.beta.to(DType::f32),
                            in.g.to(DType::f32), form, 16);
    EXPECT_LT(max_abs_diff(got, full) / scale, 1e-5) << (int)form;
  }
}

INSTANTIATE_TEST_SUITE_P(Gating, DeltaRule, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "gated" : "plain"; });

// ---- Mamba's selective scan ---------------------------------------------------

namespace {
std::vector<Tensor> scan_inputs(int64_t B, int64_t T, int64_t D, int64_t N, uint64_t seed) {
  Generator g(seed);
  NoGradGuard ng;
  std::vector<Tensor> in{randn({B, T, D}, g, DType::f64), softplus(randn({B, T, D}, g, DType::f64, -1.0, 1.0)),
                         neg(exp(randn({D, N}, g, DType::f64, 0.0, 0.5))), randn({B, T, N}, g, DType::f64),
                         randn({B, T, N}, g, DType::f64)};
  for (auto& t : in) t.requires_grad_();
  return in;
}
}  // namespace

TEST(SelectiveScan, GradcheckFusedAndReference) {
  auto in = scan_inputs(2, 5, 3, 2, 21);
  expect_gradcheck([](const std::vector<Tensor>& x) { return selective_scan(x[0], x[1], x[2], x[3], x[4]); }, in);
  expect_gradcheck([](const std::vector<Tensor>& x) { return selective_scan_reference(x[0], x[1], x[2], x[3], x[4]); },
                   in);
}

TEST(SelectiveScan, FusedEqualsReferenceAndTheSharedCoreInValuesAndGradients) {
  auto in = scan_inputs(2, 9, 4, 3, 22);
  Generator gen(23);
  Tensor up = randn({2, 9, 4}, gen, DType::f64);
  auto run = [&](const std::function<Tensor()>& f) {
    for (auto& t : in) t.zero_grad();
    Tensor y = f();
    Tensor kept = y.detach().clone();
    backward(y, up);
    std::vector<Tensor> r{kept};
    for (auto& t : in) r.push_back(t.grad());
    return r;
  };
  auto want = run([&] { return selective_scan_reference(in[0], in[1], in[2], in[3], in[4]); });
  auto fused = run([&] { return selective_scan(in[0], in[1], in[2], in[3], in[4]); });
  auto core = run([&] {  // the same scan as gated_recurrence: one head per channel, K = N, V = 1
    const int64_t B = 2, T = 9, D = 4, N = 3;
    auto per_channel = [&](const Tensor& t) { return expand(unsqueeze(t, 1), {B, D, T, N}); };
    Tensor v = unsqueeze(permute(mul(in[1], in[0]), {0, 2, 1}), -1);
    Tensor g = permute(mul(unsqueeze(in[1], -1), in[2]), {0, 2, 1, 3});
    Tensor h = gated_recurrence(per_channel(in[4]), per_channel(in[3]), v, g, RecurrenceForm::chunkwise, 4);
    return permute(squeeze(h, -1), {0, 2, 1});
  });
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_LT(max_abs_diff(fused[i], want[i]), 1e-12) << "fused " << i;
    EXPECT_LT(max_abs_diff(core[i], want[i]), 1e-12) << "core " << i;
  }
}

TEST(SelectiveScan, CarriedStateContinuesExactly) {
  auto in = scan_inputs(2, 10, 3, 4, 24);
  NoGradGuard ng;
  Tensor full = selective_scan(in[0], in[1], in[2], in[3], in[4]);
  Tensor state;
  std::vector<Tensor> parts;
  for (auto [a, b] : std::vector<std::pair<int, int>>{{0, 4}, {4, 5}, {5, 10}}) {
    auto cut = [&](const Tensor& x) { return slice(x, 1, a, b); };
    parts.push_back(selective_scan(cut(in[0]), cut(in[1]), in[2], cut(in[3]), cut(in[4]), &state));
  }
  EXPECT_LT(max_abs_diff(concat(parts, 1), full), 1e-12);
}

TEST(Recurrence, CarriedStateOfTheWrongShapeIsAClearError) {
  NoGradGuard ng;
  Tensor q = zeros({1, 2, 3, 4}), v = zeros({1, 2, 3, 5}), per_step = zeros({1, 2, 3, 1});
  Tensor bad = zeros({1, 2, 4, 4});
  EXPECT_ERROR_CONTAINS(gated_recurrence(q, q, v, per_step, RecurrenceForm::chunkwise, 2, &bad),
                        "gated_recurrence: state float32 [1,2,4,4] does not match float32 [1,2,4,5]");
  EXPECT_ERROR_CONTAINS(delta_rule(q, q, v, per_step, per_step, RecurrenceForm::chunkwise, 2, &bad),
                        "delta_rule: state float32 [1,2,4,4] does not match float32 [1,2,4,5]");
  Tensor scan_bad = zeros({1, 3, 2});
  EXPECT_ERROR_CONTAINS(
      selective_scan(zeros({1, 3, 3}), zeros({1, 3, 3}), zeros({3, 4}), zeros({1, 3, 4}), zeros({1, 3, 4}), &scan_bad),
      "selective_scan: state float32 [1,3,2] does not match float32 [1,3,4]");
}

// ---- GAU / FLASH attention core ------------------------------------------------

namespace {
struct GauInputs {
  std::vector<Tensor> x;  // q, k, v, ql, kl, bias (ql, kl undefined without the linear part)
  Tensor pos, pad;
};

// Row 0 left-padded by 2, row 1 padded at 3 and 8; a pad repeats the last real
// position (nn::position_ids' convention). The bias has 4 distances, so
// longer ones (up to 6 here) share its last entry. FLASH: chunks of 3.
GauInputs gau_inputs(bool linear, uint64_t seed) {
  const int64_t B = 2, T = 9, s = 3, e = 4;
  Generator gen(seed);
  GauInputs in;
  for (int i = 0; i < 5; ++i) {
    const bool used = i < 3 || linear;
    in.x.push_back(used ? randn({B, T, i == 2 ? e : s}, gen, DType::f64).requires_grad_() : Tensor());
  }
  in.x.push_back(randn({4}, gen, DType::f64).requires_grad_());
  in.pad = from_bools({1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}, {B, T});
  in.pos = Tensor::empty({B, T}, DType::i32);
  for (int64_t b = 0; b < B; ++b) {
    int32_t seen = 0;
    for (int64_t t = 0; t < T; ++t) {
      const bool pad = in.pad.data<uint8_t>()[b * T + t];
      in.pos.data<int32_t>()[b * T + t] = pad ? std::max(seen - 1, 0) : seen;
      seen += !pad;
    }
  }
  return in;
}

int64_t gau_chunk(const GauInputs& in) { return in.x[3].defined() ? 3 : 0; }

Tensor gau_run(const GauInputs& in, const std::vector<Tensor>& x, RecurrenceForm form) {
  return gau_attention({x[0], x[1], x[2], x[3], x[4], x[5], in.pos, in.pad, gau_chunk(in), 0.7, 0.2}, form);
}

Tensor gau_reference(const GauInputs& in, const std::vector<Tensor>& x) {
  return gau_attention_reference({x[0], x[1], x[2], x[3], x[4], x[5], in.pos, in.pad, gau_chunk(in), 0.7, 0.2});
}
}  // namespace

class GauAttention : public ::testing::TestWithParam<bool> {};  // param: FLASH's linear part

TEST_P(GauAttention, EveryFormEqualsTheReferenceInValuesAndGradients) {
  GauInputs in = gau_inputs(GetParam(), 51);
  Generator gen(52);
  Tensor up = randn({2, 9, 4}, gen, DType::f64);
  auto run = [&](const std::function<Tensor()>& f) {
    for (Tensor& t : in.x)
      if (t.defined()) t.zero_grad();
    Tensor y = f();
    std::vector<Tensor> r{y.detach().clone()};
    backward(y, up);
    for (Tensor& t : in.x)
      if (t.defined()) r.push_back(t.grad().clone());
    return r;
  };
  auto want = run([&] { return gau_reference(in, in.x); });
  for (auto form : {RecurrenceForm::recurrent, RecurrenceForm::parallel, RecurrenceForm::chunkwise}) {
    auto got = run([&] { return gau_run(in, in.x, form); });
    for (size_t i = 0; i < want.size(); ++i) EXPECT_LT(max_abs_diff(got[i], want[i]), 1e-12) << (int)form << " " << i;
  }
}

TEST_P(GauAttention, GradcheckEveryFormAndTheReference) {
  GauInputs in = gau_inputs(GetParam(), 53);
  std::vector<Tensor> used;
  for (Tensor& t : in.x)
    if (t.defined()) used.push_back(t);
  auto full = [&](const std::vector<Tensor>& x) {  // the undefined ql, kl back in place
    if (GetParam()) return x;
    return std::vector<Tensor>{x[0], x[1], x[2], Tensor(), Tensor(), x[3]};
  };
  for (auto form : {RecurrenceForm::recurrent, RecurrenceForm::parallel, RecurrenceForm::chunkwise})
    expect_gradcheck([&](const std::vector<Tensor>& x) { return gau_run(in, full(x), form); }, used);
  expect_gradcheck([&](const std::vector<Tensor>& x) { return gau_reference(in, full(x)); }, used);
}

TEST_P(GauAttention, CarriedStateContinuesExactly) {
  GauInputs in = gau_inputs(GetParam(), 54);
  NoGradGuard ng;
  Tensor full = gau_run(in, in.x, RecurrenceForm::chunkwise);
  GauAttentionState state;
  std::vector<Tensor> parts;
  for (auto [a, b] : std::vector<std::pair<int, int>>{{0, 4}, {4, 5}, {5, 6}, {6, 9}}) {
    auto cut = [&](const Tensor& x) { return x.defined() ? slice(x, 1, a, b) : Tensor(); };
    parts.push_back(
        gau_attention({cut(in.x[0]), cut(in.x[1]), cut(in.x[2]), cut(in.x[3]), cut(in.x[4]), in.x[5],
                       slice(in.pos, 1, a, b).clone(), slice(in.pad, 1, a, b).clone(), gau_chunk(in), 0.7, 0.2},
                      b - a == 1 ? RecurrenceForm::recurrent : RecurrenceForm::chunkwise, &state));
  }
  EXPECT_LT(max_abs_diff(concat(parts, 1), full), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(Core, GauAttention, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "flash" : "gau"; });

TEST(GauAttentionErrors, PositionsThatGoBackAreAClearError) {
  Tensor q = zeros({1, 3, 2}), pad = zeros({1, 3}, DType::b8);
  EXPECT_ERROR_CONTAINS(
      gau_attention({.q = q, .k = q, .v = q, .position = from_ints({0, 1, 0}, {1, 3}), .key_pad = pad, .chunk_len = 2}),
      "gau_attention: positions must be non-negative and non-decreasing");
}

// ---- determinism ----------------------------------------------------------------
// Each core's values and gradients are the same bits at 1 thread, at 2 threads
// and at 2 threads again: every output has one writer, and the one sum across
// slices (selective_scan's dA over the batch) is added in row order.

namespace {
// The output and every input's gradient of f at `threads` threads (float32).
std::vector<Tensor> run_at(int threads, const std::vector<Tensor>& inputs,
                           const std::function<Tensor(const std::vector<Tensor>&)>& f, uint64_t seed) {
  ThreadCount tc(threads);
  for (const Tensor& t : inputs) const_cast<Tensor&>(t).zero_grad();
  Tensor y = f(inputs);
  Generator gen(seed);
  std::vector<Tensor> out{y.detach().clone()};
  backward(y, randn(y.shape(), gen, y.dtype()));
  for (const Tensor& t : inputs) out.push_back(t.grad().clone());
  return out;
}

void expect_same_bits_at_any_thread_count(const std::string& name, std::vector<Tensor> inputs,
                                          const std::function<Tensor(const std::vector<Tensor>&)>& f) {
  for (Tensor& t : inputs) t = t.to(DType::f32).detach().requires_grad_();
  auto one = run_at(1, inputs, f, 7), two = run_at(2, inputs, f, 7), again = run_at(2, inputs, f, 7);
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_TRUE(same_bits(one[i], two[i])) << name << ": tensor " << i << " differs between 1 and 2 threads";
    EXPECT_TRUE(same_bits(two[i], again[i])) << name << ": tensor " << i << " differs between two runs";
  }
}
}  // namespace

TEST(RecurrenceDeterminism, EveryCoreGivesTheSameBitsAtAnyThreadCount) {
  for (int64_t gk : {int64_t(6), int64_t(1)}) {
    Inputs in = make(3, 2, 40, 6, 5, gk, 41);
    for (auto form : {RecurrenceForm::recurrent, RecurrenceForm::chunkwise})
      expect_same_bits_at_any_thread_count(
          fmt::format("gated_recurrence gk {} form {}", gk, (int)form), {in.q, in.k, in.v, in.g},
          [form](const std::vector<Tensor>& x) { return gated_recurrence(x[0], x[1], x[2], x[3], form, 8); });
  }
  DeltaInputs d = make_delta(3, 2, 40, 6, 5, true, 42);
  expect_same_bits_at_any_thread_count("delta_rule", {d.q, d.k, d.v, d.beta, d.g}, [](const std::vector<Tensor>& x) {
    return delta_rule(x[0], x[1], x[2], x[3], x[4], RecurrenceForm::chunkwise, 8);
  });
  GauInputs gau = gau_inputs(true, 44);
  expect_same_bits_at_any_thread_count(
      "gau_attention", gau.x, [&](const std::vector<Tensor>& x) { return gau_run(gau, x, RecurrenceForm::chunkwise); });
  // Eight rows, so that two threads split dA's sum over the batch.
  expect_same_bits_at_any_thread_count(
      "selective_scan", scan_inputs(8, 30, 6, 4, 43),
      [](const std::vector<Tensor>& x) { return selective_scan(x[0], x[1], x[2], x[3], x[4]); });
}
