#!/usr/bin/env bash
# Training tokens/s of a 4-layer d=128 Mamba and Mamba-2 beside the attention
# model of the same depth and width, at context 64, 256 and 1024 (batch 4,
# median tokens/s of 10 steps, tapelm_bench). Usage: bench/ssm_speed.sh [threads]
set -euo pipefail
threads=${1:-0}
source "$(dirname "$0")/train_speed.sh"
printf "%-10s %-10s %8s %12s\n" mixer form context "tokens/s"
for T in 64 256 1024; do
  for spec in "attention -" "mamba recurrent" "mamba chunkwise" "mamba2 chunkwise" "mamba2 recurrent"; do
    set -- $spec
    args=(--mixer "$1"); [[ $2 != - ]] && args+=(--recurrent-form "$2" --chunk-size 16)
    printf "%-10s %-10s %8d %12.0f\n" "$1" "$2" "$T" "$(train_tokens_per_s "$T" "$threads" "${args[@]}")"
  done
done
