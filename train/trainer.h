// The training run behind `tapelm train` (its options: train/run_options.h): the loop,
// evaluation, logging (progress line, log.jsonl, loss.svg), checkpoints, and a clean stop
// on NaN/Inf loss or Ctrl-C.
#pragma once
#include <string>
#include <vector>

#include "train/run_options.h"

namespace tapelm::train {

// Ctrl-C and SIGUSR1 (which mpirun passes on to every rank) ask a training run
// to stop at its next step and save a checkpoint. `tapelm` holds both signals
// blocked from its first line and installs this before it unblocks them, so
// a stop asked while a rank starts is kept, not lost or fatal.
void install_stop_handlers();

// Returns the process exit code: 0 done, 3 stopped on a non-finite loss,
// 130 interrupted (checkpoint saved).
// given_model_keys: the model fields set by flags (the recipe leaves them; --resume checks them).
// given_run_keys: the run fields set by a flag or --config; with --resume the
// others that say where the run runs (device, precision) come from the checkpoint.
int run_training(TrainOptions opt, const std::vector<std::string>& given_model_keys,
                 const std::vector<std::string>& given_run_keys = {});

}  // namespace tapelm::train
