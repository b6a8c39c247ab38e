// The command line shared by `tapelm` and `tapelm_bench`: flags made from the
// two schemas (nn::config_fields for the model, run_fields for the run), a
// --config JSON file of the same keys, and the mixer's reference recipe applied
// to every model field no flag set. Flags are parsed by CLI11 (Debian's libcli11-dev).
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "nn/config.h"
#include "train/run_options.h"
#include "train/sampler.h"

namespace tapelm::train {

// --config FILE.json: its keys are config or run keys ("n_layer", "block_size")
// or flag names ("n-layer"); they are placed before the command line's own
// flags, which therefore win. Returns args with the file's flags at
// first_flag (2 for "tapelm <subcommand>", 1 for a program without subcommands).
std::vector<std::string> expand_config(std::vector<std::string> args, size_t first_flag = 2);

// One flag per model field (nn::config_fields) with a flag; without_mixer
// leaves --mixer out (compare picks mixers with --mixers).
void add_model_flags(CLI::App* app, nn::ModelConfig& model, bool with_mixer = true);
// One flag per run field (run_fields): corpus, batching, optimizer, schedule,
// evaluation, seed, threads. --data is required.
void add_run_flags(CLI::App* app, TrainOptions& run);

// One flag per sampling option (sample_fields): --tokens, --temperature, --top-k, --seed.
void add_sample_flags(CLI::App* app, SampleOptions& sample);

// The model fields set on the command line (or by --config), as config keys:
// a recipe leaves them, and train --resume checks them against the checkpoint.
std::vector<std::string> given_model_keys(const CLI::App* app);
// The run fields a flag (or --config key) set.
std::vector<std::string> given_run_keys(const CLI::App* app);
// model with its mixer's recipe for every field not given, checked (nn::check_config).
nn::ModelConfig model_from_flags(const CLI::App* app, const nn::ModelConfig& model);

}  // namespace tapelm::train
