#!/usr/bin/env bash
# Training speed of each recurrent mixer in its chunkwise and parallel forms
# (softmax attention and quadratic GAU for reference) at context 256 and 1024:
# L4 H4 d128, batch 4, tokens/s over training steps 4-8 (median of the logged
# intervals is not needed at this length: the last interval is printed).
# Usage: bench/mixer_forms.sh [threads]   (run from the repository root after ./dev.sh build)
set -euo pipefail
threads=${1:-0}
data=${DATA:-../shared/data/tinyshakespeare.txt}
out=$(mktemp -d)
printf "%-16s %-10s %8s %12s\n" mixer form context "tokens/s"
for T in 256 1024; do
  for mixer in attention gau linear retnet gated_retention gla deltanet gated_deltanet flash; do
    forms="chunkwise parallel"; [[ $mixer == attention || $mixer == gau ]] && forms="-"
    for form in $forms; do
      args=(--mixer "$mixer"); [[ $form != - ]] && args+=(--recurrent-form "$form" --chunk-size 64)
      build/tapelm train --data "$data" --out "$out/r" --context "$T" --batch 4 --steps 8 --log-interval 4 \
        --eval-interval 1000 --eval-batches 1 --threads "$threads" --quiet "${args[@]}" >/dev/null
      tps=$(tail -n 2 "$out/r/log.jsonl" | head -n 1 | sed 's/.*"tokens_per_s":\([0-9.]*\).*/\1/')
      printf "%-16s %-10s %8d %12.0f\n" "$mixer" "$form" "$T" "$tps"
      rm -rf "$out/r"
    done
  done
done
rm -rf "$out"
