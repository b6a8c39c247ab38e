// The mixer contract: every entry of the mixer table (nn/mixers.h), and the
// linear-attention variants, inside the whole model, meets the same checks:
//   - its training forms give the same logits at every chunk size;
//   - decoding with a state equals the full forward, and a recurrent mixer's
//     state stops growing; without position embedding it decodes past its context;
//   - padding (left or right) leaves the logits of real tokens unchanged;
//   - float64 gradcheck of the whole model's loss with padding passes;
//   - a training step gives bit-identical gradients twice at 2 threads;
//   - the model learns a repeated sequence.
// A new mixer joins every test through its table entry, with no line here.
#include <numeric>

#include "nn/mixers.h"
#include "nn/model.h"
#include "optim/optimizer.h"
#include "tests/test_helpers.h"

using namespace tapelm;
using namespace tapelm::nn;
using namespace tapelm::testing;

namespace {

struct Variant {
  std::string name;  // the test's name
  ModelConfig config;
};

// One variant per mixer of the table, plus linear attention's other feature
// map and its unnormalised form. Small widths every mixer accepts.
ModelConfig small_config_of(const std::vector<Variant>& v, const std::string& name) {
  for (const Variant& x : v)
    if (x.name == name) return x.config;
  throw Error("no variant " + name);
}

std::vector<Variant> variants() {
  std::vector<Variant> v;
  for (const MixerSpec& m : mixer_table()) {
    ModelConfig c;
    c.vocab_size = 13, c.block_size = 16, c.n_layer = 2, c.n_head = 2, c.n_embd = 8, c.ffn_hidden = 16;
    c.gau_qk_dim = 8, c.d_state = 4, c.ssm_headdim = 4, c.chunk_size = 4;
    c.mixer = m.name;
    // Its reference recipe (positions, norm, FFN, biases), at these widths.
    v.push_back({m.name, with_recipe(c, {"vocab_size", "block_size", "n_layer", "n_head", "n_embd", "ffn_hidden",
                                         "gau_qk_dim", "d_state", "ssm_headdim", "chunk_size"})});
  }
  ModelConfig linear = small_config_of(v, "linear");
  linear.feature_map = "relu";
  v.push_back({"linear_relu", linear});
  linear.feature_map = "elu", linear.normalize = false;
  v.push_back({"linear_unnormalised", linear});
  return v;
}

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

// Float64 gradcheck of the whole model's loss with a padding mask, every
// parameter checked (moved off its init so gates and norms matter).
void gradcheck_model(const ModelConfig& c, const Tensor& idx, const Tensor& tgt, const Tensor& pad) {
  SCOPED_TRACE(c.mixer);
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
  // eps 1e-7, tolerances as everywhere: with the fla recipe (RMSNorm straight
  // on an embedding, no position added) GLA's loss has third derivatives near
  // 5e5 at this point, so the central difference's O(eps²) error is 9e-8 at
  // eps 1e-6 (8.8e-4 at 1e-4, 8.8e-6 at 1e-5: the analytic gradient is the limit).
  GradcheckOptions opt;
  opt.eps = 1e-7;
  expect_gradcheck([&](const std::vector<Tensor>&) { return model.loss(idx, tgt, pad); }, inputs, opt);
}

// The model learns from its context: a repeated 8-token pattern in which 1 is
// followed by 5 or 9 and 3 by 7 or 11, depending on the token before, so a
// model that does not mix positions stays at a loss of 0.35 (half the
// positions are a coin toss). Loss (about log 13 at the start) falls below 0.1
// within `steps` AdamW steps at lr 1e-2.
void expect_learns(const ModelConfig& c, int steps) {
  Generator g(6);
  GPT model(c, g);
  std::vector<int32_t> pattern{1, 5, 1, 9, 3, 7, 3, 11}, in, out;
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

// The model in float64, weights from seed `seed` (the form does not change them).
std::unique_ptr<GPT> model_f64(const ModelConfig& c, uint64_t seed) {
  Generator g(seed);
  auto model = std::make_unique<GPT>(c, g);
  model->to(DType::f64);
  return model;
}

class Mixer : public ::testing::TestWithParam<Variant> {};

}  // namespace

// At each chunk size, every form equals the recurrent one. (The recurrent
// form ignores the chunk size except in FLASH, where chunks are part of the model.)
TEST_P(Mixer, TrainingFormsAgreeAtEveryChunkSize) {
  ModelConfig c = GetParam().config;
  NoGradGuard ng;
  Tensor idx = from_ints({1, 5, 2, 9, 3, 7, 4, 11, 0, 12, 6, 8, 1, 2, 3, 4, 5, 6, 7, 8}, {2, 10});
  for (int64_t chunk : {1, 3, 4, 5, 16}) {
    c.chunk_size = chunk, c.recurrent_form = "recurrent";
    Tensor want = model_f64(c, 1)->forward(idx);
    for (std::string form : {"parallel", "chunkwise", "auto"}) {
      c.recurrent_form = form;
      EXPECT_LT(max_abs_diff(model_f64(c, 1)->forward(idx), want), 1e-12) << form << " chunk " << chunk;
    }
  }
}

TEST_P(Mixer, DecodingWithStateEqualsFullForward) {
  const ModelConfig& c = GetParam().config;
  auto owned = model_f64(c, 2);
  GPT& model = *owned;
  NoGradGuard ng;
  std::vector<int32_t> ids{2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5, 9, 0, 3, 6};
  Tensor full = model.forward(from_ints(ids, {1, 16}));
  DecodeState state = model.init_decode(1);
  std::vector<Tensor> steps{model.forward(from_ints({2, 7, 1, 8, 2}, {1, 5}), Tensor(), &state)};
  int64_t bytes_at_12 = 0;
  for (int t = 5; t < 16; ++t) {
    steps.push_back(model.forward(from_ints({ids[t]}, {1, 1}), Tensor(), &state));
    if (t + 1 == 12) bytes_at_12 = state.bytes();
  }
  EXPECT_LT(max_abs_diff(concat(steps, 1), full), 1e-12);
  // A recurrent state is bounded (FLASH's holds one chunk beside Σ k'vᵀ: 12 and
  // 16 tokens both end a chunk of 4); a key-value cache grows by a row a token.
  if (mixer_spec(c.mixer).recurrent)
    EXPECT_EQ(state.bytes(), bytes_at_12);
  else
    EXPECT_GT(state.bytes(), bytes_at_12);
}

// A recurrent mixer in a model without position embedding decodes past its
// context: 40 tokens one at a time after a context of 16 equal the full
// forward over the 40 (RetNet's rotary angles past the table included).
TEST_P(Mixer, RecurrentModelWithoutPositionsDecodesPastItsContext) {
  ModelConfig c = GetParam().config;
  c.position = "none";
  auto owned = model_f64(c, 4);
  GPT& model = *owned;
  ASSERT_EQ(model.decodes_past_context(), mixer_spec(c.mixer).recurrent);
  if (!model.decodes_past_context()) return;  // attention and GAU stop at their context (see the sampler)
  NoGradGuard ng;
  Generator gen(5);
  Tensor ids = randint({1, 40}, c.vocab_size, gen);
  Tensor full = model.forward(ids);
  DecodeState state = model.init_decode(1);
  std::vector<Tensor> steps{model.forward(slice(ids, 1, 0, 5).clone(), Tensor(), &state)};
  int64_t bytes_at_16 = 0;
  for (int64_t t = 5; t < 40; ++t) {
    steps.push_back(model.forward(slice(ids, 1, t, t + 1).clone(), Tensor(), &state));
    if (t + 1 == 16) bytes_at_16 = state.bytes();
  }
  EXPECT_LT(max_abs_diff(concat(steps, 1), full), 1e-10);
  EXPECT_EQ(state.bytes(), bytes_at_16);  // 40 and 16 both end a chunk of 4
}

TEST_P(Mixer, PaddingLeftOrRightLeavesRealTokensUnchanged) {
  ModelConfig c = GetParam().config;
  c.position = "learned";  // positions come from the pad mask too
  expect_padding_invariant(*model_f64(c, 3));
}

TEST_P(Mixer, GradcheckWholeModelWithPadding) {
  ModelConfig c = GetParam().config;
  c.n_layer = 1, c.n_embd = 4, c.vocab_size = 5, c.chunk_size = 2, c.gau_qk_dim = 4, c.d_state = 2;
  if (const MixerSpec& m = mixer_spec(c.mixer); m.width_multiple) c.n_embd = std::lcm((int64_t)4, m.width_multiple(c));
  Tensor idx = from_ints({1, 4, 2, 0, 3, 3, 2, 1, 0, 4}, {2, 5}),
         tgt = from_ints({4, 2, 0, 3, 3, 1, 1, 0, 2, 2}, {2, 5});
  // Right padding only (FLASH's chunked path), and left padding (its masked path).
  gradcheck_model(c, idx, tgt, from_bools({0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, {2, 5}));
  gradcheck_model(c, idx, tgt, from_bools({1, 0, 0, 0, 0, 0, 0, 0, 0, 1}, {2, 5}));
}

TEST_P(Mixer, TrainingStepGivesBitIdenticalGradientsTwiceAtTwoThreads) {
  ModelConfig c = GetParam().config;
  c.n_embd = 32, c.n_head = 4, c.gau_qk_dim = 16, c.ssm_headdim = 16, c.position = "learned";
  Generator data(9);
  Tensor idx = randint({4, 16}, c.vocab_size, data), tgt = randint({4, 16}, c.vocab_size, data);
  auto step = [&] {
    ThreadCount two(2);
    Generator g(10);
    GPT model(c, g);
    backward(model.loss(idx, tgt));
    std::vector<Tensor> grads;
    for (auto& p : model.named_parameters()) grads.push_back(p.tensor.grad().clone());
    return grads;
  };
  auto first = step(), second = step();
  ASSERT_EQ(first.size(), second.size());
  for (size_t i = 0; i < first.size(); ++i)
    EXPECT_TRUE(same_bits(first[i], second[i])) << "gradient " << i << " differs";
}

TEST_P(Mixer, ModelLearnsARepeatedSequence) {
  ModelConfig c = GetParam().config;
  c.n_embd = 32, c.n_head = 4, c.chunk_size = 8, c.position = "learned", c.gau_qk_dim = 32, c.d_state = 8,
  c.ssm_headdim = 16;
  // Blocks without an FFN (GAU, FLASH, Mamba) get 300 steps: GAU and FLASH
  // start slowly (FLASH's γ init N(0, 0.02) makes QK ≈ 0).
  expect_learns(c, mixer_spec(c.mixer).has_ffn ? 150 : 300);
}

INSTANTIATE_TEST_SUITE_P(Table, Mixer, ::testing::ValuesIn(variants()), [](const ::testing::TestParamInfo<Variant>& i) {
  std::string name;  // a test name holds letters, digits and _ only: transformer++ is transformerpp
  for (char ch : i.param.name) name += ch == '+' ? 'p' : ch;
  return name;
});

// ---- reference recipes -----------------------------------------------------------

TEST(Recipe, EachMixerGetsItsReferenceModelWhereNoFlagSaysOtherwise) {
  ModelConfig c;
  c.n_embd = 384;
  c.mixer = "transformer++";
  ModelConfig t = with_recipe(c, {});
  EXPECT_EQ(t.position, "rope");
  EXPECT_EQ(t.ffn, "swiglu");
  EXPECT_EQ(t.ffn_hidden, 1024);  // fla / LLaMA: ⅔·4·384 = 1024, a multiple of 256
  EXPECT_EQ(t.norm, "rmsnorm");
  EXPECT_FALSE(t.bias);
  c.mixer = "mamba2";
  ModelConfig m = with_recipe(c, {"position"});  // --position given: it stays
  EXPECT_EQ(m.position, "learned");
  EXPECT_EQ(m.norm, "rmsnorm");
  // FLASH-pytorch's FLASHTransformer for both GAU and FLASH; groups of 256 are FLASH's only.
  for (std::string mixer : {"gau", "flash"}) {
    c.mixer = mixer;
    ModelConfig f = with_recipe(c, {});
    EXPECT_EQ(f.position, "scaled_sinusoidal");
    EXPECT_EQ(f.norm, "scalenorm");
    EXPECT_EQ(f.final_norm, "layernorm");
    EXPECT_TRUE(f.gau_token_shift);
    EXPECT_EQ(f.gau_rotary_dim, 32);
    EXPECT_EQ(f.chunk_size, mixer == "flash" ? 256 : 64);
    EXPECT_TRUE(f.bias);
    EXPECT_FALSE(f.tie_weights);  // to_logits: a Linear of its own
  }
  // fla's configuration_*.py: norm_eps 1e-6, an untied head, hidden_ratio 4 (RetNet 2).
  for (std::string mixer : {"linear", "retnet", "gated_retention", "gla", "deltanet", "gated_deltanet"}) {
    c.mixer = mixer;
    ModelConfig f = with_recipe(c, {});
    EXPECT_EQ(f.norm_eps, 1e-6) << mixer;
    EXPECT_FALSE(f.tie_weights) << mixer;
    EXPECT_EQ(f.ffn_hidden, mixer == "retnet" ? 512 : 1024) << mixer;  // int(384·2·⅔) = 512; int(384·4·⅔) = 1024
  }
  c.mixer = "attention";  // nanoGPT's GPT: the config's defaults
  EXPECT_EQ(with_recipe(c, {}).to_json(), c.to_json());
  EXPECT_EQ(swiglu_hidden(128), 512);
  EXPECT_EQ(swiglu_hidden(768), 2048);
  EXPECT_EQ(swiglu_hidden(97, 2), 256);   // int(97·4/3) = 129, rounded up to 256
  EXPECT_EQ(swiglu_hidden(200, 2), 512);  // int(200·4/3) = 266 → 512, where hidden_ratio 4 gives 768
}

// ---- parameter names ------------------------------------------------------------

namespace {
ModelConfig small(const std::string& mixer) { return small_config_of(variants(), mixer); }
// The model holds a parameter of this name and shape.
bool has(const GPT& m, const std::string& name, const Shape& shape) {
  for (auto& p : m.state_dict())
    if (p.name == name) return p.tensor.shape() == shape;
  return false;
}
// The names of a model of c's parameters.
std::vector<std::string> parameter_names(const ModelConfig& c) {
  Generator gen(0);
  GPT model(c, gen);
  std::vector<std::string> names;
  for (auto& p : model.state_dict()) names.push_back(p.name);
  return names;
}
}  // namespace

TEST(MixerNames, FollowTheReferenceImplementations) {
  const std::vector<std::string> names = parameter_names(small("gla"));
  for (std::string want : {"transformer.h.0.attn.q_proj.weight", "transformer.h.0.attn.k_proj.weight",
                           "transformer.h.0.attn.v_proj.weight", "transformer.h.0.attn.g_proj.weight",
                           "transformer.h.0.attn.gk_proj.0.weight", "transformer.h.0.attn.gk_proj.1.weight",
                           "transformer.h.0.attn.gk_proj.1.bias", "transformer.h.0.attn.g_norm_swish_gate.weight",
                           "transformer.h.0.attn.o_proj.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
}

// fla's YOCOGatedRetention: a bias-free decay projection gk_proj, a per-head
// o_norm with no weight, values d wide.
TEST(MixerNames, GatedRetentionFollowsYoco) {
  const ModelConfig c = small("gated_retention");
  const std::vector<std::string> names = parameter_names(c);
  auto holds = [&](const std::string& n) {
    return std::find(names.begin(), names.end(), "transformer.h.0.attn." + n) != names.end();
  };
  EXPECT_TRUE(holds("gk_proj.weight"));
  EXPECT_FALSE(holds("gk_proj.bias"));
  EXPECT_FALSE(holds("o_norm.weight"));
  EXPECT_FALSE(holds("g_norm_swish_gate.weight"));
  Generator gen(0);
  EXPECT_TRUE(has(GPT(c, gen), "transformer.h.0.attn.v_proj.weight", {c.n_embd, c.n_embd}));
}

// fla's GatedDeltaNet: keys 0.75·d, values 1.5·d (6d² per layer), Mamba-2's
// decay (a_proj, A_log, dt_bias), short convolutions without bias.
TEST(MixerNames, GatedDeltaNetFollowsFla) {
  ModelConfig c = small("gated_deltanet");
  c.n_embd = 16, c.n_head = 2, c.d_conv = 4;
  Generator g(0);
  GPT model(c, g);
  auto attn = [&](const std::string& name, const Shape& shape) {
    return has(model, "transformer.h.0.attn." + name, shape);
  };
  EXPECT_TRUE(attn("q_proj.weight", {12, 16}));
  EXPECT_TRUE(attn("k_proj.weight", {12, 16}));
  EXPECT_TRUE(attn("v_proj.weight", {24, 16}));
  EXPECT_TRUE(attn("g_proj.weight", {24, 16}));
  EXPECT_TRUE(attn("o_proj.weight", {16, 24}));
  EXPECT_TRUE(attn("a_proj.weight", {2, 16}));
  EXPECT_TRUE(attn("b_proj.weight", {2, 16}));
  EXPECT_TRUE(attn("A_log", {2}));
  EXPECT_TRUE(attn("dt_bias", {2}));
  EXPECT_TRUE(attn("q_conv1d.weight", {12, 1, 4}));
  EXPECT_TRUE(attn("v_conv1d.weight", {24, 1, 4}));
  EXPECT_FALSE(attn("q_conv1d.bias", {12}));
  EXPECT_TRUE(attn("o_norm.weight", {12}));
}

TEST(Gau, BlocksHaveNoFeedForwardAndFollowFlashNames) {
  Generator g(0);
  GPT model(small("gau"), g);
  std::vector<std::string> names;
  for (auto& p : model.state_dict()) names.push_back(p.name);
  for (std::string want : {"transformer.h.0.attn.to_hidden.0.weight", "transformer.h.0.attn.to_qk.0.bias",
                           "transformer.h.0.attn.qk_offset_scale.gamma", "transformer.h.0.attn.rel_pos_bias.weight",
                           "transformer.h.0.attn.to_out.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  for (auto& n : names) EXPECT_EQ(n.find("mlp"), std::string::npos) << n;
  // FLASHTransformer's model around it: ScaleNorm's one gain per block, the
  // sinusoid's one scale, a LayerNorm with bias before the head.
  EXPECT_TRUE(has(model, "transformer.h.0.ln_1.g", {1}));
  EXPECT_TRUE(has(model, "transformer.wpe.scale", {1}));
  EXPECT_TRUE(has(model, "transformer.ln_f.weight", {8}));
  EXPECT_TRUE(has(model, "transformer.ln_f.bias", {8}));
  EXPECT_FALSE(has(model, "transformer.ln_f.g", {1}));
}

TEST(MambaNames, FollowMambaSsm) {
  Generator g(0);
  GPT m1(small("mamba"), g), m2(small("mamba2"), g);
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
