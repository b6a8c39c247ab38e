// Cross-check against PyTorch: tests/golden/*.safetensors are written by
// tests/golden/make_golden.py (plain PyTorch, float64). Each module and four
// 2-layer models are rebuilt here with the file's weights (loaded by name, so
// names must match nanoGPT's exactly) and must reproduce the outputs and every
// gradient. Error measure: max |ours − torch| / max |torch| over the tensor.
// Tolerances: 1e-12 in float64; 1e-5 in float32.
#include <fstream>

#include "autograd/safetensors.h"
#include "nn/attention.h"
#include "nn/feedforward.h"
#include "nn/gau.h"
#include "nn/linear_attention.h"
#include "nn/mixers.h"
#include "nn/model.h"
#include "nn/norm.h"
#include "tests/test_helpers.h"

using namespace tapelm;
using namespace tapelm::nn;

namespace {

std::string golden_path(const std::string& name) { return std::string(TAPELM_SOURCE_DIR) + "/tests/golden/" + name; }

double tolerance(DType dt) { return dt == DType::f64 ? 1e-12 : 1e-5; }

// max |a − b| / max |b|
double rel_error(const Tensor& ours, const Tensor& ref) {
  EXPECT_EQ(ours.shape(), ref.shape());
  double max_diff = 0, max_ref = 1e-30;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    max_diff = std::max(max_diff, std::fabs(ours.flat(i) - ref.flat(i)));
    max_ref = std::max(max_ref, std::fabs(ref.flat(i)));
  }
  return max_diff / max_ref;
}

void expect_close(const Tensor& ours, const Tensor& ref, DType dt, const std::string& what) {
  ASSERT_TRUE(ours.defined()) << what << ": no value computed";
  double err = rel_error(ours, ref);
  // TAPELM_GOLDEN_REPORT=1 prints every error reached (for docs/reliability.md's table).
  if (std::getenv("TAPELM_GOLDEN_REPORT")) std::printf("golden %-8s %-55s %.2e\n", dtype_name(dt), what.c_str(), err);
  EXPECT_LE(err, tolerance(dt)) << what << " (" << dtype_name(dt) << ")";
}

std::map<std::string, Tensor> with_prefix(const TensorFile& f, const std::string& prefix) {
  std::map<std::string, Tensor> out;
  for (auto& [k, v] : f.tensors)
    if (k.rfind(prefix, 0) == 0) out[k.substr(prefix.size())] = v;
  return out;
}

// Loads weights into `m`, runs forward(x) and backward(upstream), compares all.
void check_module(const std::string& name, Module& m, DType dt,
                  const std::function<Tensor(const Tensor&, const TensorFile&)>& forward) {
  TensorFile f = load_safetensors(golden_path(name + ".safetensors"));
  m.to(dt);
  m.load_state_dict(with_prefix(f, "param."));
  Tensor x = f.tensors.at("input.x").to(dt).requires_grad_();
  Tensor y = forward(x, f);
  expect_close(y, f.tensors.at("output.y"), dt, name + " output");
  backward(y, f.tensors.at("upstream.y").to(dt));
  expect_close(x.grad(), f.tensors.at("grad.input.x"), dt, name + " grad of input");
  for (auto& p : m.named_parameters())
    expect_close(p.tensor.grad(), f.tensors.at("grad." + p.name), dt, name + " grad of " + p.name);
}

class Golden : public ::testing::TestWithParam<DType> {};

TEST_P(Golden, LayerNorm) {
  LayerNorm m(8, true);
  check_module("layernorm", m, GetParam(), [&](const Tensor& x, const TensorFile&) { return m.forward(x); });
}

TEST_P(Golden, RMSNorm) {
  RMSNorm m(8);
  check_module("rmsnorm", m, GetParam(), [&](const Tensor& x, const TensorFile&) { return m.forward(x); });
}

// Row 0 of the input is inside the clamp (‖x‖·d^−½ ≈ 1e-7 < ε).
TEST_P(Golden, ScaleNorm) {
  ScaleNorm m;
  check_module("scalenorm", m, GetParam(), [&](const Tensor& x, const TensorFile&) { return m.forward(x); });
}

TEST_P(Golden, DyT) {
  DyT m(8, true);
  check_module("dyt", m, GetParam(), [&](const Tensor& x, const TensorFile&) { return m.forward(x); });
}

TEST_P(Golden, FeedForwardAllKinds) {
  for (std::string kind : {"gelu", "relu", "swiglu"}) {
    Generator g(0);
    FeedForward m(8, 16, kind, true, 0.0, g, nullptr);
    check_module("ffn_" + kind, m, GetParam(), [&](const Tensor& x, const TensorFile&) { return m.forward(x); });
  }
}

TEST_P(Golden, AttentionWithCausalAndPaddingMasks) {
  for (bool rope : {false, true}) {
    Generator g(0);
    MultiHeadAttention m(8, 2, true, 0.0, rope ? std::make_shared<Rotary>(4, 16) : nullptr, g, nullptr);
    check_module(rope ? "attention_rope" : "attention", m, GetParam(), [&](const Tensor& x, const TensorFile& f) {
      Tensor pad = f.tensors.at("input.pad_mask");
      MixerContext ctx{pad, position_ids(x.size(0), x.size(1), pad)};
      return m.forward(x, ctx, nullptr);
    });
  }
}

// The linear-attention family against plain-PyTorch sequential loops, with
// a padding mask (sequence 0 left-padded by 2, sequence 1 right-padded by 2).
TEST_P(Golden, LinearAttentionFamilyMixers) {
  struct V {
    std::string name, kind, fmap;
    bool normalize;
  };
  for (const V& v : {V{"linear_elu", "linear", "elu", true}, V{"linear_relu", "linear", "relu", true},
                     V{"linear_unnormalised", "linear", "elu", false}, V{"retnet", "retnet", "elu", true},
                     V{"gated_retention", "gated_retention", "elu", true}, V{"gla", "gla", "elu", true},
                     V{"deltanet", "deltanet", "elu", true}, V{"gated_deltanet", "gated_deltanet", "elu", true}}) {
    for (auto form : {RecurrenceForm::chunkwise, RecurrenceForm::parallel, RecurrenceForm::recurrent}) {
      ModelConfig c;
      c.n_embd = 8, c.n_head = 2, c.block_size = 16, c.mixer = v.kind, c.feature_map = v.fmap,
      c.normalize = v.normalize;
      Generator g(0);
      LinearRecurrentMixer m(c, form, g, 0.02);
      m.chunk = 3;
      check_module("mixer_" + v.name, m, GetParam(), [&](const Tensor& x, const TensorFile& f) {
        Tensor pad = f.tensors.at("input.pad_mask");
        MixerContext ctx{pad, position_ids(x.size(0), x.size(1), pad)};
        return m.forward(x, ctx, nullptr);
      });
    }
  }
}

TEST_P(Golden, GatedAttentionUnit) {
  ModelConfig c;
  c.n_embd = 8, c.gau_qk_dim = 8, c.block_size = 16, c.mixer = "gau";
  Generator g(0);
  GatedAttentionUnit m(c, training_form(c), g, 0.02);
  check_module("gau", m, GetParam(), [&](const Tensor& x, const TensorFile& f) {
    Tensor pad = f.tensors.at("input.pad_mask");
    return m.forward(x, MixerContext{pad, position_ids(x.size(0), x.size(1), pad)}, nullptr);
  });
}

// FLASH (chunk 3) in its parallel and chunkwise forms; the batch is left- and
// right-padded, so the chunkwise setting exercises the masked fallback too.
TEST_P(Golden, FlashMixedChunk) {
  for (std::string form : {"parallel", "chunkwise"}) {
    ModelConfig c;
    c.n_embd = 8, c.gau_qk_dim = 8, c.block_size = 16, c.mixer = "flash", c.chunk_size = 3, c.recurrent_form = form;
    Generator g(0);
    GatedAttentionUnit m(c, training_form(c), g, 0.02);
    check_module("flash", m, GetParam(), [&](const Tensor& x, const TensorFile& f) {
      Tensor pad = f.tensors.at("input.pad_mask");
      return m.forward(x, MixerContext{pad, position_ids(x.size(0), x.size(1), pad)}, nullptr);
    });
  }
}

// FLASH-pytorch's options on both: token shift and rotary on 4 of the 8 q/k
// features (interleaved pairs), with left and right padding; FLASH in both forms.
TEST_P(Golden, GauAndFlashWithTokenShiftAndPartialRotary) {
  for (std::string mixer : {"gau", "flash"})
    for (std::string form : {"parallel", "chunkwise"}) {
      ModelConfig c;
      c.n_embd = 8, c.gau_qk_dim = 8, c.block_size = 16, c.mixer = mixer, c.chunk_size = 3, c.recurrent_form = form;
      c.gau_token_shift = true, c.gau_rotary_dim = 4;
      Generator g(0);
      GatedAttentionUnit m(c, training_form(c), g, 0.02);
      check_module(mixer + "_shift_rotary", m, GetParam(), [&](const Tensor& x, const TensorFile& f) {
        Tensor pad = f.tensors.at("input.pad_mask");
        return m.forward(x, MixerContext{pad, position_ids(x.size(0), x.size(1), pad)}, nullptr);
      });
    }
}

// Mamba and Mamba-2 blocks against sequential PyTorch scans, in every form.
TEST_P(Golden, MambaAndMamba2) {
  for (std::string mixer : {"mamba", "mamba2"})
    for (std::string form : {"recurrent", "parallel", "chunkwise"}) {
      ModelConfig c;
      c.n_embd = 8, c.d_state = 4, c.ssm_headdim = 4, c.block_size = 16, c.mixer = mixer, c.recurrent_form = form;
      c.chunk_size = 3;
      Generator g(0);
      std::shared_ptr<TokenMixer> m = mixer_spec(mixer).make({.config = c,
                                                              .form = training_form(c),
                                                              .rotary = nullptr,
                                                              .gen = g,
                                                              .dropout_gen = nullptr,
                                                              .proj_std = 0.02});
      check_module(mixer, *m, GetParam(), [&](const Tensor& x, const TensorFile& f) {
        Tensor pad = f.tensors.at("input.pad_mask");
        return m->forward(x, MixerContext{pad, position_ids(x.size(0), x.size(1), pad)}, nullptr);
      });
    }
}

// An op of the GPU's chunk forms against its definition in PyTorch: the
// output and the gradient of every input.
void check_op(const std::string& name, DType dt, const std::function<Tensor(const std::vector<Tensor>&)>& op,
              const std::vector<std::string>& inputs) {
  TensorFile f = load_safetensors(golden_path(name + ".safetensors"));
  std::vector<Tensor> x;
  for (const std::string& in : inputs) x.push_back(f.tensors.at("input." + in).to(dt).requires_grad_());
  Tensor y = op(x);
  expect_close(y, f.tensors.at("output.y"), dt, name + " output");
  backward(y, f.tensors.at("upstream.y").to(dt));
  for (size_t i = 0; i < inputs.size(); ++i)
    expect_close(x[i].grad(), f.tensors.at("grad.input." + inputs[i]), dt, name + " grad of " + inputs[i]);
}

TEST_P(Golden, DecayScoresAndUnitTrilInverse) {
  check_op("op_decay_scores", GetParam(), [](const std::vector<Tensor>& x) { return decay_scores(x[0], x[1], x[2]); },
           {"q", "k", "L"});
  check_op("op_unit_tril_inverse", GetParam(), [](const std::vector<Tensor>& x) { return unit_tril_inverse(x[0]); },
           {"N"});
}

void check_model(const std::string& name, DType dt) {
  std::ifstream cfg_file(golden_path(name + ".json"));
  std::string json((std::istreambuf_iterator<char>(cfg_file)), std::istreambuf_iterator<char>());
  ModelConfig cfg = ModelConfig::from_json(json);
  TensorFile f = load_safetensors(golden_path(name + ".safetensors"));
  Generator g(0);
  GPT model(cfg, g);
  model.to(dt);
  model.load_state_dict(with_prefix(f, "param."));  // strict: names must match exactly
  Tensor idx = f.tensors.at("input.idx"), targets = f.tensors.at("input.targets");
  Tensor pad = f.tensors.at("input.pad_mask");
  Tensor logits = model.forward(idx, pad);
  expect_close(logits, f.tensors.at("output.logits"), dt, name + " logits");
  clear_tape();
  Tensor loss = model.loss(idx, targets, pad);
  expect_close(reshape(loss, {1}), f.tensors.at("output.loss"), dt, name + " loss");
  backward(loss);
  for (auto& p : model.named_parameters())
    expect_close(p.tensor.grad(), f.tensors.at("grad." + p.name), dt, name + " grad of " + p.name);
}

TEST_P(Golden, NanoGPTModel) { check_model("model_nanogpt", GetParam()); }
TEST_P(Golden, RopeRMSNormSwiGLUPaddedModel) { check_model("model_rope_rmsnorm_swiglu_padded", GetParam()); }
TEST_P(Golden, DyTSinusoidalReluPaddedModel) { check_model("model_dyt_sinusoidal_relu_padded", GetParam()); }
// FLASH-pytorch's FLASHTransformer: scaled sinusoid, ScaleNorm, FLASH layers
// with token shift and partial rotary, LayerNorm before the (tied) head.
TEST_P(Golden, FlashPytorchPaddedModel) { check_model("model_flash_pytorch_padded", GetParam()); }

INSTANTIATE_TEST_SUITE_P(Dtypes, Golden, ::testing::Values(DType::f64, DType::f32),
                         [](const ::testing::TestParamInfo<DType>& i) { return std::string(dtype_name(i.param)); });

TEST(GoldenNames, NanoGPTStateDictNamesAndShapes) {
  TensorFile f = load_safetensors(golden_path("model_nanogpt.safetensors"));
  Generator g(0);
  ModelConfig cfg;
  cfg.vocab_size = 11, cfg.block_size = 8, cfg.n_layer = 2, cfg.n_head = 2, cfg.n_embd = 16;
  GPT model(cfg, g);
  auto params = with_prefix(f, "param.");
  auto sd = model.state_dict();
  EXPECT_EQ(sd.size(), params.size());
  for (auto& p : sd) {
    ASSERT_TRUE(params.count(p.name)) << p.name;
    EXPECT_EQ(params[p.name].shape(), p.tensor.shape()) << p.name;
  }
  EXPECT_EQ(sd.front().name, "transformer.wte.weight");
  EXPECT_EQ(sd.back().name, "lm_head.weight");
  EXPECT_TRUE(model.lm_head->weight.same_storage(model.transformer->wte->weight));
}

}  // namespace
