// The CUDA device against the CPU. Every op with a CUDA kernel or on the CPU
// fallback list runs on fresh random inputs at awkward sizes on the GPU in
// float32 and on the CPU in float64; the output and every input gradient of
// L = Σ f(x) ⊙ R must agree to ‖a − b‖/‖b‖ ≤ 1e-5 (bound fixed before
// measuring; cuBLAS in its pedantic mode: no TF32). New GPU buffers are
// poisoned (TAPELM_CUDA_POISON: all bits set, a NaN in every float) and a NaN
// fails, so an element a kernel leaves unwritten fails. Without a GPU (CI)
// these tests skip themselves with the reason; the op table test runs anyway.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <regex>
#include <set>

#include "autograd/autograd.h"
#include "autograd/cuda/runtime.h"
#include "autograd/device_dispatch.h"
#include "nn/mixers.h"
#include "nn/model.h"
#include "optim/optimizer.h"
#include "tests/test_helpers.h"

using namespace tapelm;

namespace {

// Before any GPU buffer exists: poison every new one.
const bool g_poisoned = [] { return setenv("TAPELM_CUDA_POISON", "1", 1) == 0; }();

#define REQUIRE_GPU()                                                        \
  do {                                                                       \
    if (!cuda_available()) GTEST_SKIP() << "no GPU here: " << why_no_cuda(); \
  } while (0)

// The GPU's products in bf16 for a scope, fp32 again after it.
struct Bf16Scope {
  Bf16Scope() { set_gpu_precision(Precision::bf16); }
  ~Bf16Scope() { set_gpu_precision(Precision::fp32); }
};

constexpr double kFp32Bound = 1e-5;
constexpr double kBf16Bound = 1e-2;

// ‖a − b‖ / ‖b‖ (‖a − b‖ when b is 0); infinite if any element is NaN.
double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    ref += b[i] * b[i];
  }
  return ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

struct Input {
  Shape shape;
  enum Kind { floating, positive, ids, mask } kind = floating;
  int64_t high = 0;  // ids: values in [0, high); mask: a fraction·1000 of trues
};

// Runs f on the CPU in float64 and on the GPU in float32 with the same inputs
// and checks the output and the gradient of every floating input.
void check_op(const std::string& name, const std::vector<Input>& inputs,
              const std::function<Tensor(const std::vector<Tensor>&)>& f, double bound = kFp32Bound) {
  SCOPED_TRACE(name);
  static uint64_t seed = 1;
  Generator gen(seed++);
  std::vector<Tensor> cpu, gpu;
  for (const Input& in : inputs) {
    Tensor t;
    if (in.kind == Input::ids) {
      t = randint(in.shape, in.high, gen);
    } else if (in.kind == Input::mask) {
      t = Tensor::empty(in.shape, DType::b8);
      for (int64_t i = 0; i < t.numel(); ++i) t.data<uint8_t>()[i] = gen.uniform() * 1000 < in.high;
    } else {
      t = randn(in.shape, gen, DType::f64);
      if (in.kind == Input::positive)
        for (int64_t i = 0; i < t.numel(); ++i) t.data<double>()[i] = 0.5 + std::fabs(t.data<double>()[i]);
      // The GPU reads the float32 rounding of the same numbers.
      t = t.to(DType::f32).to(DType::f64);
    }
    const bool grad = is_floating(t.dtype());
    Tensor c = t, g = is_floating(t.dtype()) ? t.to(DType::f32).to(Device::cuda) : t;
    if (grad) c.requires_grad_(), g.requires_grad_();
    cpu.push_back(c), gpu.push_back(g);
  }
  // One device's forward and backward, then the other's: backward() runs
  // (and then clears) the whole tape, whatever graph a node belongs to.
  Tensor yc = f(cpu);
  Tensor R = randn(yc.shape(), gen, DType::f64);
  R = R.to(DType::f32).to(DType::f64);
  backward(sum(mul(yc, R)));
  Tensor yg = f(gpu);
  ASSERT_TRUE(yg.is_cuda()) << name << " gave a " << device_name(yg.device()) << " tensor";
  ASSERT_EQ(yc.shape(), yg.shape());
  EXPECT_LE(relative_error(yg.to_vector(), yc.to_vector()), bound) << "output";
  backward(sum(mul(yg, R.to(DType::f32).to(Device::cuda))));
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!cpu[i].requires_grad()) continue;
    ASSERT_TRUE(cpu[i].grad().defined() && gpu[i].grad().defined()) << "input " << i;
    EXPECT_TRUE(gpu[i].grad().is_cuda()) << "input " << i;
    EXPECT_LE(relative_error(gpu[i].grad().to_vector(), cpu[i].grad().to_vector()), bound) << "gradient of input " << i;
  }
}

}  // namespace

// Every op that ops.h declares has a CUDA kernel or a place on the CPU
// fallback list, and no name is on both.
TEST(Cuda, EveryOpHasAKernelOrANamedFallback) {
  // TAPELM_SOURCE_DIR in the environment: the tests run from a copy on another machine.
  const char* src = std::getenv("TAPELM_SOURCE_DIR");
  std::ifstream in(std::string(src ? src : TAPELM_SOURCE_DIR) + "/autograd/ops.h");
  ASSERT_TRUE(in.good()) << "cannot read autograd/ops.h";
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::set<std::string> declared;
  const std::regex decl(R"(\n(?:Tensor|std::vector<Tensor>) (\w+)\()");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), decl); it != std::sregex_iterator(); ++it)
    declared.insert((*it)[1]);
  ASSERT_GT(declared.size(), 50u);
  std::set<std::string> kernels(cuda_kernel_ops().begin(), cuda_kernel_ops().end()),
      fallbacks(cpu_fallback_ops().begin(), cpu_fallback_ops().end());
  for (const std::string& op : declared)
    EXPECT_TRUE(kernels.count(op) + fallbacks.count(op) == 1)
        << op << " needs a CUDA kernel (cuda_kernel_ops) or a place on the CPU fallback list (cpu_fallback_ops), once";
  for (const std::string& op : kernels) EXPECT_TRUE(declared.count(op)) << op << " is listed but not in ops.h";
  for (const std::string& op : fallbacks) EXPECT_TRUE(declared.count(op)) << op << " is listed but not in ops.h";
}

TEST(Cuda, WithoutAGpuCudaIsOneClearError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is here";
  EXPECT_ERROR_CONTAINS(to_device(zeros({2}), Device::cuda), "to_device: ");
  EXPECT_ERROR_CONTAINS(require_cuda("train --device cuda"), "train --device cuda: ");
}

TEST(Cuda, HostReadsOfDeviceMemoryAreNamedErrors) {
  REQUIRE_GPU();
  Tensor t = ones({3, 5}).to(Device::cuda);
  EXPECT_ERROR_CONTAINS(t.data<float>(),
                        "tensor: host code read a cuda tensor (float32 [3,5]) through data<float32>()");
  EXPECT_EQ(t.to_vector(), std::vector<double>(15, 1.0));
  EXPECT_ERROR_CONTAINS(add(t, ones({3, 5})), "add: inputs on different devices");
}

TEST(Cuda, ElementwiseOpsMatchTheCpu) {
  REQUIRE_GPU();
  const Shape s{3, 7, 13};
  using F = Tensor (*)(const Tensor&);
  const std::vector<std::pair<std::string, F>> unary = {
      {"neg", neg},   {"exp", exp},   {"tanh", tanh},           {"sigmoid", sigmoid},   {"relu", relu},
      {"gelu", gelu}, {"silu", silu}, {"gelu_tanh", gelu_tanh}, {"softplus", softplus}, {"square", square}};
  for (auto& [name, fn] : unary) check_op(name, {{s}}, [fn](const std::vector<Tensor>& x) { return fn(x[0]); });
  // A length that is a multiple of 4: the float4 kernels.
  for (auto& [name, fn] : unary)
    check_op(name + " (float4)", {{{3, 4, 11}}}, [fn](const std::vector<Tensor>& x) { return fn(x[0]); });
  check_op("log", {{s, Input::positive}}, [](const std::vector<Tensor>& x) { return log(x[0]); });
  check_op("sqrt", {{s, Input::positive}}, [](const std::vector<Tensor>& x) { return sqrt(x[0]); });
  check_op("elu", {{s}}, [](const std::vector<Tensor>& x) { return elu(x[0], 0.7); });
  check_op("scalars", {{s, Input::positive}}, [](const std::vector<Tensor>& x) {
    return add(rdiv_scalar(2.0, x[0]), add(pow(x[0], 1.5), rsub_scalar(3.0, add_scalar(mul_scalar(x[0], 0.3), 1.0))));
  });
  check_op("add broadcast", {{{3, 7, 13}}, {{7, 1}}}, [](const std::vector<Tensor>& x) { return add(x[0], x[1]); });
  check_op("sub broadcast", {{{13}}, {{3, 1, 13}}}, [](const std::vector<Tensor>& x) { return sub(x[0], x[1]); });
  check_op("mul broadcast", {{{3, 7, 13}}, {{3, 1, 1}}}, [](const std::vector<Tensor>& x) { return mul(x[0], x[1]); });
  check_op("masked_fill broadcast", {{{4, 7, 9}}, {{4, 1, 9}, Input::mask, 300}},
           [](const std::vector<Tensor>& x) { return masked_fill(x[0], x[1], -2.0); });
  check_op("div broadcast", {{{3, 7, 13}}, {{1, 13}, Input::positive}},
           [](const std::vector<Tensor>& x) { return div(x[0], x[1]); });
}

TEST(Cuda, ReductionsAndShapeOpsMatchTheCpu) {
  REQUIRE_GPU();
  check_op("sum axes", {{{5, 9, 11}}}, [](const std::vector<Tensor>& x) { return sum(x[0], {0, 2}, true); });
  check_op("sum all", {{{517, 301}}}, [](const std::vector<Tensor>& x) { return reshape(sum(x[0]), {1}); });
  check_op("mean", {{{5, 9, 11}}}, [](const std::vector<Tensor>& x) { return mean(x[0], {1}); });
  check_op("sum long rows", {{{3, 2051}}}, [](const std::vector<Tensor>& x) { return sum(x[0], {1}); });
  check_op("permute", {{{2, 3, 5, 7}}}, [](const std::vector<Tensor>& x) { return permute(x[0], {2, 0, 3, 1}); });
  check_op("slice", {{{4, 9, 5}}}, [](const std::vector<Tensor>& x) { return slice(x[0], 1, 2, 7); });
  check_op("concat", {{{4, 3, 5}}, {{4, 2, 5}}}, [](const std::vector<Tensor>& x) { return concat({x[0], x[1]}, 1); });
  check_op("split", {{{4, 9, 5}}}, [](const std::vector<Tensor>& x) {
    auto parts = split(x[0], {2, 3, 4}, 1);
    return add(mul_scalar(parts[0], 2.0), slice(parts[2], 1, 0, 2));
  });
  check_op("expand", {{{3, 1, 5}}}, [](const std::vector<Tensor>& x) { return expand(x[0], {2, 3, 4, 5}); });
  check_op("max (fallback)", {{{4, 9, 5}}}, [](const std::vector<Tensor>& x) { return max(x[0], {1}); });
  check_op("cumsum", {{{4, 9, 5}}}, [](const std::vector<Tensor>& x) { return cumsum(x[0], 1); });
  check_op("cumsum, last axis", {{{3, 70}}}, [](const std::vector<Tensor>& x) { return cumsum(x[0], -1); });
}

TEST(Cuda, ProductsMatchTheCpu) {
  REQUIRE_GPU();
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const Shape a = ta ? Shape{3, 37, 29} : Shape{3, 29, 37}, b = tb ? Shape{3, 43, 37} : Shape{3, 37, 43};
      check_op(fmt::format("matmul batched ta={} tb={}", ta, tb), {{a}, {b}},
               [ta, tb](const std::vector<Tensor>& x) { return matmul(x[0], x[1], ta, tb); });
    }
  check_op("matmul shared right", {{{2, 3, 29, 37}}, {{37, 41}}},
           [](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); });
  check_op("matmul partial broadcast", {{{2, 3, 29, 37}}, {{2, 1, 37, 41}}},
           [](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); });
  check_op("linear with bias", {{{3, 19, 37}}, {{53, 37}}, {{53}}},
           [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); });
  check_op("linear without bias", {{{57, 37}}, {{53, 37}}},
           [](const std::vector<Tensor>& x) { return linear(x[0], x[1], Tensor()); });
  // Through an activation: the CPU composes the two ops, the GPU applies it making the operand.
  for (Activation a : {Activation::relu, Activation::gelu, Activation::gelu_tanh, Activation::silu})
    check_op(fmt::format("linear through activation {}", (int)a), {{{3, 19, 37}}, {{53, 37}}, {{53}}},
             [a](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2], a); });
}

TEST(Cuda, RowOpsMatchTheCpu) {
  REQUIRE_GPU();
  check_op("softmax", {{{5, 7, 67}}}, [](const std::vector<Tensor>& x) { return softmax(x[0]); });
  check_op("log_softmax", {{{5, 7, 67}}}, [](const std::vector<Tensor>& x) { return log_softmax(x[0]); });
  check_op("layer_norm", {{{5, 7, 67}}, {{67}}, {{67}}},
           [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2]); });
  check_op("layer_norm without bias", {{{5, 7, 67}}, {{67}}},
           [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], Tensor()); });
  check_op("rms_norm", {{{5, 7, 67}}, {{67}}}, [](const std::vector<Tensor>& x) { return rms_norm(x[0], x[1]); });
  check_op("scale_norm (fallback)", {{{5, 7, 67}}, {{1}}},
           [](const std::vector<Tensor>& x) { return scale_norm(x[0], x[1]); });
  check_op("embedding with repeats", {{{11, 37}}, {{4, 29}, Input::ids, 11}},
           [](const std::vector<Tensor>& x) { return embedding(x[0], x[1]); });
  Generator gen(5);
  Tensor targets = randint({4, 29}, 67, gen);
  for (int64_t i = 0; i < targets.numel(); i += 7) targets.data<int32_t>()[i] = kIgnoreIndex;
  check_op("cross_entropy with ignored rows", {{{4, 29, 67}}},
           [targets](const std::vector<Tensor>& x) { return reshape(cross_entropy(x[0], targets), {1}); });
}

// Attention at awkward sizes (T and hd odd, Tq ≠ Tk as in decoding), causal
// with left padding (a query that sees only padding: a row of zeros) and
// right padding; and the mask built on the GPU equals the CPU's.
TEST(Cuda, AttentionMatchesTheCpu) {
  REQUIRE_GPU();
  const int64_t B = 3, H = 3, hd = 7;
  for (auto [Tq, Tk] : {std::pair<int64_t, int64_t>{13, 13}, {5, 13}}) {
    Tensor pad = zeros({B, Tk}, DType::b8);
    for (int64_t j = 0; j < 2; ++j) pad.data<uint8_t>()[1 * Tk + j] = 1;        // left padding
    for (int64_t j = Tk - 3; j < Tk; ++j) pad.data<uint8_t>()[2 * Tk + j] = 1;  // right padding
    const Tensor mask = attention_mask(B, Tq, Tk, pad);
    EXPECT_EQ(attention_mask(B, Tq, Tk, pad, -1, Device::cuda).to(Device::cpu).to_vector(), mask.to_vector());
    check_op(
        fmt::format("attention Tq={} Tk={}", Tq, Tk), {{{B, Tq, H, hd}}, {{B, Tk, H, hd}}, {{B, Tk, H, hd}}},
        [mask](const std::vector<Tensor>& x) { return scaled_dot_product_attention(x[0], x[1], x[2], mask, 0.3); });
  }
  check_op("attention without a mask", {{{2, 9, 2, 5}}, {{2, 11, 2, 5}}, {{2, 11, 2, 5}}},
           [](const std::vector<Tensor>& x) { return scaled_dot_product_attention(x[0], x[1], x[2], Tensor(), 0.5); });
}

// Dropout on the GPU draws its own mask (not the CPU's): about p of the
// elements dropped, the rest scaled by exactly 1/(1 − p), the gradient
// through the same mask, and the same generator state gives the same bits.
TEST(Cuda, DropoutKeepsTheRateAndRepeatsFromTheGeneratorState) {
  REQUIRE_GPU();
  Generator data(11);
  const Tensor x = randn({7, 131, 113}, data);  // 103,621 elements: not a multiple of a block
  const double p = 0.3;
  auto run = [&](uint64_t seed) {
    Generator gen(seed);
    Tensor xg = x.to(Device::cuda);
    xg.requires_grad_();
    Tensor y = dropout(xg, p, true, gen);
    backward(sum(mul(y, full(x.shape(), 2.0, DType::f32, Device::cuda))));
    return std::make_pair(y.to_vector(), xg.grad().to_vector());
  };
  const auto [y, g] = run(5);
  const std::vector<double> xv = x.to_vector();
  int64_t dropped = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    ASSERT_FALSE(std::isnan(y[i]));
    if (g[i] == 0) {
      ++dropped;
      EXPECT_EQ(y[i], 0.0);
    } else {
      EXPECT_NEAR(g[i], 2.0 / (1 - p), 1e-6);
      EXPECT_NEAR(y[i], xv[i] / (1 - p), 1e-6 * (1 + std::fabs(xv[i])));
    }
  }
  EXPECT_NEAR((double)dropped / y.size(), p, 0.01);  // 7 standard deviations of a binomial at this n
  EXPECT_EQ(run(5).first, y);
  EXPECT_NE(run(6).first, y);
}

TEST(Cuda, FallbackOpsMatchTheCpuAndAreCounted) {
  REQUIRE_GPU();
  reset_fallback_counts();
  check_op("where (fallback)", {{{4, 9}, Input::mask, 300}, {{4, 9}}, {{4, 9}}},
           [](const std::vector<Tensor>& x) { return where(x[0], x[1], x[2]); });
  check_op("scale_norm (fallback)", {{{3, 7, 5}}, {{1}, Input::positive}},
           [](const std::vector<Tensor>& x) { return scale_norm(x[0], x[1]); });
  EXPECT_EQ(fallback_counts()["scale_norm"], 1);  // the GPU's forward; the CPU's is no fallback
  EXPECT_EQ(fallback_counts()["where"], 1);
}

// The short causal convolution (Mamba's): awkward sizes, a kernel longer
// than the sequence, one tap, with and without a bias; no fallback.
TEST(Cuda, CausalConvolutionMatchesTheCpu) {
  REQUIRE_GPU();
  reset_fallback_counts();
  check_op("causal_conv1d", {{{3, 37, 29}}, {{29, 4}}, {{29}}},
           [](const std::vector<Tensor>& x) { return causal_conv1d(x[0], x[1], x[2]); });
  check_op("causal_conv1d without bias, k > t", {{{2, 3, 5}}, {{5, 6}}},
           [](const std::vector<Tensor>& x) { return causal_conv1d(x[0], x[1]); });
  check_op("causal_conv1d, one tap, many rows", {{{4, 300, 3}}, {{3, 1}}, {{3}}},
           [](const std::vector<Tensor>& x) { return causal_conv1d(x[0], x[1], x[2]); });
  EXPECT_EQ(fallback_counts().count("causal_conv1d"), 0u);
}

// The linear-recurrence core (linear attention, RetNet, gated retention,
// GLA, Mamba-2, Mamba's unfused forms): a vector decay and a decay per step,
// widths under and over a 32-column tile, one value column (several slices a
// block), a key width past 256 (32 rows a thread), sequences across the
// backward's 64-step checkpoints; every form (the chunkwise and parallel
// forms are products of chunks, with decay_scores for a vector decay; in
// bf16 mode too, where their products stay fp32: kChunkProducts, so within
// the fp32 bound); no fallback.
TEST(Cuda, GatedRecurrenceMatchesTheCpu) {
  REQUIRE_GPU();
  reset_fallback_counts();
  auto recurrence = [](RecurrenceForm form) {
    // g = −(0.5 + |x|)/4: log-decays in (−∞, −0.125], as the mixers make them.
    return [form](const std::vector<Tensor>& x) {
      return gated_recurrence(x[0], x[1], x[2], mul_scalar(x[3], -0.25), form, 16);
    };
  };
  for (const RecurrenceForm form : {RecurrenceForm::recurrent, RecurrenceForm::parallel, RecurrenceForm::chunkwise})
    check_op("gated_recurrence, vector decay",
             {{{2, 3, 37, 5}}, {{2, 3, 37, 5}}, {{2, 3, 37, 7}}, {{2, 3, 37, 5}, Input::positive}}, recurrence(form));
  // A decay per step: the chunkwise and parallel forms run as products of chunks.
  for (const RecurrenceForm form : {RecurrenceForm::recurrent, RecurrenceForm::parallel, RecurrenceForm::chunkwise})
    check_op("gated_recurrence, decay per step, two column tiles, past a checkpoint",
             {{{2, 2, 70, 19}}, {{2, 2, 70, 19}}, {{2, 2, 70, 45}}, {{2, 2, 70, 1}, Input::positive}},
             recurrence(form));
  {
    const Bf16Scope bf16;
    check_op("gated_recurrence, decay per step, products of chunks in bf16 mode",
             {{{2, 3, 50, 16}}, {{2, 3, 50, 16}}, {{2, 3, 50, 24}}, {{2, 3, 50, 1}, Input::positive}},
             recurrence(RecurrenceForm::chunkwise), kFp32Bound);
  }
  {
    const Bf16Scope bf16;
    check_op("gated_recurrence, vector decay, products of chunks in bf16 mode",
             {{{2, 3, 50, 16}}, {{2, 3, 50, 16}}, {{2, 3, 50, 24}}, {{2, 3, 50, 16}, Input::positive}},
             recurrence(RecurrenceForm::chunkwise), kFp32Bound);
  }
  check_op("gated_recurrence, vector decay, two column tiles, past a checkpoint",
           {{{1, 2, 70, 40}}, {{1, 2, 70, 40}}, {{1, 2, 70, 33}}, {{1, 2, 70, 40}, Input::positive}},
           recurrence(RecurrenceForm::chunkwise));
  for (const RecurrenceForm form : {RecurrenceForm::recurrent, RecurrenceForm::chunkwise})
    check_op("gated_recurrence, one value column (Mamba's unfused scan)",
             {{{3, 5, 130, 16}}, {{3, 5, 130, 16}}, {{3, 5, 130, 1}}, {{3, 5, 130, 16}, Input::positive}},
             recurrence(form));
  // The chunk form's scores under a vector decay: chunks of 1 and of 37 steps, a key width of 70.
  check_op("decay_scores", {{{3, 2, 37, 70}}, {{3, 2, 37, 70}}, {{3, 2, 37, 70}}},
           [](const std::vector<Tensor>& x) { return decay_scores(x[0], x[1], mul_scalar(x[2], 0.1)); });
  check_op("decay_scores, chunks of one step", {{{4, 1, 5}}, {{4, 1, 5}}, {{4, 1, 5}}},
           [](const std::vector<Tensor>& x) { return decay_scores(x[0], x[1], x[2]); });
  check_op("gated_recurrence, key width 300",
           {{{1, 2, 6, 300}}, {{1, 2, 6, 300}}, {{1, 2, 6, 3}}, {{1, 2, 6, 1}, Input::positive}},
           recurrence(RecurrenceForm::chunkwise));
  EXPECT_EQ(fallback_counts().count("gated_recurrence"), 0u);
}

// The delta rule (DeltaNet, Gated DeltaNet): a plain and a gated decay,
// widths under and over a 32-column tile, sequences across the backward's
// 64-step checkpoints, a key width past 256; every form (the chunkwise and
// parallel forms are products of chunks, which stay fp32 in bf16 mode); no
// fallback.
TEST(Cuda, DeltaRuleMatchesTheCpu) {
  REQUIRE_GPU();
  reset_fallback_counts();
  // k normalised per step as the mixers do (‖k‖ = 1 keeps I − βkkᵀ a contraction), β in (0, 1), g ≤ 0.
  auto delta = [](RecurrenceForm form) {
    return [form](const std::vector<Tensor>& x) {
      const Tensor k = div(x[1], sqrt(sum(square(x[1]), {-1}, true)));
      return delta_rule(x[0], k, x[2], sigmoid(x[3]), mul_scalar(x[4], -0.1), form, 16);
    };
  };
  auto inputs = [](int64_t B, int64_t H, int64_t T, int64_t K, int64_t V) {
    return std::vector<Input>{
        {{B, H, T, K}}, {{B, H, T, K}}, {{B, H, T, V}}, {{B, H, T, 1}}, {{B, H, T, 1}, Input::positive}};
  };
  for (const RecurrenceForm form : {RecurrenceForm::recurrent, RecurrenceForm::parallel, RecurrenceForm::chunkwise})
    check_op("delta_rule", inputs(2, 3, 37, 5, 7), delta(form));
  // The recurrent kernel and the products of chunks (the UT transform) at awkward widths.
  for (const RecurrenceForm form : {RecurrenceForm::recurrent, RecurrenceForm::chunkwise}) {
    check_op("delta_rule, two column tiles, past a checkpoint", inputs(2, 2, 70, 19, 45), delta(form));
    check_op("delta_rule, key width 300", inputs(1, 2, 6, 300, 3), delta(form));
  }
  {
    const Bf16Scope bf16;
    check_op("delta_rule, products of chunks in bf16 mode", inputs(2, 3, 50, 16, 24), delta(RecurrenceForm::chunkwise),
             kFp32Bound);
  }
  // The UT transform alone: chunks of 1, 16 and 37 steps.
  for (const int64_t C : {1, 16, 37})
    check_op("unit_tril_inverse", {{{3, 2, C, C}}},
             [](const std::vector<Tensor>& x) { return unit_tril_inverse(mul_scalar(x[0], 0.2)); });
  EXPECT_EQ(fallback_counts().count("delta_rule"), 0u);
}

// Mamba's selective scan: state sizes for each of the kernel's bounds (16,
// 64, 256), channels that leave a warp part-empty and span two blocks,
// sequences of one chunk and of several run in parallel (64 steps each); no
// fallback.
TEST(Cuda, SelectiveScanMatchesTheCpu) {
  REQUIRE_GPU();
  reset_fallback_counts();
  // Δ > 0 and A < 0, as Mamba makes them (softplus, −exp).
  auto scan = [](const std::vector<Tensor>& x) {
    return selective_scan(x[0], mul_scalar(x[1], 0.3), mul_scalar(x[2], -1), x[3], x[4]);
  };
  auto inputs = [](int64_t B, int64_t T, int64_t D, int64_t N) {
    return std::vector<Input>{
        {{B, T, D}}, {{B, T, D}, Input::positive}, {{D, N}, Input::positive}, {{B, T, N}}, {{B, T, N}}};
  };
  check_op("selective_scan, N 5, 29 channels", inputs(2, 37, 29, 5), scan);
  check_op("selective_scan, N 16, three chunks, the last part-filled", inputs(3, 130, 70, 16), scan);
  check_op("selective_scan, N 64, one step", inputs(2, 1, 33, 64), scan);
  check_op("selective_scan, N 40, two blocks", inputs(2, 9, 131, 40), scan);
  check_op("selective_scan, N 100", inputs(1, 5, 3, 100), scan);
  EXPECT_EQ(fallback_counts().count("selective_scan"), 0u);
}

// Decoding on the GPU: the carried states stay there, and a sequence run in
// pieces gives what it gives whole (each core), within the fp32 bound.
TEST(Cuda, CarriedStatesContinueOnTheGpu) {
  REQUIRE_GPU();
  NoGradGuard ng;
  Generator gen(31);
  auto on_gpu = [](const Tensor& t) { return t.to(Device::cuda); };
  auto magnitudes = [&](const Shape& shape, double scale) {  // scale·|x|, x normal
    Tensor t = randn(shape, gen);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = (float)(scale * std::fabs(t.data<float>()[i]));
    return t;
  };
  auto pieces = [](const std::function<Tensor(int64_t, int64_t, Tensor*)>& run, int64_t T) {
    Tensor state;
    std::vector<Tensor> parts;
    for (auto [a, b] : std::vector<std::pair<int64_t, int64_t>>{{0, 4}, {4, 5}, {5, T}})
      parts.push_back(run(a, b, &state));
    EXPECT_TRUE(state.is_cuda());
    return concat(parts, 2 - (parts[0].dim() == 3));
  };
  {
    const Tensor q = on_gpu(randn({2, 3, 23, 6}, gen)), k = on_gpu(randn({2, 3, 23, 6}, gen)),
                 v = on_gpu(randn({2, 3, 23, 9}, gen)), g = on_gpu(magnitudes({2, 3, 23, 6}, -0.2));
    const Tensor whole = gated_recurrence(q, k, v, g);
    auto cut = [](const Tensor& x, int64_t a, int64_t b) { return slice(x, 2, a, b); };
    const Tensor pieced = pieces(
        [&](int64_t a, int64_t b, Tensor* s) {
          return gated_recurrence(cut(q, a, b), cut(k, a, b), cut(v, a, b), cut(g, a, b), RecurrenceForm::chunkwise, 64,
                                  s);
        },
        23);
    EXPECT_LE(relative_error(pieced.to_vector(), whole.to_vector()), kFp32Bound);
  }
  {
    Tensor k = randn({2, 3, 23, 6}, gen);
    k = div(k, sqrt(sum(square(k), {-1}, true)));
    const Tensor q = on_gpu(randn({2, 3, 23, 6}, gen)), kg = on_gpu(k), v = on_gpu(randn({2, 3, 23, 9}, gen)),
                 beta = on_gpu(magnitudes({2, 3, 23, 1}, 0.3)), g = on_gpu(magnitudes({2, 3, 23, 1}, -0.1));
    const Tensor whole = delta_rule(q, kg, v, beta, g);
    auto cut = [](const Tensor& x, int64_t a, int64_t b) { return slice(x, 2, a, b); };
    const Tensor pieced = pieces(
        [&](int64_t a, int64_t b, Tensor* s) {
          return delta_rule(cut(q, a, b), cut(kg, a, b), cut(v, a, b), cut(beta, a, b), cut(g, a, b),
                            RecurrenceForm::chunkwise, 64, s);
        },
        23);
    EXPECT_LE(relative_error(pieced.to_vector(), whole.to_vector()), kFp32Bound);
  }
  {  // 150 steps: the last piece (145) runs as three chunks from a carried state
    const Tensor u = on_gpu(randn({2, 150, 7}, gen)), dt = on_gpu(magnitudes({2, 150, 7}, 0.3)),
                 A = on_gpu(magnitudes({7, 16}, -1)), Bm = on_gpu(randn({2, 150, 16}, gen)),
                 Cm = on_gpu(randn({2, 150, 16}, gen));
    const Tensor whole = selective_scan(u, dt, A, Bm, Cm);
    auto cut = [](const Tensor& x, int64_t a, int64_t b) { return slice(x, 1, a, b); };
    const Tensor pieced = pieces(
        [&](int64_t a, int64_t b, Tensor* s) {
          return selective_scan(cut(u, a, b), cut(dt, a, b), A, cut(Bm, a, b), cut(Cm, a, b), s);
        },
        150);
    EXPECT_LE(relative_error(pieced.to_vector(), whole.to_vector()), kFp32Bound);
  }
}

// How far rounding at a precision's unit roundoff u moves each parameter's
// gradient, whatever computes it: the model's float64 gradients with every
// weight multiplied by (1 + u·r), r uniform in [−1, 1], against the exact
// ones (relative_error per parameter). A gradient that is a sum of many
// terms cancelling to a small value is ill-conditioned. The lent H100's
// first run of this test put FLASH's layer-1 ScaleNorm gain (one sum over
// 1,824 terms) 0.36 from exact in bf16 and 3.1e-5 in fp32, where this noise
// moves it by 0.71 (u = 2⁻⁸) and 1.1e-5 (u = 2⁻²⁴); DeltaNet's gradients
// move by 2% (median) at 2⁻⁸. No bf16 arithmetic can meet 1e-2 there.
// Rounding the activations moves the gradients too, by about as much as
// the weights' rounding does, but not always where it does (its second run
// put Mamba-2's dt_bias 1.09% from exact where the weights' noise moves it
// 0.22%, the model's median 0.87%). So each gradient is held to the larger of the
// bound and c × the larger of its own movement and the model's median
// movement: c = 2 in bf16 (weights and activations), 4 in fp32, where sums
// of thousands of float32 terms (error ~√n·u), not operand rounding, set the
// error. In the mixer table this raises no fp32 bound but that gain's
// (4.3e-5); in bf16 attention's become 1.1–1.4%, the other mixers' 1.3–6%
// (1.4 for that gain).
std::vector<double> gradient_sensitivity(const nn::ModelConfig& c, const Tensor& x, const Tensor& y, double u) {
  Generator init(3), noise(9);
  nn::GPT exact(c, init);
  exact.to(DType::f64);
  std::vector<std::vector<double>> reference;
  backward(exact.loss(x, y));
  for (const auto& p : exact.named_parameters()) reference.push_back(p.tensor.grad().to_vector());
  exact.zero_grad();
  for (auto p : exact.named_parameters()) {
    double* w = p.tensor.data<double>();
    for (int64_t i = 0; i < p.tensor.numel(); ++i) w[i] *= 1 + u * (2 * noise.uniform() - 1);
  }
  backward(exact.loss(x, y));
  std::vector<double> moved;
  const auto params = exact.named_parameters();
  for (size_t i = 0; i < params.size(); ++i)
    moved.push_back(relative_error(params[i].tensor.grad().to_vector(), reference[i]));
  return moved;
}

// Every mixer of the table as a small model on the GPU (float32) against the
// CPU in float64: the loss and every parameter's gradient within the fp32
// bound, and with bf16 products within the bf16 bound, or within what
// rounding at that precision moves them by where that is larger
// (gradient_sensitivity); the step repeated on the GPU gives the same bits;
// decoding token by token on the GPU (fp32) gives the full forward's logits.
TEST(Cuda, EveryMixerMatchesTheCpu) {
  REQUIRE_GPU();
  const Bf16Scope restore;  // each case sets its precision; fp32 again at the end
  for (const Precision precision : {Precision::fp32, Precision::bf16})
    for (const nn::MixerSpec& spec : nn::mixer_table()) {
      SCOPED_TRACE(spec.name + " " + precision_name(precision));
      set_gpu_precision(precision);
      const double bound = precision == Precision::fp32 ? kFp32Bound : kBf16Bound;
      nn::ModelConfig c;
      c.mixer = spec.name, c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.block_size = 19, c.vocab_size = 29;
      c.dropout = 0;
      c = nn::with_recipe(c, {"mixer", "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "dropout"});
      Generator g1(3), g2(3), data(4);
      nn::GPT cpu(c, g1), gpu(c, g2);
      cpu.to(DType::f64);
      gpu.to(Device::cuda);
      const Tensor x = randint({3, 19}, 29, data), y = randint({3, 19}, 29, data);
      const std::vector<double> moved =
          gradient_sensitivity(c, x, y, precision == Precision::fp32 ? std::ldexp(1.0, -24) : std::ldexp(1.0, -8));
      std::vector<double> sorted = moved;
      std::sort(sorted.begin(), sorted.end());
      const double typical = sorted[sorted.size() / 2];
      Tensor lc = cpu.loss(x, y);
      backward(lc);
      Tensor lg = gpu.loss(x, y);
      backward(lg);
      EXPECT_LE(std::fabs(lg.item() - lc.item()) / lc.item(), bound);
      auto pc = cpu.named_parameters(), pg = gpu.named_parameters();
      ASSERT_EQ(pc.size(), pg.size());
      for (size_t i = 0; i < pc.size(); ++i) {
        ASSERT_TRUE(pg[i].tensor.grad().defined()) << pg[i].name;
        const double held = std::max(bound, (precision == Precision::fp32 ? 4 : 2) * std::max(moved[i], typical));
        EXPECT_LE(relative_error(pg[i].tensor.grad().to_vector(), pc[i].tensor.grad().to_vector()), held)
            << pg[i].name << " (rounding the weights alone moves it by " << moved[i] << ", the model's median "
            << typical << ")";
      }
      // The same step again on the GPU: the same bits.
      std::vector<std::vector<double>> first;
      for (const auto& p : pg) first.push_back(p.tensor.grad().to_vector());
      gpu.zero_grad();
      backward(gpu.loss(x, y));
      for (size_t i = 0; i < pg.size(); ++i) EXPECT_EQ(pg[i].tensor.grad().to_vector(), first[i]) << pg[i].name;
      if (precision == Precision::bf16) continue;
      NoGradGuard ng;
      const Tensor ids = slice(x, 1, 0, 9);
      const Tensor full = gpu.forward(ids);
      nn::DecodeState state = gpu.init_decode(3);
      std::vector<Tensor> steps;
      for (int64_t t = 0; t < 9; ++t) steps.push_back(gpu.forward(slice(ids, 1, t, t + 1).clone(), Tensor(), &state));
      EXPECT_LE(relative_error(concat(steps, 1).to_vector(), full.to_vector()), kFp32Bound);
    }
}

// bf16 products (autocast's recipe) against the CPU in float64: within the
// bf16 bound, fixed before measuring.
TEST(Cuda, Bf16ProductsMatchTheCpuWithinTheBf16Bound) {
  REQUIRE_GPU();
  const Bf16Scope bf16;
  check_op(
      "bf16 matmul", {{{3, 29, 37}}, {{3, 37, 43}}}, [](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); },
      kBf16Bound);
  check_op(
      "bf16 linear", {{{3, 19, 37}}, {{53, 37}}, {{53}}},
      [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); }, kBf16Bound);
  // Sizes that are multiples of 8: the bias added in cuBLASLt's epilogue.
  check_op(
      "bf16 linear (bias in the epilogue)", {{{2, 24, 40}}, {{56, 40}}, {{56}}},
      [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); }, kBf16Bound);
  // Rows not a multiple of 8, columns that are: the gradient's bf16 copy and
  // the bias's gradient from one pass, the copy's padding rows zeroed.
  check_op(
      "bf16 linear (bias gradient from the rounding pass)", {{{3, 19, 40}}, {{56, 40}}, {{56}}},
      [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); }, kBf16Bound);
  // Through GELU (the FFN's c_proj): GELU applied by the rounding pass, at
  // sizes with padding rows and columns and at multiples of 8 (the epilogue's bias).
  check_op(
      "bf16 linear through gelu", {{{3, 19, 37}}, {{53, 37}}, {{53}}},
      [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2], Activation::gelu); }, kBf16Bound);
  check_op(
      "bf16 linear through relu (bias in the epilogue)", {{{2, 24, 40}}, {{56, 40}}, {{56}}},
      [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2], Activation::relu); }, kBf16Bound);
  // A classifier's odd class count: the product at padded sizes, the result copied out.
  check_op(
      "bf16 linear (odd classes, no bias)", {{{2, 21, 40}}, {{61, 40}}},
      [](const std::vector<Tensor>& x) { return linear(x[0], x[1], Tensor()); }, kBf16Bound);
  const Tensor mask = attention_mask(2, 13, 13, Tensor());
  check_op(
      "bf16 attention (head size 7: the unfused form)", {{{2, 13, 3, 7}}, {{2, 13, 3, 7}}, {{2, 13, 3, 7}}},
      [mask](const std::vector<Tensor>& x) { return scaled_dot_product_attention(x[0], x[1], x[2], mask, 0.3); },
      kBf16Bound);
}

// A product's backward runs in the precision its forward ran in, whatever the
// precision is when backward() runs: the same bits as a backward in it.
TEST(Cuda, ABackwardRunsInItsForwardsPrecision) {
  REQUIRE_GPU();
  const Bf16Scope restore;
  Generator gen(11);
  const Tensor a0 = randn({3, 19, 37}, gen).to(Device::cuda), b0 = randn({3, 37, 24}, gen).to(Device::cuda);
  const Tensor x0 = randn({5, 37}, gen).to(Device::cuda), w0 = randn({24, 37}, gen).to(Device::cuda);
  for (const Precision forward : {Precision::bf16, Precision::fp32}) {
    SCOPED_TRACE(precision_name(forward));
    const Precision other = forward == Precision::bf16 ? Precision::fp32 : Precision::bf16;
    std::vector<std::vector<double>> grads[2];
    for (const Precision during_backward : {forward, other}) {
      Tensor a = a0.detach().requires_grad_(), b = b0.detach().requires_grad_();
      Tensor x = x0.detach().requires_grad_(), w = w0.detach().requires_grad_();
      set_gpu_precision(forward);
      const Tensor y = add(sum(square(matmul(a, b))), sum(square(linear(x, w, Tensor()))));
      set_gpu_precision(during_backward);
      backward(y);
      for (const Tensor* t : {&a, &b, &x, &w}) grads[during_backward != forward].push_back(t->grad().to_vector());
    }
    EXPECT_EQ(grads[1], grads[0]);
  }
  EXPECT_EQ(gpu_precision(), Precision::bf16) << "the last precision set stays";
}

// The classifier and its loss as one op: in fp32 the two ops composed; in
// bf16 the logits made, read and turned into their gradient in bfloat16, at
// sizes where every padding shows (rows, classes and the input width not
// multiples of 8), with ignored rows; within each precision's bound of the CPU
// in float64, and the same bits when run again.
TEST(Cuda, LinearCrossEntropyMatchesTheCpu) {
  REQUIRE_GPU();
  Generator gen(11);
  Tensor targets = randint({3, 21}, 61, gen);
  for (int64_t i = 0; i < targets.numel(); i += 5) targets.data<int32_t>()[i] = kIgnoreIndex;
  auto f = [targets](const std::vector<Tensor>& x) { return reshape(linear_cross_entropy(x[0], x[1], targets), {1}); };
  check_op("linear_cross_entropy fp32", {{{3, 21, 37}}, {{61, 37}}}, f);
  const Bf16Scope bf16;
  check_op("linear_cross_entropy bf16", {{{3, 21, 37}}, {{61, 37}}}, f, kBf16Bound);
  check_op(
      "linear_cross_entropy bf16 (sizes multiples of 8)", {{{2, 24, 40}}, {{64, 40}}},
      [](const std::vector<Tensor>& x) {
        Generator g(3);
        return reshape(linear_cross_entropy(x[0], x[1], randint({2, 24}, 64, g)), {1});
      },
      kBf16Bound);
  // Twice on the same inputs: the same loss and gradients, bit for bit.
  Tensor x = randn({3, 21, 37}, gen).to(Device::cuda).requires_grad_(),
         w = randn({61, 37}, gen).to(Device::cuda).requires_grad_();
  std::vector<std::vector<double>> runs;
  for (int run = 0; run < 2; ++run) {
    x.zero_grad(), w.zero_grad();
    Tensor loss = linear_cross_entropy(x, w, targets);
    backward(loss);
    runs.push_back(loss.to_vector());
    for (const Tensor& t : {x, w}) {
      const std::vector<double> g = t.grad().to_vector();
      runs.back().insert(runs.back().end(), g.begin(), g.end());
    }
  }
  EXPECT_EQ(runs[0], runs[1]);
}

// The fused (flash) attention of bf16 mode at every head size it takes, at
// sizes no tile divides: causal with left padding (rows that see no key),
// right padding, queries fewer than keys (decoding), no mask; within the bf16
// bound of the CPU in float64, and the same bits when run again.
TEST(Cuda, FlashAttentionMatchesTheCpuWithinTheBf16Bound) {
  REQUIRE_GPU();
  const Bf16Scope bf16;
  const int64_t B = 3, H = 2;
  for (int64_t hd : {32, 64, 128})
    for (auto [Tq, Tk] : {std::pair<int64_t, int64_t>{77, 77}, {37, 141}}) {
      Tensor pad = zeros({B, Tk}, DType::b8);
      for (int64_t j = 0; j < 70; ++j) pad.data<uint8_t>()[1 * Tk + j] = 1;       // left padding, past a tile
      for (int64_t j = Tk - 9; j < Tk; ++j) pad.data<uint8_t>()[2 * Tk + j] = 1;  // right padding
      const Tensor mask = attention_mask(B, Tq, Tk, pad);
      const double scale = 1 / std::sqrt((double)hd);
      check_op(
          fmt::format("flash attention hd={} Tq={} Tk={}", hd, Tq, Tk),
          {{{B, Tq, H, hd}}, {{B, Tk, H, hd}}, {{B, Tk, H, hd}}},
          [mask, scale](const std::vector<Tensor>& x) {
            return scaled_dot_product_attention(x[0], x[1], x[2], mask, scale);
          },
          kBf16Bound);
    }
  check_op(
      "flash attention without a mask", {{{2, 50, 3, 64}}, {{2, 90, 3, 64}}, {{2, 90, 3, 64}}},
      [](const std::vector<Tensor>& x) { return scaled_dot_product_attention(x[0], x[1], x[2], Tensor(), 0.125); },
      kBf16Bound);
  // The same bits twice: output and gradients.
  Generator gen(9);
  const Tensor q = randn({2, 100, 2, 64}, gen), k = randn({2, 100, 2, 64}, gen), v = randn({2, 100, 2, 64}, gen);
  const Tensor mask = attention_mask(2, 100, 100, Tensor());
  auto run = [&] {
    std::vector<Tensor> in = {q.to(Device::cuda), k.to(Device::cuda), v.to(Device::cuda)};
    for (Tensor& t : in) t.requires_grad_();
    Tensor y = scaled_dot_product_attention(in[0], in[1], in[2], mask, 0.125);
    backward(sum(mul(y, y)));
    return std::vector<std::vector<double>>{y.to_vector(), in[0].grad().to_vector(), in[1].grad().to_vector(),
                                            in[2].grad().to_vector()};
  };
  EXPECT_EQ(run(), run());
}

// The packed form reads q, k and v in place from one projection and gives its
// gradient packed: against the CPU within the bf16 bound, and the same bits as
// the three-tensor form on the same parts.
TEST(Cuda, PackedFlashAttentionMatchesTheCpuAndTheUnpackedForm) {
  REQUIRE_GPU();
  const Bf16Scope bf16;
  const int64_t B = 3, T = 93, H = 3;
  for (int64_t hd : {32, 64}) {
    Tensor pad = zeros({B, T}, DType::b8);
    for (int64_t j = 0; j < 66; ++j) pad.data<uint8_t>()[1 * T + j] = 1;
    for (int64_t j = T - 5; j < T; ++j) pad.data<uint8_t>()[2 * T + j] = 1;
    const Tensor mask = attention_mask(B, T, T, pad);
    const double scale = 1 / std::sqrt((double)hd);
    check_op(
        fmt::format("packed flash attention hd={}", hd), {{{B, T, 3 * H * hd}}},
        [mask, scale, H](const std::vector<Tensor>& x) { return attention_qkv(x[0], H, mask, scale); }, kBf16Bound);
    Generator gen(11 + hd);
    const Tensor qkv = randn({B, T, 3 * H * hd}, gen), g = randn({B, T, H, hd}, gen);
    Tensor packed = qkv.to(Device::cuda).requires_grad_();
    Tensor y_packed = attention_qkv(packed, H, mask, scale);
    backward(sum(mul(y_packed, g.to(Device::cuda))));
    Tensor whole = qkv.to(Device::cuda).requires_grad_();
    std::vector<Tensor> parts = split(whole, {H * hd, H * hd, H * hd}, -1);
    for (Tensor& p : parts) p = reshape(p, {B, T, H, hd});
    Tensor y_parts = scaled_dot_product_attention(parts[0], parts[1], parts[2], mask, scale);
    backward(sum(mul(y_parts, g.to(Device::cuda))));
    EXPECT_EQ(y_packed.to_vector(), y_parts.to_vector()) << "hd " << hd;
    EXPECT_EQ(packed.grad().to_vector(), whole.grad().to_vector()) << "hd " << hd;
  }
}

// The models of the attention and transformer++ recipes: logits and every
// parameter gradient on the GPU (float32) against the CPU in float64.
TEST(Cuda, GptAndTransformerPlusPlusMatchTheCpu) {
  REQUIRE_GPU();
  const Bf16Scope restore;  // each case sets its precision; fp32 again at the end
  for (const Precision precision : {Precision::fp32, Precision::bf16})
    for (const std::string mixer : {"attention", "transformer++"}) {
      SCOPED_TRACE(mixer + " " + precision_name(precision));
      set_gpu_precision(precision);
      const double bound = precision == Precision::fp32 ? kFp32Bound : kBf16Bound;
      nn::ModelConfig c;
      c.mixer = mixer, c.n_layer = 2, c.n_head = 3, c.n_embd = 48, c.block_size = 37, c.vocab_size = 71, c.dropout = 0;
      c = nn::with_recipe(c, {"mixer", "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "dropout"});
      Generator g1(3), g2(3), data(4);
      nn::GPT cpu(c, g1), gpu(c, g2);
      cpu.to(DType::f64);
      gpu.to(Device::cuda);
      const Tensor x = randint({3, 37}, 71, data), y = randint({3, 37}, 71, data);
      Tensor lc = cpu.loss(x, y);
      backward(lc);  // before the GPU's forward: backward() runs the whole tape
      Tensor lg = gpu.loss(x, y);
      backward(lg);
      EXPECT_LE(std::fabs(lg.item() - lc.item()) / lc.item(), bound);
      auto pc = cpu.named_parameters(), pg = gpu.named_parameters();
      ASSERT_EQ(pc.size(), pg.size());
      for (size_t i = 0; i < pc.size(); ++i) {
        ASSERT_TRUE(pg[i].tensor.grad().defined()) << pg[i].name;
        EXPECT_LE(relative_error(pg[i].tensor.grad().to_vector(), pc[i].tensor.grad().to_vector()), bound)
            << pg[i].name;
      }
    }
}

// Ten AdamW steps with clipping on both devices stay within the bound, and
// the same steps run twice on the GPU give the same bits.
TEST(Cuda, AdamWStepsMatchTheCpuAndRepeatBitForBit) {
  REQUIRE_GPU();
  nn::ModelConfig c;
  c.n_layer = 2, c.n_head = 2, c.n_embd = 32, c.block_size = 29, c.vocab_size = 43, c.dropout = 0;
  auto run = [&](Device device) {
    Generator g(7), data(8);
    nn::GPT model(c, g);
    model.to(device);
    optim::AdamW opt(optim::decay_groups(model, 0.1));
    for (int step = 0; step < 10; ++step) {
      const Tensor x = randint({4, 29}, 43, data), y = randint({4, 29}, 43, data);
      backward(model.loss(x, y));
      optim::clip_grad_norm(opt.groups(), 0.5);
      opt.step();
      model.zero_grad();
    }
    std::vector<double> all;
    for (auto& p : model.named_parameters()) {
      auto v = p.tensor.to_vector();
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  };
  const std::vector<double> cpu = run(Device::cpu), gpu = run(Device::cuda), again = run(Device::cuda);
  EXPECT_LE(relative_error(gpu, cpu), kFp32Bound);
  EXPECT_EQ(gpu, again);
}

TEST(Cuda, TheProfilersGpuClockAddsUpToTheStepsGpuTime) {
  REQUIRE_GPU();
  Generator gen(5);
  Tensor x = randn({512, 384}, gen).to(Device::cuda).requires_grad_();
  Tensor w = randn({384, 384}, gen).to(Device::cuda).requires_grad_();
  cuda::StreamTimer timer;
  Profiler::reset();
  Profiler::enable(true, Device::cuda);
  timer.start();
  Profiler::mark();
  backward(sum(gelu(matmul(x, w))));
  const double step = timer.stop();
  Profiler::enable(false);
  double booked = 0;
  for (const auto& [op, t] : Profiler::tallies()) {
    EXPECT_EQ(t.forward_calls, 1) << op;
    booked += t.forward_s + t.backward_s;
  }
  // Consecutive events tile the step: their sum is the step's GPU time, less
  // the stretch before the first mark and after the last booking.
  EXPECT_GT(booked, 0);
  EXPECT_LE(booked, step * 1.0001 + 1e-6);
  EXPECT_GE(booked, step * 0.5);
  EXPECT_TRUE(Profiler::tallies().count("matmul"));
  Profiler::reset();
}
