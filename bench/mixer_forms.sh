#!/usr/bin/env bash
# Training speed of each recurrent mixer in its chunkwise and parallel forms
# (softmax attention and quadratic GAU for reference) at context 256 and 1024:
# L4 H4 d128, batch 4, median tokens/s of 10 steps (tapelm_bench).
# Usage: bench/mixer_forms.sh [threads]   (run from the repository root after ./dev.sh build)
set -euo pipefail
threads=${1:-0}
source "$(dirname "$0")/train_speed.sh"
printf "%-16s %-10s %8s %12s\n" mixer form context "tokens/s"
for T in 256 1024; do
  for mixer in attention gau linear retnet gated_retention gla deltanet gated_deltanet flash; do
    forms="chunkwise parallel"; [[ $mixer == attention || $mixer == gau ]] && forms="-"
    for form in $forms; do
      args=(--mixer "$mixer"); [[ $form != - ]] && args+=(--recurrent-form "$form" --chunk-size 64)
      printf "%-16s %-10s %8d %12.0f\n" "$mixer" "$form" "$T" "$(train_tokens_per_s "$T" "$threads" "${args[@]}")"
    done
  done
done
