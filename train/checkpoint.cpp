#include "train/checkpoint.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "autograd/json_int.h"
#include "data/tokenizers.h"
#include "train/run_options.h"

namespace tapelm::train {

namespace fs = std::filesystem;

static constexpr const char* kFormat = "tapelm-checkpoint-1";

std::string encode_rng(const Generator::State& s) { return fmt::format("{}", fmt::join(s.words(), " ")); }

Generator::State decode_rng(const std::string& text) {
  std::array<uint64_t, 6> w{};
  std::istringstream in(text);
  for (uint64_t& word : w) in >> word;
  TAPELM_CHECK(!in.fail(), "checkpoint: corrupt RNG state '{}'", text);
  return Generator::State::from_words(w.data());
}

// A step count from metadata: a non-negative integer, or an Error naming the file.
int64_t parse_step(const std::string& text, const std::string& path) {
  const auto step = json_int64(text);
  TAPELM_CHECK(step && *step >= 0, "checkpoint: {}: metadata 'step' is '{}', not a step count (an integer >= 0)", path,
               text);
  return *step;
}

Checkpoint load_checkpoint(const std::string& dir) {
  const std::string path = (fs::path(dir) / "model.safetensors").string();
  TAPELM_CHECK(fs::exists(path), "checkpoint: {} not found (is {} a checkpoint directory?)", path, dir);
  TensorFile f = load_safetensors(path);
  auto meta = [&](const char* key) -> const std::string& {
    auto it = f.metadata.find(key);
    TAPELM_CHECK(it != f.metadata.end(), "checkpoint: {} has no '{}' in its metadata (not a tapelm checkpoint?)", path,
                 key);
    return it->second;
  };
  TAPELM_CHECK(meta("format") == kFormat, "checkpoint: {} has format '{}', expected '{}'", path, meta("format"),
               kFormat);
  Checkpoint ck;
  ck.config = nn::ModelConfig::from_json(meta("config"));
  ck.tokenizer = data::tokenizer_from_json(meta("tokenizer"));
  TAPELM_CHECK(ck.tokenizer->vocab_size() == ck.config.vocab_size,
               "checkpoint: {}: tokenizer has {} tokens but the model {}", path, ck.tokenizer->vocab_size(),
               ck.config.vocab_size);
  ck.step = parse_step(meta("step"), path);
  ck.train_options_json = meta("train");
  try {  // eval reads the run's split from it; read here, where the file is named
    ck.train_options = TrainOptions::from_json(ck.train_options_json);
  } catch (const Error& e) {
    throw Error(fmt::format("checkpoint: {}: metadata 'train' is damaged: {}", path, e.what()));
  }
  // Weights are written as F32 and must be finite: a NaN or an infinity
  // would sample garbage and evaluate to a NaN loss with exit code 0.
  for (auto& [name, t] : f.tensors) {
    TAPELM_CHECK(t.dtype() == DType::f32, "checkpoint: {}: tensor '{}' is stored as {}; a checkpoint's weights are F32",
                 path, name, dtype_name(t.dtype()));
    const float* v = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i)
      TAPELM_CHECK(std::isfinite(v[i]), "checkpoint: {}: tensor '{}' holds {} at element {}", path, name, v[i], i);
  }
  const std::string& opt = meta("optimizer");
  ck.optimizer_file = opt.empty() ? "" : (fs::path(dir) / opt).string();
  // Every parameter is stored in the file, so the model its config describes
  // takes about the file's tensor bytes (plus buffers such as position
  // tables). A config that claims far more (n_layer 10^9, a huge n_embd) is
  // stopped by the budget as soon as its allocations pass it, instead of
  // hanging or asking for terabytes; load_state_dict then checks every name
  // and shape.
  int64_t file_bytes = 0;
  for (auto& [name, t] : f.tensors) file_bytes += t.nbytes();
  Generator init(0);
  try {
    AllocationBudget budget(2 * file_bytes + (int64_t(256) << 20),
                            fmt::format("the config describes a bigger model ({} layers, width {}, vocabulary {}, "
                                        "context {}) than the file's {:.1f} MB of tensors",
                                        ck.config.n_layer, ck.config.n_embd, ck.config.vocab_size, ck.config.block_size,
                                        file_bytes / 1048576.0));
    ck.model = std::make_unique<nn::GPT>(ck.config, init);
    ck.model->load_state_dict(f.tensors);
  } catch (const Error& e) {
    throw Error(fmt::format("checkpoint: {} does not match its own config: {}", path, e.what()));
  }
  return ck;
}

void save_checkpoint(const std::string& dir, const nn::GPT& model, const data::Tokenizer& tok,
                     const optim::Optimizer& opt, const RngStates& rng, int64_t step,
                     const std::string& train_options_json) {
  fs::create_directories(dir);
  const std::string opt_name = fmt::format("optimizer-{}.safetensors", step);
  TensorFile o = opt.state();
  o.metadata["rng_batches"] = encode_rng(rng.batches);
  o.metadata["rng_dropout"] = encode_rng(rng.dropout);
  if (!rng.dropout_of_rank.empty()) {
    std::vector<std::string> states;
    for (auto& st : rng.dropout_of_rank) states.push_back(encode_rng(st));
    o.metadata["rng_dropout_of_rank"] = fmt::format("{}", fmt::join(states, ";"));
  }
  save_safetensors((fs::path(dir) / opt_name).string(), o);

  TensorFile m;
  for (auto& p : model.state_dict())
    m.tensors[p.name] = p.tensor.dtype() == DType::f32 ? p.tensor : p.tensor.to(DType::f32);
  m.metadata = {{"format", kFormat},           {"config", model.config.to_json()},
                {"tokenizer", tok.to_json()},  {"step", std::to_string(step)},
                {"train", train_options_json}, {"optimizer", opt_name}};
  save_safetensors((fs::path(dir) / "model.safetensors").string(), m);  // the commit point

  for (auto& e : fs::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (name.rfind("optimizer-", 0) == 0 && name != opt_name) fs::remove(e.path());
  }
}

void load_training_state(const Checkpoint& ck, optim::Optimizer& opt, RngStates& rng) {
  TAPELM_CHECK(!ck.optimizer_file.empty() && fs::exists(ck.optimizer_file),
               "checkpoint: optimizer state {} is missing; cannot resume exactly", ck.optimizer_file);
  TensorFile f = load_safetensors(ck.optimizer_file);
  opt.load_state(f);
  TAPELM_CHECK(opt.steps_taken() == ck.step, "checkpoint: optimizer state is at step {} but the model at {}",
               opt.steps_taken(), ck.step);
  TAPELM_CHECK(f.metadata.count("rng_batches") && f.metadata.count("rng_dropout"), "checkpoint: {} lacks RNG states",
               ck.optimizer_file);
  rng.batches = decode_rng(f.metadata.at("rng_batches"));
  rng.dropout = decode_rng(f.metadata.at("rng_dropout"));
  rng.dropout_of_rank.clear();
  if (auto it = f.metadata.find("rng_dropout_of_rank"); it != f.metadata.end()) {
    std::istringstream states(it->second);
    for (std::string st; std::getline(states, st, ';');) rng.dropout_of_rank.push_back(decode_rng(st));
  }
}

}  // namespace tapelm::train
