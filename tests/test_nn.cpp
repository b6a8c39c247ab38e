// nn modules and the model: float64 gradchecks of every module, causality,
// padding invariance (left and right), KV-cache decoding, naming, init,
// parameter counts, and a model that learns.
#include <cmath>

#include "nn/attention.h"
#include "nn/feedforward.h"
#include "nn/linear_attention.h"
#include "nn/mixers.h"
#include "nn/model.h"
#include "nn/norm.h"
#include "tests/changed_config.h"
#include "tests/test_helpers.h"

using namespace tapelm;
using namespace tapelm::nn;
using namespace tapelm::testing;

namespace {

// Gradchecks a module: the input and every parameter (made float64, perturbed
// away from their trivial init so gains and biases matter).
void gradcheck_module(Module& m, const Tensor& x, const std::function<Tensor(const Tensor&)>& f) {
  m.to(DType::f64);
  std::vector<Tensor> inputs{x};
  Generator g(77);
  for (auto& p : m.named_parameters()) {
    NoGradGuard ng;
    p.tensor.copy_(add(p.tensor, randn(p.tensor.shape(), g, DType::f64, 0, 0.3)));
    inputs.push_back(p.tensor);
  }
  expect_gradcheck([&](const std::vector<Tensor>& v) { return f(v[0]); }, inputs);
}

Tensor pad_mask(std::vector<std::vector<int>> rows) {
  std::vector<bool> v;
  for (auto& r : rows)
    for (int b : r) v.push_back(b);
  return from_bools(v, {(int64_t)rows.size(), (int64_t)rows[0].size()});
}

ModelConfig tiny(const std::string& position = "learned") {
  ModelConfig c;
  c.vocab_size = 13, c.block_size = 12, c.n_layer = 2, c.n_head = 2, c.n_embd = 8;
  c.position = position;
  return c;
}

}  // namespace

TEST(NnGradcheck, Linear) {
  Generator g(0);
  Linear m(3, 4, true, g);
  gradcheck_module(m, param({2, 5, 3}, 1), [&](const Tensor& x) { return m.forward(x); });
}

TEST(NnGradcheck, Norms) {
  for (std::string kind : {"layernorm", "rmsnorm", "dyt"}) {
    auto m = make_norm(kind, 6, true);
    gradcheck_module(*m, param({2, 3, 6}, 1), [&](const Tensor& x) { return m->forward(x); });
  }
}

TEST(NnGradcheck, FeedForwardKinds) {
  for (std::string kind : {"gelu", "relu", "swiglu"}) {
    Generator g(0);
    FeedForward m(4, 8, kind, true, 0.0, g, nullptr, 0.3);
    gradcheck_module(m, param({2, 3, 4}, 2), [&](const Tensor& x) { return m.forward(x); });
  }
}

TEST(NnGradcheck, AttentionCausalAndPaddingTogetherWithAndWithoutRope) {
  Tensor pad = pad_mask({{1, 1, 0, 0, 0}, {0, 0, 0, 1, 1}});
  for (bool rope : {false, true}) {
    Generator g(0);
    MultiHeadAttention m(8, 2, true, 0.0, rope ? std::make_shared<Rotary>(4, 8) : nullptr, g, nullptr, 0.3);
    MixerContext ctx{pad, position_ids(2, 5, pad)};
    gradcheck_module(m, param({2, 5, 8}, 3), [&](const Tensor& x) { return m.forward(x, ctx, nullptr); });
  }
}

TEST(NnGradcheck, RotaryAlone) {
  Rotary r(4, 8);
  Tensor pos = position_ids(1, 3, Tensor());
  expect_gradcheck([&](const std::vector<Tensor>& v) { return r.apply(v[0], pos); }, {param({1, 2, 3, 4}, 4)});
  // Interleaved pairs on the first 4 of 6 features (FLASH-pytorch's partial rotary).
  Rotary partial(4, 8, 10000.0, Rotary::Layout::interleaved);
  expect_gradcheck([&](const std::vector<Tensor>& v) { return partial.apply(v[0], pos, 2); }, {param({1, 3, 2, 6}, 5)});
}

// The two layouts turn the same pairs by the same angles: interleaved on x
// equals half on x with its features regrouped (pair i = (2i, 2i+1) ↔ (i, i + r/2)),
// and features past the rotated width pass unchanged.
TEST(NnModel, RotaryLayoutsTurnTheSamePairsAndPartialRotaryLeavesTheRest) {
  Rotary half(4, 16), inter(4, 16, 10000.0, Rotary::Layout::interleaved);
  Tensor pos = from_ints({0, 3, 7}, {1, 3});
  Tensor x = param({1, 3, 1, 6}, 6);  // [B,T,H,hd], hd 6 > 4 rotated
  Tensor yi = inter.apply(x, pos, 2), yh = half.apply(x, pos, 2);
  const int64_t to_half[4] = {0, 2, 1, 3};  // interleaved feature j sits at to_half[j] in the half layout
  Tensor xh = x.clone();
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t j = 0; j < 4; ++j) xh.set_flat(t * 6 + to_half[j], x.flat(t * 6 + j));
  Tensor yh2 = half.apply(xh, pos, 2);
  for (int64_t t = 0; t < 3; ++t) {
    for (int64_t j = 0; j < 4; ++j) EXPECT_NEAR(yi.flat(t * 6 + j), yh2.flat(t * 6 + to_half[j]), 1e-15);
    for (int64_t j = 4; j < 6; ++j) {
      EXPECT_EQ(yi.flat(t * 6 + j), x.flat(t * 6 + j));
      EXPECT_EQ(yh.flat(t * 6 + j), x.flat(t * 6 + j));
    }
  }
  EXPECT_EQ(yi.flat(0), x.flat(0));  // position 0: no turn
}

TEST(NnGradcheck, WholeModelLoss) {
  for (std::string position : {"learned", "rope"}) {
    ModelConfig c = tiny(position);
    c.n_layer = 1, c.vocab_size = 5, c.n_embd = 4, c.block_size = 4;
    Generator g(1);
    GPT model(c, g);
    model.to(DType::f64);
    std::vector<Tensor> inputs;
    for (auto& p : model.named_parameters()) inputs.push_back(p.tensor);
    Tensor idx = from_ints({1, 4, 2, 0, 3, 3}, {2, 3}), tgt = from_ints({4, 2, 0, 3, 3, 1}, {2, 3});
    Tensor pad = pad_mask({{1, 0, 0}, {0, 0, 1}});
    expect_gradcheck([&](const std::vector<Tensor>&) { return model.loss(idx, tgt, pad); }, inputs);
  }
}

TEST(NnModel, NanoGPTNamesShapesAndCounts) {
  ModelConfig c;  // nanoGPT's small char config
  Generator g(0);
  GPT model(c, g);
  std::vector<std::string> names;
  for (auto& p : model.state_dict()) names.push_back(p.name);
  std::vector<std::string> want_prefix = {"transformer.wte.weight",
                                          "transformer.wpe.weight",
                                          "transformer.h.0.ln_1.weight",
                                          "transformer.h.0.ln_1.bias",
                                          "transformer.h.0.attn.c_attn.weight",
                                          "transformer.h.0.attn.c_attn.bias",
                                          "transformer.h.0.attn.c_proj.weight",
                                          "transformer.h.0.attn.c_proj.bias",
                                          "transformer.h.0.ln_2.weight",
                                          "transformer.h.0.ln_2.bias",
                                          "transformer.h.0.mlp.c_fc.weight",
                                          "transformer.h.0.mlp.c_fc.bias",
                                          "transformer.h.0.mlp.c_proj.weight",
                                          "transformer.h.0.mlp.c_proj.bias"};
  for (size_t i = 0; i < want_prefix.size(); ++i) EXPECT_EQ(names[i], want_prefix[i]);
  EXPECT_EQ(names.back(), "lm_head.weight");
  EXPECT_EQ(names[names.size() - 2], "transformer.ln_f.bias");
  EXPECT_EQ(model.state_dict()[4].tensor.shape(), (Shape{384, 128}));  // c_attn [3C, C]
  // wte 65·128 + wpe 64·128 + 4 layers × (2 norms 2·256 + c_attn 128·384+384 +
  // c_proj 128·128+128 + c_fc 128·512+512 + c_proj 512·128+128) + ln_f 256.
  // (nanoGPT reports 0.80M = this minus wpe.)
  EXPECT_EQ(model.num_parameters(), 65 * 128 + 64 * 128 + 4 * 198272 + 256);
  const int64_t d = 128, l = 4;
  // N = 12·l·d² plus biases and norm gains (13·d per layer) plus ln_f (2·d).
  EXPECT_EQ(model.num_non_embedding_parameters(), 12 * l * d * d + 13 * d * l + 2 * d);
  EXPECT_NE(model.describe().find("12·l·d² = 786432"), std::string::npos) << model.describe();
}

TEST(NnModel, Gpt2Initialisation) {
  ModelConfig c;
  c.n_layer = 4;
  Generator g(0);
  GPT model(c, g);
  auto stddev = [](const Tensor& t) {
    double s = 0;
    for (double v : t.to_vector()) s += v * v;
    return std::sqrt(s / t.numel());
  };
  for (auto& p : model.named_parameters()) {
    bool is_bias = p.name.size() > 5 && p.name.substr(p.name.size() - 5) == ".bias";
    if (is_bias) {
      EXPECT_EQ(stddev(p.tensor), 0.0) << p.name;
    } else if (p.name.find("ln_") != std::string::npos) {
      EXPECT_EQ(p.tensor.flat(0), 1.0) << p.name;
    } else if (p.name.find("c_proj.weight") != std::string::npos) {
      EXPECT_NEAR(stddev(p.tensor), 0.02 / std::sqrt(8.0), 0.002) << p.name;
    } else {
      EXPECT_NEAR(stddev(p.tensor), 0.02, 0.002) << p.name;
    }
  }
}

TEST(NnModel, CausalFutureTokensNeverChangePastLogits) {
  for (std::string position : {"learned", "rope", "sinusoidal", "scaled_sinusoidal", "none"}) {
    Generator g(2);
    GPT model(tiny(position), g);
    NoGradGuard ng;
    Tensor a = from_ints({1, 2, 3, 4, 5, 6, 7, 8}, {1, 8});
    Tensor b = a.clone();
    b.set_flat(5, 11);  // change token 5
    Tensor la = model.forward(a), lb = model.forward(b);
    const int64_t V = 13;
    for (int64_t t = 0; t < 8; ++t)
      for (int64_t v = 0; v < V; ++v) {
        double da = la.flat(t * V + v), db = lb.flat(t * V + v);
        if (t < 5) {
          EXPECT_EQ(da, db) << position << " t=" << t;
        }
      }
    EXPECT_NE(la.flat(5 * V), lb.flat(5 * V));
  }
}

TEST(NnModel, PaddingLeftOrRightLeavesRealTokenLogitsUnchanged) {
  for (std::string position : {"learned", "rope", "sinusoidal", "scaled_sinusoidal"}) {
    Generator g(3);
    GPT model(tiny(position), g);
    NoGradGuard ng;
    std::vector<int32_t> seq{3, 1, 4, 1, 5};
    Tensor plain = model.forward(from_ints(seq, {1, 5}));
    // Right padding by 3 and left padding by 3 in one batch.
    std::vector<int32_t> ids{3, 1, 4, 1, 5, 0, 0, 0, 0, 0, 0, 3, 1, 4, 1, 5};
    Tensor pad = pad_mask({{0, 0, 0, 0, 0, 1, 1, 1}, {1, 1, 1, 0, 0, 0, 0, 0}});
    Tensor padded = model.forward(from_ints(ids, {2, 8}), pad);
    const int64_t V = 13;
    for (int64_t t = 0; t < 5; ++t)
      for (int64_t v = 0; v < V; ++v) {
        double want = plain.flat(t * V + v);
        EXPECT_NEAR(padded.flat(t * V + v), want, 1e-6) << position << " right t=" << t;
        EXPECT_NEAR(padded.flat((8 + 3 + t) * V + v), want, 1e-6) << position << " left t=" << t;
      }
    for (double v : padded.to_vector()) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST(NnModel, KVCacheDecodingEqualsFullForward) {
  for (std::string position : {"learned", "rope"}) {
    Generator g(4);
    GPT model(tiny(position), g);
    model.to(DType::f64);
    NoGradGuard ng;
    std::vector<int32_t> ids{2, 7, 1, 8, 2, 8, 1, 8, 2, 8};
    Tensor full = model.forward(from_ints(ids, {1, 10}));
    DecodeState state = model.init_decode(1);
    // A 4-token prompt at once, then one token at a time.
    Tensor first = model.forward(from_ints({2, 7, 1, 8}, {1, 4}), Tensor(), &state);
    std::vector<Tensor> steps{first};
    for (int t = 4; t < 10; ++t) steps.push_back(model.forward(from_ints({ids[t]}, {1, 1}), Tensor(), &state));
    Tensor decoded = concat(steps, 1);
    for (int64_t i = 0; i < full.numel(); ++i) EXPECT_NEAR(decoded.flat(i), full.flat(i), 1e-12);
    EXPECT_EQ(state.seen[0], 10);
    EXPECT_EQ(state.bytes(), 2 /*layers*/ * 2 /*k,v*/ * 10 * 8 * 8 /*bytes f64*/ + 2 * 10);
  }
}

// Batch 2 with a left-padded row, a cache that grows past its first capacity
// (16 slots) while decoding: each row's logits equal its own full forward.
TEST(NnModel, KVCacheDecodingBatchedWithPaddingAndGrowth) {
  ModelConfig c = tiny("learned");
  c.block_size = 24;
  Generator g(5);
  GPT model(c, g);
  model.to(DType::f64);
  NoGradGuard ng;
  const int64_t V = c.vocab_size;
  std::vector<int32_t> a{2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5, 9, 0, 4, 5, 3, 6, 2, 1};  // 20 tokens
  std::vector<int32_t> b(a.begin() + 3, a.end());                                      // 17 tokens, left-padded by 3
  Tensor full_a = model.forward(from_ints(a, {1, 20})), full_b = model.forward(from_ints(b, {1, 17}));
  DecodeState state = model.init_decode(2);
  std::vector<int32_t> prompt(a.begin(), a.begin() + 5);
  prompt.insert(prompt.end(), {0, 0, 0, b[0], b[1]});
  Tensor pad = from_bools({0, 0, 0, 0, 0, 1, 1, 1, 0, 0}, {2, 5});
  std::vector<Tensor> outs{model.forward(from_ints(prompt, {2, 5}), pad, &state)};
  for (int t = 5; t < 20; ++t) outs.push_back(model.forward(from_ints({a[t], b[t - 3]}, {2, 1}), Tensor(), &state));
  Tensor decoded = concat(outs, 1);  // [2, 20, V]
  for (int64_t t = 0; t < 20; ++t)
    for (int64_t v = 0; v < V; ++v) {
      EXPECT_NEAR(decoded.flat(t * V + v), full_a.flat(t * V + v), 1e-12) << "row 0, t " << t;
      if (t >= 3) {
        EXPECT_NEAR(decoded.flat((20 + t) * V + v), full_b.flat((t - 3) * V + v), 1e-12) << "row 1, t " << t;
      }
    }
}

TEST(NnModel, ContextOverflowAndBadConfigAreClearErrors) {
  Generator g(0);
  GPT model(tiny(), g);
  EXPECT_ERROR_CONTAINS(model.forward(zeros({1, 13}, DType::i32)), "position 12 is beyond the context length 12");
  ModelConfig c = tiny();
  c.n_embd = 10, c.n_head = 4;
  EXPECT_ERROR_CONTAINS(GPT(c, g), "n_embd 10 is not divisible by n_head 4");
  c = tiny();
  c.mixer = "transformerxl";
  EXPECT_ERROR_CONTAINS(check_config(c), "unknown mixer 'transformerxl'");
  c = tiny("scaled_sinusoidal");
  c.n_embd = 9, c.n_head = 3;
  EXPECT_ERROR_CONTAINS(c.validate(), "scaled_sinusoidal positions need an even n_embd (sines, then cosines), got 9");
  c = tiny();
  c.mixer = "flash", c.gau_qk_dim = 8, c.gau_rotary_dim = 3;
  EXPECT_ERROR_CONTAINS(check_config(c),
                        "gau_rotary_dim rotates min(3, gau_qk_dim 8) = 3 features, which must be even");
  EXPECT_ERROR_CONTAINS(model.forward(from_ints({1, 99}, {1, 2})), "embedding: index 99 out of range");
  // From a file: integers must be integers, and every field has a range.
  EXPECT_ERROR_CONTAINS(ModelConfig::from_json(R"({"n_layer": 1e30})"), "bad value for 'n_layer': 1e+30");
  EXPECT_ERROR_CONTAINS(ModelConfig::from_json(R"({"n_embd": 18446744073709551615})"), "bad value for 'n_embd'");
  EXPECT_ERROR_CONTAINS(ModelConfig::from_json(R"({"vocab_size": 100000000})"), "vocab_size must be in [1, 16777216]");
  EXPECT_ERROR_CONTAINS(ModelConfig::from_json(R"({"d_conv": 0})"), "d_conv must be in [1, 1024], got 0");
  EXPECT_ERROR_CONTAINS(ModelConfig::from_json(R"([1, 2])"), "not a JSON object");
}

// fla's widths: GLA keys d/2, RetNet values 2d (its rotated keys need an even
// head), Gated DeltaNet keys 0.75·d and values 1.5·d; each a whole multiple of
// n_head. compare steps widths by the smallest n_embd whose multiples all pass.
TEST(NnModel, LinearFamilyWidthsAreCheckedAndTheirStepIsTheSmallest) {
  ModelConfig c = tiny();
  c.n_head = 4, c.n_embd = 12;
  c.mixer = "gla";
  EXPECT_ERROR_CONTAINS(check_config(c),
                        "gla has key width 0.5·n_embd = 6, which must be a whole multiple of n_head 4");
  c.mixer = "retnet";
  EXPECT_ERROR_CONTAINS(check_config(c), "retnet applies rotary positions and needs an even key head dimension, got 3");
  c.mixer = "gated_deltanet", c.n_embd = 24;
  EXPECT_ERROR_CONTAINS(check_config(c), "gated_deltanet has key width 0.75·n_embd = 18");
  c.n_embd = 32;
  check_config(c);
  EXPECT_EQ(linear_widths(c).key, 24);
  EXPECT_EQ(linear_widths(c).value, 48);
  for (auto [mixer, step] : std::vector<std::pair<std::string, int64_t>>{
           {"linear", 4}, {"retnet", 8}, {"gla", 8}, {"deltanet", 4}, {"gated_deltanet", 16}}) {
    c.mixer = mixer;
    EXPECT_EQ(linear_width_multiple(c), step) << mixer;
    for (int64_t d = step; d <= 8 * step; d += step) {
      c.n_embd = d;
      EXPECT_NO_THROW(linear_widths(c)) << mixer << " " << d;
    }
  }
}

TEST(NnModel, ConfigJsonRoundTrip) {
  ModelConfig c = tiny("rope");
  c.ffn = "swiglu", c.norm = "dyt", c.dropout = 0.1, c.tie_weights = false;
  ModelConfig d = ModelConfig::from_json(c.to_json());
  EXPECT_EQ(d.to_json(), c.to_json());
  EXPECT_ERROR_CONTAINS(ModelConfig::from_json("{\"n_layer\": \"four\"}"), "bad value for 'n_layer'");
}

// Every field of the schema is written and read back, and none is left out.
TEST(NnModel, EveryConfigFieldRoundTripsThroughJson) {
  const ModelConfig c = tapelm::testing::changed_config();
  c.validate();
  const ModelConfig back = ModelConfig::from_json(c.to_json());
  EXPECT_EQ(back.to_json(), c.to_json());
  const auto changed = nlohmann::json::parse(c.to_json()), plain = nlohmann::json::parse(ModelConfig().to_json());
  EXPECT_EQ(changed.size(), nn::config_fields().size());
  for (const nn::ConfigField& f : nn::config_fields()) EXPECT_NE(changed[f.key], plain[f.key]) << f.key;
}

TEST(NnModel, DropoutOnlyInTrainMode) {
  ModelConfig c = tiny();
  c.dropout = 0.5;
  Generator g(5);
  GPT model(c, g);
  NoGradGuard ng;
  Tensor idx = from_ints({1, 2, 3, 4}, {1, 4});
  model.eval();
  EXPECT_EQ(model.forward(idx).to_vector(), model.forward(idx).to_vector());
  model.train();
  EXPECT_NE(model.forward(idx).to_vector(), model.forward(idx).to_vector());
}

// The model learns: cross-entropy on a repeated short sequence falls from
// about log(V) to far below it within 300 steps of plain SGD with momentum.
TEST(NnModel, TrainsOnARepeatedSequence) {
  ModelConfig c = tiny();
  c.n_embd = 32, c.n_head = 4, c.block_size = 16;
  Generator g(6);
  GPT model(c, g);
  std::vector<int32_t> pattern{1, 5, 2, 9, 3, 7, 4, 11};
  std::vector<int32_t> in, out;
  for (int b = 0; b < 4; ++b)
    for (int t = 0; t < 16; ++t) {
      in.push_back(pattern[(b + t) % 8]);
      out.push_back(pattern[(b + t + 1) % 8]);
    }
  Tensor idx = from_ints(in, {4, 16}), tgt = from_ints(out, {4, 16});
  std::map<const TensorImpl*, Tensor> momentum;
  double first = 0, last = 0;
  for (int step = 0; step < 300; ++step) {
    Tensor loss = model.loss(idx, tgt);
    backward(loss);
    NoGradGuard ng;
    for (auto& p : model.named_parameters()) {
      Tensor& m = momentum[p.tensor.impl_ptr().get()];
      m = m.defined() ? add(mul_scalar(m, 0.9), p.tensor.grad()) : p.tensor.grad().clone();
      add_(p.tensor, mul_scalar(m, -0.1));
    }
    model.zero_grad();
    last = loss.item();
    if (step == 0) first = last;
  }
  EXPECT_NEAR(first, std::log(13.0), 0.3);
  EXPECT_LT(last, 0.05) << "loss went from " << first << " to " << last;
}
