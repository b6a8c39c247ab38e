#!/usr/bin/env bash
# Training tokens/s of a 4-layer d=128 Mamba and Mamba-2 beside the attention
# model of the same depth and width, at context 64, 256 and 1024 (batch 4,
# tokens/s over steps 4-8). Usage: bench/ssm_speed.sh [threads]
set -euo pipefail
threads=${1:-0}
data=${DATA:-../shared/data/tinyshakespeare.txt}
out=$(mktemp -d)
printf "%-10s %-10s %8s %12s\n" mixer form context "tokens/s"
for T in 64 256 1024; do
  for spec in "attention -" "mamba recurrent" "mamba chunkwise" "mamba2 chunkwise" "mamba2 recurrent"; do
    set -- $spec
    args=(--mixer "$1"); [[ $2 != - ]] && args+=(--recurrent-form "$2" --chunk-size 16)
    build/tapelm train --data "$data" --out "$out/r" --context "$T" --batch 4 --steps 8 --log-interval 4 \
      --eval-interval 1000 --eval-batches 1 --threads "$threads" --quiet "${args[@]}" >/dev/null
    tps=$(tail -n 2 "$out/r/log.jsonl" | head -n 1 | sed 's/.*"tokens_per_s":\([0-9.]*\).*/\1/')
    printf "%-10s %-10s %8d %12.0f\n" "$1" "$2" "$T" "$tps"
    rm -rf "$out/r"
  done
done
rm -rf "$out"
