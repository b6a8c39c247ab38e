#include "nn/model.h"

#include <cmath>

#include "autograd/flops.h"
#include "autograd/ops.h"
#include "nn/mixers.h"

namespace tapelm::nn {

namespace {
// GPT-2: residual output projections get std 0.02/√(2·n_layer), since each
// block adds two of them to the residual stream.
double proj_std(const ModelConfig& c) { return 0.02 / std::sqrt(2.0 * c.n_layer); }
// GPT-2's token embedding init, N(0, 0.02²); the scaled sinusoid starts at the same scale.
constexpr double kTokenEmbeddingStd = 0.02;
}  // namespace

Block::Block(const ModelConfig& c, std::shared_ptr<Rotary> rotary, Generator& gen, Generator* dropout_gen) {
  const MixerSpec& mixer = mixer_spec(c.mixer);
  ln_1 = register_module("ln_1", make_norm(c.norm, c.n_embd, c.bias, c.norm_eps));
  attn = register_module("attn", mixer.make({.config = c,
                                             .form = training_form(c),
                                             .rotary = rotary,
                                             .gen = gen,
                                             .dropout_gen = dropout_gen,
                                             .proj_std = proj_std(c)}));
  if (!mixer.has_ffn) return;
  ln_2 = register_module("ln_2", make_norm(c.norm, c.n_embd, c.bias, c.norm_eps));
  mlp = register_module("mlp", std::make_shared<FeedForward>(c.n_embd, c.hidden(), c.ffn, c.bias, c.dropout, gen,
                                                             dropout_gen, proj_std(c)));
}

// FLOP components: "norm", "mixer" (its projections in "mixer.proj"), "ffn",
// and the residual adds in "residual".
Tensor Block::forward(const Tensor& x, const MixerContext& ctx, MixerState* state) {
  auto norm = [](Norm& n, const Tensor& t) {
    FlopCounter::Scope scope("norm");
    return n.forward(t);
  };
  Tensor mixed;
  {
    Tensor normed = norm(*ln_1, x);
    FlopCounter::Scope scope("mixer");
    mixed = attn->forward(normed, ctx, state);
  }
  Tensor h;
  {
    FlopCounter::Scope scope("residual");
    h = add(x, mixed);
  }
  if (!mlp) return h;
  Tensor f;
  {
    Tensor normed = norm(*ln_2, h);
    FlopCounter::Scope scope("ffn");
    f = mlp->forward(normed);
  }
  FlopCounter::Scope scope("residual");
  return add(h, f);
}

Transformer::Transformer(const ModelConfig& c, std::shared_ptr<Rotary> rotary, Generator& gen, Generator* dropout_gen) {
  wte = register_module("wte", std::make_shared<Embedding>(c.vocab_size, c.n_embd, gen, kTokenEmbeddingStd));
  wpe = make_position_embedding(c.position, c.block_size, c.n_embd, kTokenEmbeddingStd, gen);
  if (wpe) register_module("wpe", wpe);
  drop = register_module("drop", std::make_shared<Dropout>(c.dropout, dropout_gen));
  // A ModuleList named "h": children "h.0", "h.1", ...
  for (int64_t i = 0; i < c.n_layer; ++i)
    h.push_back(register_module(fmt::format("h.{}", i), std::make_shared<Block>(c, rotary, gen, dropout_gen)));
  ln_f =
      register_module("ln_f", make_norm(c.final_norm == "same" ? c.norm : c.final_norm, c.n_embd, c.bias, c.norm_eps));
}

int64_t DecodeState::bytes() const {
  int64_t n = 0;
  for (auto& l : layers) n += l->bytes();
  return n;
}

GPT::GPT(const ModelConfig& c, Generator& gen) : config(c), dropout_gen(gen.next_u64()) {
  check_config(config);
  if (c.position == "rope") rotary_ = std::make_shared<Rotary>(c.n_embd / c.n_head, c.block_size);
  transformer = register_module("transformer", std::make_shared<Transformer>(c, rotary_, gen, &dropout_gen));
  lm_head = register_module("lm_head", std::make_shared<Linear>(c.n_embd, c.vocab_size, false, gen));
  if (c.tie_weights) {
    lm_head->tie_parameter("weight", transformer->wte->weight);
    lm_head->weight = transformer->wte->weight;
  }
}

bool GPT::decodes_past_context() const { return config.position == "none" && mixer_spec(config.mixer).recurrent; }

DecodeState GPT::init_decode(int64_t batch) const {
  DecodeState s;
  for (auto& block : transformer->h) s.layers.push_back(block->attn->init_state(batch));
  s.seen.assign(batch, 0);
  return s;
}

Tensor GPT::forward(const Tensor& idx, const Tensor& pad_mask, DecodeState* state) {
  const Tensor x = hidden(idx, pad_mask, state);
  FlopCounter::Scope scope("lm_head");
  return lm_head->forward(x);
}

Tensor GPT::hidden(const Tensor& idx, const Tensor& pad_mask, DecodeState* state) {
  TAPELM_CHECK(idx.dim() == 2 && idx.dtype() == DType::i32, "model: tokens must be int32 [B,T], got {} {}",
               dtype_name(idx.dtype()), idx.str_shape());
  const int64_t B = idx.size(0), T = idx.size(1);
  if (state)
    TAPELM_CHECK((int64_t)state->seen.size() == B, "model: decoding state is for batch {}, tokens are [{},{}]",
                 state->seen.size(), B, T);
  MixerContext ctx{pad_mask, position_ids(B, T, pad_mask, state ? state->seen : std::vector<int32_t>{})};
  if (config.position != "none") {
    const int32_t* p = ctx.positions.data<int32_t>();
    for (int64_t i = 0; i < B * T; ++i)
      TAPELM_CHECK(p[i] < config.block_size, "model: position {} is beyond the context length {} (sequence too long)",
                   p[i], config.block_size);
  }
  Tensor x;
  {
    FlopCounter::Scope scope("embedding");
    x = transformer->wte->forward(idx);
    if (transformer->wpe) x = add(x, transformer->wpe->forward(ctx.positions, x));
    x = transformer->drop->forward(x);
  }
  for (size_t i = 0; i < transformer->h.size(); ++i)
    x = transformer->h[i]->forward(x, ctx, state ? state->layers[i].get() : nullptr);
  {
    FlopCounter::Scope scope("norm");
    x = transformer->ln_f->forward(x);
  }
  if (state) {
    const uint8_t* pm = pad_mask.defined() ? pad_mask.data<uint8_t>() : nullptr;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) state->seen[b] += !(pm && pm[b * T + t]);
  }
  return x;
}

Tensor GPT::loss(const Tensor& idx, const Tensor& targets, const Tensor& pad_mask) {
  TAPELM_CHECK(targets.shape() == idx.shape() && targets.dtype() == DType::i32,
               "model: targets must be int32 {}, got {} {}", idx.str_shape(), dtype_name(targets.dtype()),
               targets.str_shape());
  Tensor t = targets;
  if (pad_mask.defined()) {
    t = targets.clone();
    int32_t* pt = t.data<int32_t>();
    const uint8_t* pm = pad_mask.data<uint8_t>();
    for (int64_t i = 0; i < t.numel(); ++i)
      if (pm[i]) pt[i] = -1;
  }
  const Tensor x = hidden(idx, pad_mask, nullptr);
  // Booked as forward() books the classifier: "lm_head.proj" (the loss as its part).
  FlopCounter::Scope head("lm_head"), proj("proj");
  return linear_cross_entropy(x, lm_head->weight, t, kIgnoreIndex);
}

int64_t GPT::num_non_embedding_parameters() const {
  int64_t n = num_parameters() - transformer->wte->weight.numel();
  if (transformer->wpe) n -= transformer->wpe->num_parameters();
  return n;
}

std::string GPT::describe() const {
  std::string s;
  auto count = [](const Module& m) { return m.num_parameters(); };
  s += fmt::format("  {:<28} {:>12}\n", "transformer.wte", count(*transformer->wte));
  if (transformer->wpe) s += fmt::format("  {:<28} {:>12}\n", "transformer.wpe", count(*transformer->wpe));
  for (size_t i = 0; i < transformer->h.size(); ++i) {
    const Block& b = *transformer->h[i];
    s += fmt::format("  {:<28} {:>12}  (mixer {}, mlp {}, norms {})\n", fmt::format("transformer.h.{}", i), count(b),
                     count(*b.attn), b.mlp ? count(*b.mlp) : 0, count(*b.ln_1) + (b.ln_2 ? count(*b.ln_2) : 0));
  }
  s += fmt::format("  {:<28} {:>12}\n", "transformer.ln_f", count(*transformer->ln_f));
  s += fmt::format("  {:<28} {:>12}\n", "lm_head",
                   config.tie_weights ? std::string("tied to wte") : fmt::format("{}", count(*lm_head)));
  const int64_t l = config.n_layer, d = config.n_embd;
  s += fmt::format("  total {} parameters; non-embedding N = {} (12·l·d² = {})\n", num_parameters(),
                   num_non_embedding_parameters(), 12 * l * d * d);
  return s;
}

}  // namespace tapelm::nn
