// `tapelm flops`: the analytic FLOP accounting of a model beside what the
// tape's FLOP counter counts for one training step, per component.
//
// Analytic rows (per training step of b sequences of s tokens, n = b·s):
//   mixer projections  2·n·W_mixer per layer forward (W = weights of its Linear layers;
//                      attention: 4d², so 8·n·d²)
//   FFN                2·n·W_ffn (GELU FFN: 8d², so 16·n·d²)
//   LM head            2·n·d·V
//   sequence term      each mixer's own (the mixer table's sequence_flops, nn/mixers.h;
//                      attention 4·b·s²·d)
// Training = forward + backward = 3 × forward: the backward of y = xW is two
// GEMMs of the same size (dx and dW). For the standard GPT this is
// 72·b·s·d² + 12·b·s²·d per layer, i.e. 6N(1 + s/(6d)) per token with
// N = 12·l·d², plus the LM head's 6·b·s·d·V that the 6N rule leaves out.
// The counter also counts what the formula leaves out: norms, softmax and
// masks, activations, biases, residual adds, the loss. Those are the margin.
#pragma once
#include <string>
#include <vector>

#include "autograd/device.h"
#include "autograd/flops.h"
#include "nn/config.h"

namespace tapelm::train {

struct FlopRow {
  std::string name;               // e.g. "mixer projections"
  std::string formula;            // the analytic forward formula in words
  int64_t analytic_forward = -1;  // -1: not in the analytic accounting
  int64_t analytic_train = -1;
  FlopTally counted;
};

struct FlopReport {
  nn::ModelConfig config;
  int64_t batch = 0, context = 0;
  int64_t n_params = 0, n_non_embedding = 0;
  std::vector<FlopRow> rows;          // analytic rows first, then the counted-only rest
  int64_t analytic_train = 0;         // sum of analytic rows
  FlopTally counted;                  // everything the tape counted in the step
  FlopTally counted_matmul;           // GEMM FLOPs only: matmul, linear and the fused attention op's GEMMs
  int64_t analytic_matmul_train = 0;  // the analytic rows that are plain matmuls
};

// Builds the model, runs one training step (loss, backward) on random tokens
// with the FLOP counter on, and puts the counts beside the formulas.
// The step's tape runs on `device` (the GPU's ops book the same counts as the CPU's).
FlopReport flop_report(const nn::ModelConfig& config, int64_t batch, Device device = Device::cpu);

std::string format_flop_report(const FlopReport& r);

}  // namespace tapelm::train
