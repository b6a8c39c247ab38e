// `tapelm compare`: the bake-off as a scaling study. At each size (a width of
// the reference softmax-attention model, which fixes the non-embedding
// parameter count N) every chosen mixer is trained at (nearly) that N, on
// the same corpus, batches, schedule and optimizer, for the same number of
// tokens per parameter; the smallest size runs several seeds so the noise
// is visible beside the gaps. Runs go one at a time in this process, or
// `jobs` at once as `tapelm train` processes (one thread each by default).
// It writes
//   loss_vs_flops.svg  every run's validation loss against training FLOPs C
//                      (log-log, a colour per family)
//   scaling_fits.svg   each mixer's final losses and its fitted line L = a·C^b
//   decode_speed.svg   decoding tokens/s against context at batch 1
//   results.md         the tables behind them: every run; per mixer the fit,
//                      its loss at the Transformer++ compute, the seed noise
//                      and the compute it needs to reach the baseline's
//                      final loss; decoding tokens/s and state bytes
// Each run is an ordinary training run in <out>/<mixer>/d<width>-seed<seed>.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "train/trainer.h"

namespace tapelm::train {

struct CompareOptions {
  TrainOptions train;                  // corpus, schedule, batch, seed, threads; model = the attention reference
  std::vector<std::string> mixers;     // empty = every mixer
  std::vector<std::string> given;      // model config keys set on the command line: each mixer's recipe leaves them
  std::vector<int64_t> sizes;          // the reference's widths, one scale each (empty: its n_embd)
  double tokens_per_param = 0;         // > 0: every run of a size trains on this many tokens per reference
                                       // parameter (steps follow); 0: --steps at every size
  int seeds = 1;                       // seeds at the smallest size: seed, seed + 1, …
  int jobs = 1;                        // runs at once as processes (0: one per core)
  std::string baseline = "attention";  // whose final loss (largest size) the compute table reaches
  std::vector<int64_t> decode_contexts{64, 256, 1024, 4096};
  std::vector<int64_t> decode_batches{1, 16, 64};
  int64_t decode_tokens = 32;
};

// The width whose model (with its mixer's recipe for the fields not in
// `given`) has the non-embedding parameter count nearest to `target_n`
// (widths step so heads have an even width and Mamba-2 heads divide 2d).
int64_t matched_width(nn::ModelConfig config, int64_t target_n, const std::vector<std::string>& given = {});

// Least-squares line through (log C, log L): L = exp(intercept)·C^slope.
struct PowerFit {
  double slope = NAN, intercept = NAN;
  double loss_at(double flops) const;
  double flops_for(double loss) const;  // the inverse
};
PowerFit fit_power_law(const std::vector<std::pair<double, double>>& flops_loss);

int run_compare(CompareOptions options);

}  // namespace tapelm::train
