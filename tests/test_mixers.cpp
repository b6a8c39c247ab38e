// The linear-attention mixers inside the model, each: training forms agree,
// decoding (recurrent state) equals the full forward, padding (left and right)
// leaves real-token logits unchanged, float64 gradcheck of the whole model
// with a padding mask, and the model learns.
#include "nn/gau.h"
#include "nn/linear_attention.h"
#include "nn/mamba.h"
#include "nn/model.h"
#include "optim/optimizer.h"
#include "tests/test_helpers.h"

using namespace tapelm;
using namespace tapelm::nn;
using namespace tapelm::testing;

namespace {

struct Variant {
  std::string name, mixer, feature_map;
  bool normalize;
};

ModelConfig config_for(const Variant& v) {
  ModelConfig c;
  c.vocab_size = 13, c.block_size = 16, c.n_layer = 2, c.n_head = 2, c.n_embd = 8;
  c.mixer = v.mixer, c.feature_map = v.feature_map, c.normalize = v.normalize;
  c.position = "none";
  c.chunk_size = 4;
  return c;
}

void set_form(GPT& model, RecurrenceForm form, int64_t chunk) {
  for (auto& block : model.transformer->h) {
    auto* m = dynamic_cast<LinearRecurrentMixer*>(block->attn.get());
    ASSERT_NE(m, nullptr);
    m->form = form;
    m->chunk = chunk;
  }
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(a.flat(i) - b.flat(i)));
  return m;
}

// Float64 gradcheck of the whole model's loss with a padding mask, every
// parameter checked (moved off its init so gates and norms matter).
void gradcheck_model(const ModelConfig& c, const Tensor& idx, const Tensor& tgt, const Tensor& pad) {
  Generator g(4);
  GPT model(c, g);
  model.to(DType::f64);
  std::vector<Tensor> inputs;
  {
    NoGradGuard ng;
    Generator w(5);
    for (auto& p : model.named_parameters()) {
      p.tensor.copy_(add(p.tensor, randn(p.tensor.shape(), w, DType::f64, 0, 0.4)));
      inputs.push_back(p.tensor);
    }
  }
  expect_gradcheck([&](const std::vector<Tensor>&) { return model.loss(idx, tgt, pad); }, inputs);
}

// The model learns: loss on a repeated 8-token pattern (about log 13 at the
// start) falls below 0.1 within `steps` AdamW steps at lr 1e-2.
void expect_learns(const ModelConfig& c, int steps) {
  Generator g(6);
  GPT model(c, g);
  std::vector<int32_t> pattern{1, 5, 2, 9, 3, 7, 4, 11}, in, out;
  for (int b = 0; b < 4; ++b)
    for (int t = 0; t < 16; ++t) {
      in.push_back(pattern[(b + t) % 8]);
      out.push_back(pattern[(b + t + 1) % 8]);
    }
  Tensor idx = from_ints(in, {4, 16}), tgt = from_ints(out, {4, 16});
  optim::AdamW opt(optim::decay_groups(model, 0.0));
  opt.set_lr(1e-2);
  double first = 0, last = 0;
  for (int step = 0; step < steps; ++step) {
    Tensor loss = model.loss(idx, tgt);
    backward(loss);
    opt.step();
    model.zero_grad();
    last = loss.item();
    if (step == 0) first = last;
  }
  EXPECT_GT(first, 2.0);
  EXPECT_LT(last, 0.1) << c.mixer << ": loss went from " << first << " to " << last;
}

// Logits at real tokens are identical unpadded, right-padded by 3 and
// left-padded by 3 (vocabulary 13, float64 model).
void expect_padding_invariant(GPT& model) {
  NoGradGuard ng;
  Tensor plain = model.forward(from_ints({3, 1, 4, 1, 5}, {1, 5}));
  Tensor padded = model.forward(from_ints({3, 1, 4, 1, 5, 0, 0, 0, 9, 9, 9, 3, 1, 4, 1, 5}, {2, 8}),
                                from_bools({0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0}, {2, 8}));
  for (int64_t t = 0; t < 5; ++t)
    for (int64_t k = 0; k < 13; ++k) {
      EXPECT_NEAR(padded.flat(t * 13 + k), plain.flat(t * 13 + k), 1e-12) << model.config.mixer << " right t=" << t;
      EXPECT_NEAR(padded.flat((11 + t) * 13 + k), plain.flat(t * 13 + k), 1e-12)
          << model.config.mixer << " left t=" << t;
    }
}

class Mixer : public ::testing::TestWithParam<Variant> {};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

}  // namespace

TEST_P(Mixer, TrainingFormsAndChunkSizesAgree) {
  Generator g(1);
  GPT model(config_for(GetParam()), g);
  model.to(DType::f64);
  NoGradGuard ng;
  Tensor idx = from_ints({1, 5, 2, 9, 3, 7, 4, 11, 0, 12, 6, 8, 1, 2, 3, 4, 5, 6, 7, 8}, {2, 10});
  set_form(model, RecurrenceForm::recurrent, 4);
  Tensor want = model.forward(idx);
  for (auto [form, chunk] : std::vector<std::pair<RecurrenceForm, int64_t>>{{RecurrenceForm::parallel, 4},
                                                                            {RecurrenceForm::chunkwise, 1},
                                                                            {RecurrenceForm::chunkwise, 3},
                                                                            {RecurrenceForm::chunkwise, 5},
                                                                            {RecurrenceForm::chunkwise, 16}}) {
    set_form(model, form, chunk);
    EXPECT_LT(max_abs_diff(model.forward(idx), want), 1e-12) << (int)form << " chunk " << chunk;
  }
}

TEST_P(Mixer, DecodingWithStateEqualsFullForward) {
  Generator g(2);
  GPT model(config_for(GetParam()), g);
  model.to(DType::f64);
  NoGradGuard ng;
  std::vector<int32_t> ids{2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5};
  Tensor full = model.forward(from_ints(ids, {1, 12}));
  DecodeState state = model.init_decode(1);
  std::vector<Tensor> steps{model.forward(from_ints({2, 7, 1, 8, 2}, {1, 5}), Tensor(), &state)};
  for (int t = 5; t < 12; ++t) steps.push_back(model.forward(from_ints({ids[t]}, {1, 1}), Tensor(), &state));
  EXPECT_LT(max_abs_diff(concat(steps, 1), full), 1e-12);
  // The state is constant-size: per layer B·H·K·V values (V+1 with the normaliser column).
  const int64_t v = GetParam().mixer == "linear" && GetParam().normalize ? 5 : 4;
  EXPECT_EQ(state.bytes(), 2 * 2 * 4 * v * 8);
}

TEST_P(Mixer, PaddingLeftOrRightLeavesRealTokensUnchanged) {
  Generator g(3);
  ModelConfig c = config_for(GetParam());
  c.position = "learned";  // positions come from the pad mask too
  GPT model(c, g);
  model.to(DType::f64);
  expect_padding_invariant(model);
}

TEST_P(Mixer, GradcheckWholeModelWithPadding) {
  ModelConfig c = config_for(GetParam());
  c.n_layer = 1, c.n_embd = 4, c.vocab_size = 5, c.chunk_size = 2;
  gradcheck_model(c, from_ints({1, 4, 2, 0, 3, 3, 2, 1}, {2, 4}), from_ints({4, 2, 0, 3, 3, 1, 1, 0}, {2, 4}),
                  from_bools({1, 0, 0, 0, 0, 0, 0, 1}, {2, 4}));
}

TEST_P(Mixer, ModelLearnsARepeatedSequence) {
  ModelConfig c = config_for(GetParam());
  c.n_embd = 32, c.n_head = 4, c.chunk_size = 8, c.position = "learned";
  expect_learns(c, 150);
}

INSTANTIATE_TEST_SUITE_P(
    LinearFamily, Mixer,
    ::testing::Values(Variant{"linear_elu", "linear", "elu", true}, Variant{"linear_relu", "linear", "relu", true},
                      Variant{"linear_unnormalised", "linear", "elu", false}, Variant{"retnet", "retnet", "elu", true},
                      Variant{"gated_retention", "gated_retention", "elu", true}, Variant{"gla", "gla", "elu", true},
                      Variant{"deltanet", "deltanet", "elu", true},
                      Variant{"gated_deltanet", "gated_deltanet", "elu", true}),
    [](const ::testing::TestParamInfo<Variant>& i) { return i.param.name; });

TEST(MixerNames, FollowTheReferenceImplementations) {
  ModelConfig c = config_for({"gla", "gla", "elu", true});
  Generator g(0);
  GPT model(c, g);
  std::vector<std::string> names;
  for (auto& p : model.state_dict()) names.push_back(p.name);
  for (std::string want : {"transformer.h.0.attn.q_proj.weight", "transformer.h.0.attn.k_proj.weight",
                           "transformer.h.0.attn.v_proj.weight", "transformer.h.0.attn.g_proj.weight",
                           "transformer.h.0.attn.gk_proj.0.weight", "transformer.h.0.attn.gk_proj.1.weight",
                           "transformer.h.0.attn.gk_proj.1.bias", "transformer.h.0.attn.g_norm.weight",
                           "transformer.h.0.attn.o_proj.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
}

// ---- GAU (quadratic form, K/V cache for decoding) ----------------------------

namespace {
ModelConfig gau_config() {
  ModelConfig c;
  c.vocab_size = 13, c.block_size = 16, c.n_layer = 2, c.n_head = 1, c.n_embd = 8, c.gau_qk_dim = 8;
  c.mixer = "gau";
  return c;
}
}  // namespace

TEST(Gau, BlocksHaveNoFeedForwardAndFollowFlashNames) {
  Generator g(0);
  GPT model(gau_config(), g);
  std::vector<std::string> names;
  for (auto& p : model.state_dict()) names.push_back(p.name);
  for (std::string want : {"transformer.h.0.attn.to_hidden.weight", "transformer.h.0.attn.to_qk.bias",
                           "transformer.h.0.attn.qk_offset_scale.gamma", "transformer.h.0.attn.to_out.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  for (auto& n : names) EXPECT_EQ(n.find("mlp"), std::string::npos) << n;
}

TEST(Gau, DecodingAndPaddingMatchTheFullForward) {
  Generator g(2);
  GPT model(gau_config(), g);
  model.to(DType::f64);
  NoGradGuard ng;
  std::vector<int32_t> ids{2, 7, 1, 8, 2, 8, 1, 8, 2, 8};
  Tensor full = model.forward(from_ints(ids, {1, 10}));
  DecodeState state = model.init_decode(1);
  std::vector<Tensor> steps{model.forward(from_ints({2, 7, 1}, {1, 3}), Tensor(), &state)};
  for (int t = 3; t < 10; ++t) steps.push_back(model.forward(from_ints({ids[t]}, {1, 1}), Tensor(), &state));
  EXPECT_LT(max_abs_diff(concat(steps, 1), full), 1e-12);
  expect_padding_invariant(model);
}

TEST(Gau, GradcheckWholeModelWithPadding) {
  ModelConfig c = gau_config();
  c.n_layer = 1, c.n_embd = 4, c.gau_qk_dim = 4, c.vocab_size = 5;
  gradcheck_model(c, from_ints({1, 4, 2, 0, 3, 3, 2, 1}, {2, 4}), from_ints({4, 2, 0, 3, 3, 1, 1, 0}, {2, 4}),
                  from_bools({1, 0, 0, 0, 0, 0, 0, 1}, {2, 4}));
}

TEST(Gau, ModelLearnsARepeatedSequence) {
  ModelConfig c = gau_config();
  c.n_embd = 32, c.gau_qk_dim = 32;
  expect_learns(c, 300);  // slower start: FLASH's γ init N(0, 0.02) makes QK ≈ 0
}

// ---- FLASH (mixed-chunk GAU) -------------------------------------------------

namespace {
ModelConfig flash_config(int64_t chunk) {
  ModelConfig c = gau_config();
  c.mixer = "flash";
  c.chunk_size = chunk;
  return c;
}
void set_flash(GPT& m, const std::string& form, int64_t chunk) {
  for (auto& b : m.transformer->h) {
    auto* g = dynamic_cast<GatedAttentionUnit*>(b->attn.get());
    ASSERT_NE(g, nullptr);
    g->form = form;
    g->chunk = chunk;
  }
}
}  // namespace

TEST(Flash, ParallelChunkwiseAndRecurrentFormsAgree) {
  Generator g(7);
  GPT model(flash_config(4), g);
  model.to(DType::f64);
  NoGradGuard ng;
  std::vector<int32_t> ids{2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5, 9, 0};
  Tensor idx = from_ints(ids, {1, 14});
  for (int64_t c : {1, 2, 3, 4, 5, 14, 16}) {
    set_flash(model, "parallel", c);
    Tensor want = model.forward(idx);
    set_flash(model, "chunkwise", c);
    EXPECT_LT(max_abs_diff(model.forward(idx), want), 1e-12) << "chunk " << c;
    DecodeState state = model.init_decode(1);
    std::vector<Tensor> steps{model.forward(from_ints({2, 7, 1}, {1, 3}), Tensor(), &state)};
    for (int t = 3; t < 14; ++t) steps.push_back(model.forward(from_ints({ids[t]}, {1, 1}), Tensor(), &state));
    EXPECT_LT(max_abs_diff(concat(steps, 1), want), 1e-12) << "decode, chunk " << c;
    EXPECT_LE(state.bytes(), 2 * (8 * 16 + c * (8 + 8 + 16)) * 8);  // S + at most one chunk per layer
  }
}

TEST(Flash, PaddingLeftOrRightLeavesRealTokensUnchanged) {
  Generator g(8);
  ModelConfig c = flash_config(2);
  c.position = "learned";
  GPT model(c, g);
  model.to(DType::f64);
  expect_padding_invariant(model);
}

TEST(Flash, GradcheckChunkedAndMaskedPaths) {
  ModelConfig c = flash_config(2);
  c.n_layer = 1, c.n_embd = 4, c.gau_qk_dim = 4, c.vocab_size = 5;
  Tensor idx = from_ints({1, 4, 2, 0, 3, 3, 2, 1, 0, 4}, {2, 5}),
         tgt = from_ints({4, 2, 0, 3, 3, 1, 1, 0, 2, 2}, {2, 5});
  // Right padding runs the chunked form, left padding the masked one.
  gradcheck_model(c, idx, tgt, from_bools({0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, {2, 5}));
  gradcheck_model(c, idx, tgt, from_bools({1, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {2, 5}));
}

TEST(Flash, ModelLearnsARepeatedSequence) {
  ModelConfig c = flash_config(4);
  c.n_embd = 32, c.gau_qk_dim = 32;
  expect_learns(c, 300);
}

// ---- Mamba and Mamba-2 --------------------------------------------------------

namespace {
ModelConfig mamba_config(const std::string& mixer) {
  ModelConfig c;
  c.vocab_size = 13, c.block_size = 16, c.n_layer = 2, c.n_head = 1, c.n_embd = 8;
  c.mixer = mixer, c.d_state = 4, c.ssm_headdim = 4, c.chunk_size = 4, c.position = "none";
  return c;
}
void set_mamba_form(GPT& m, RecurrenceForm form, int64_t chunk) {
  for (auto& b : m.transformer->h) {
    auto* mm = dynamic_cast<Mamba*>(b->attn.get());
    ASSERT_NE(mm, nullptr);
    mm->form = form;
    mm->chunk = chunk;
  }
}
class MambaTest : public ::testing::TestWithParam<std::string> {};
}  // namespace

TEST_P(MambaTest, FormsAgreeAndDecodingEqualsFullForward) {
  Generator g(1);
  GPT model(mamba_config(GetParam()), g);
  model.to(DType::f64);
  NoGradGuard ng;
  std::vector<int32_t> ids{2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5};
  Tensor idx = from_ints(ids, {1, 12});
  set_mamba_form(model, RecurrenceForm::recurrent, 4);
  Tensor want = model.forward(idx);
  for (auto [form, chunk] : std::vector<std::pair<RecurrenceForm, int64_t>>{{RecurrenceForm::parallel, 4},
                                                                            {RecurrenceForm::chunkwise, 1},
                                                                            {RecurrenceForm::chunkwise, 5},
                                                                            {RecurrenceForm::chunkwise, 12}}) {
    set_mamba_form(model, form, chunk);
    EXPECT_LT(max_abs_diff(model.forward(idx), want), 1e-12) << (int)form << " chunk " << chunk;
  }
  DecodeState state = model.init_decode(1);
  std::vector<Tensor> steps{model.forward(from_ints({2, 7, 1, 8, 2}, {1, 5}), Tensor(), &state)};
  for (int t = 5; t < 12; ++t) steps.push_back(model.forward(from_ints({ids[t]}, {1, 1}), Tensor(), &state));
  EXPECT_LT(max_abs_diff(concat(steps, 1), want), 1e-12);
  // Constant-size state: conv window (d_conv−1)·channels + SSM state, per layer.
  const int64_t conv = 3 * (GetParam() == "mamba" ? 16 : 16 + 8), ssm = GetParam() == "mamba" ? 16 * 4 : 4 * 4 * 4;
  EXPECT_EQ(state.bytes(), 2 * (conv + ssm) * 8);
}

TEST_P(MambaTest, PaddingLeftOrRightLeavesRealTokensUnchanged) {
  Generator g(3);
  ModelConfig c = mamba_config(GetParam());
  c.position = "learned";
  GPT model(c, g);
  model.to(DType::f64);
  expect_padding_invariant(model);
}

TEST_P(MambaTest, GradcheckWholeModelWithPadding) {
  ModelConfig c = mamba_config(GetParam());
  c.n_layer = 1, c.n_embd = 4, c.vocab_size = 5, c.d_state = 2, c.ssm_headdim = 4, c.chunk_size = 2;
  gradcheck_model(c, from_ints({1, 4, 2, 0, 3, 3, 2, 1}, {2, 4}), from_ints({4, 2, 0, 3, 3, 1, 1, 0}, {2, 4}),
                  from_bools({1, 0, 0, 0, 0, 0, 0, 1}, {2, 4}));
}

TEST_P(MambaTest, ModelLearnsARepeatedSequence) {
  ModelConfig c = mamba_config(GetParam());
  c.n_embd = 32, c.d_state = 8, c.ssm_headdim = 16, c.recurrent_form = "recurrent";
  expect_learns(c, 300);
}

INSTANTIATE_TEST_SUITE_P(Ssm, MambaTest, ::testing::Values("mamba", "mamba2"));

TEST(MambaNames, FollowMambaSsm) {
  Generator g(0);
  GPT m1(mamba_config("mamba"), g), m2(mamba_config("mamba2"), g);
  auto has = [](const GPT& m, const std::string& name, const Shape& shape) {
    for (auto& p : m.state_dict())
      if (p.name == name) return p.tensor.shape() == shape;
    return false;
  };
  EXPECT_TRUE(has(m1, "transformer.h.0.attn.in_proj.weight", {32, 8}));
  EXPECT_TRUE(has(m1, "transformer.h.0.attn.conv1d.weight", {16, 1, 4}));
  EXPECT_TRUE(has(m1, "transformer.h.0.attn.x_proj.weight", {1 + 8, 16}));
  EXPECT_TRUE(has(m1, "transformer.h.0.attn.dt_proj.bias", {16}));
  EXPECT_TRUE(has(m1, "transformer.h.0.attn.A_log", {16, 4}));
  EXPECT_TRUE(has(m1, "transformer.h.0.attn.D", {16}));
  EXPECT_TRUE(has(m2, "transformer.h.0.attn.in_proj.weight", {2 * 16 + 2 * 4 + 4, 8}));
  EXPECT_TRUE(has(m2, "transformer.h.0.attn.dt_bias", {4}));
  EXPECT_TRUE(has(m2, "transformer.h.0.attn.norm.weight", {16}));
  // dt_proj's bias is softplus⁻¹ of Δ ∈ [0.001, 0.1].
  for (auto& p : m1.state_dict())
    if (p.name == "transformer.h.0.attn.dt_proj.bias")
      for (double b : p.tensor.to_vector()) {
        const double dt = std::log1p(std::exp(b));
        EXPECT_GE(dt, 0.001 * 0.999);
        EXPECT_LE(dt, 0.1 * 1.001);
      }
}
