// optim/: AdamW and SGD against torch.optim (golden files from
// tests/golden/make_golden.py), schedules, clipping, decay groups.
#include "autograd/safetensors.h"
#include "nn/model.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "tests/test_helpers.h"

using namespace tapelm;
using namespace tapelm::optim;

namespace {

struct TwoParams : nn::Module {
  Tensor w, b;
  TwoParams(const Tensor& w0, const Tensor& b0) {
    w = register_parameter("w", w0.clone());
    b = register_parameter("b", b0.clone());
  }
};

// Replays the golden run: same initial values, gradients and lr per step.
void replay(const std::string& file, const std::function<std::unique_ptr<Optimizer>(std::vector<ParamGroup>)>& make) {
  TensorFile f = load_safetensors(std::string(TAPELM_SOURCE_DIR) + "/tests/golden/" + file);
  TwoParams m(f.tensors.at("param.w"), f.tensors.at("param.b"));
  auto named = m.named_parameters();
  std::vector<ParamGroup> groups{{"decay", {named[0]}, 0, 0.1}, {"no_decay", {named[1]}, 0, 0.0}};
  auto opt = make(groups);
  for (int s = 0; s < 20; ++s) {
    opt->set_lr(f.tensors.at(fmt::format("lr.{}", s)).item());
    m.w.set_grad(f.tensors.at(fmt::format("grad.{}.w", s)).clone());
    m.b.set_grad(f.tensors.at(fmt::format("grad.{}.b", s)).clone());
    opt->step();
  }
  for (auto [ours, ref] : {std::pair{m.w, f.tensors.at("final.w")}, std::pair{m.b, f.tensors.at("final.b")}})
    for (int64_t i = 0; i < ref.numel(); ++i)
      EXPECT_NEAR(ours.flat(i), ref.flat(i), 1e-6 * std::max(1.0, std::fabs(ref.flat(i)))) << file << " " << i;
  EXPECT_EQ(opt->steps_taken(), 20);
}

}  // namespace

TEST(Optim, AdamWMatchesTorchOver20StepsWithTwoDecayGroups) {
  replay("adamw.safetensors",
         [](std::vector<ParamGroup> g) { return std::make_unique<AdamW>(std::move(g), 0.9, 0.95, 1e-8); });
}

TEST(Optim, SGDMomentumMatchesTorch) {
  replay("sgd.safetensors", [](std::vector<ParamGroup> g) { return std::make_unique<SGD>(std::move(g), 0.9); });
}

TEST(Optim, AdamWStateRoundTripContinuesIdentically) {
  Generator g(1);
  auto run = [&](bool save_midway) {
    TwoParams m(from_vector({1, 2, 3, 4}, {2, 2}), from_vector({0.5, -0.5}, {2}));
    auto groups = decay_groups(m, 0.1);
    auto opt = std::make_unique<AdamW>(groups);
    for (int s = 0; s < 10; ++s) {
      if (save_midway && s == 5) {
        TensorFile st = opt->state();
        opt = std::make_unique<AdamW>(groups);
        opt->load_state(st);
      }
      m.w.set_grad(full({2, 2}, 0.1 * (s + 1)));
      m.b.set_grad(full({2}, -0.2 * s));
      opt->step();
    }
    return m.w.to_vector();
  };
  EXPECT_EQ(run(false), run(true));
}

TEST(Optim, DecayGroupsFollowNanoGPT) {
  nn::ModelConfig c;
  Generator g(0);
  nn::GPT model(c, g);
  auto groups = decay_groups(model, 0.1);
  ASSERT_EQ(groups.size(), 2u);
  for (auto& p : groups[0].params) EXPECT_GE(p.tensor.dim(), 2) << p.name;
  for (auto& p : groups[1].params) EXPECT_EQ(p.tensor.dim(), 1) << p.name;
  // nanoGPT: "num decayed parameter tensors: 18, with 800,768 parameters" for L4 D128 V65
  // (wte tied with lm_head, counted once; wpe, 4×(c_attn, c_proj, c_fc, c_proj)).
  int64_t n = 0;
  for (auto& p : groups[0].params) n += p.tensor.numel();
  EXPECT_EQ(groups[0].params.size(), 18u);
  EXPECT_EQ(n, 65 * 128 + 64 * 128 + 4 * (128 * 384 + 128 * 128 + 128 * 512 + 512 * 128));
  EXPECT_EQ(groups[0].weight_decay, 0.1);
  EXPECT_EQ(groups[1].weight_decay, 0.0);
  EXPECT_NE(describe_groups(groups).find("decay: 18 tensors"), std::string::npos);
}

// mamba_ssm marks A_log, D and dt_bias `_no_weight_decay` (fla's GatedDeltaNet its
// A_log and dt_bias); Mamba-1's A_log is a matrix [d_inner, N], which the
// dimension rule alone would decay.
TEST(Optim, MambaAndGatedDeltaNetNeverDecayALogDOrDtBias) {
  for (std::string mixer : {"mamba", "mamba2", "gated_deltanet"}) {
    nn::ModelConfig c;
    c.mixer = mixer, c.n_layer = 2, c.n_embd = 16, c.ssm_headdim = 8;
    Generator g(0);
    nn::GPT model(c, g);
    auto groups = decay_groups(model, 0.1);
    int64_t exempt = 0;
    for (auto& p : groups[1].params)
      for (std::string leaf : {".A_log", ".D", ".dt_bias"})
        exempt += p.name.size() > leaf.size() && p.name.compare(p.name.size() - leaf.size(), leaf.size(), leaf) == 0;
    EXPECT_EQ(exempt, mixer == "mamba2" ? 2 * 3 : 2 * 2) << mixer;
    for (auto& p : groups[0].params) {
      EXPECT_EQ(p.name.find("A_log"), std::string::npos) << p.name;
      EXPECT_EQ(p.name.find("dt_bias"), std::string::npos) << p.name;
    }
  }
}

TEST(Optim, WarmupCosineSchedule) {
  Schedule s{"cosine", 1e-3, 1e-4, 10, 110};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-3 * 1 / 11);
  EXPECT_DOUBLE_EQ(s.at(9), 1e-3 * 10 / 11);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  EXPECT_NEAR(s.at(60), 1e-4 + 0.5 * (1e-3 - 1e-4), 1e-15);
  EXPECT_DOUBLE_EQ(s.at(110), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(500), 1e-4);
  EXPECT_DOUBLE_EQ((Schedule{"constant", 3e-4}).at(77), 3e-4);
  EXPECT_ERROR_CONTAINS((Schedule{"linear"}).at(0), "unknown kind 'linear'");
}

TEST(Optim, ClipGradNormReturnsNormAndScales) {
  TwoParams m(zeros({2, 2}), zeros({2}));
  m.w.set_grad(from_vector({3, 0, 0, 0}, {2, 2}));
  m.b.set_grad(from_vector({0, 4}, {2}));
  auto groups = decay_groups(m, 0.0);
  EXPECT_NEAR(clip_grad_norm(groups, 10.0), 5.0, 1e-6);
  EXPECT_FLOAT_EQ(m.w.grad().flat(0), 3.0f);  // under the limit: untouched
  EXPECT_NEAR(clip_grad_norm(groups, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(m.w.grad().flat(0), 3.0 / 5.0, 1e-6);
  EXPECT_NEAR(m.b.grad().flat(1), 4.0 / 5.0, 1e-6);
}
