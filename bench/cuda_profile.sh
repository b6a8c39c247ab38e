#!/usr/bin/env bash
# Where a GPU step's time goes, in one call on the lent machine (binaries from
# bench/cuda_bundle.sh in dist/cuda/): tapelm_bench --profile (GPU time per op
# kind from CUDA events, the host's launch time beside it) for each row, then
# Nsight Compute's kernel durations (one pass, clocks left as they are) of one
# step, summed per kernel name, to split an op's time among its kernels.
#
#   bash bench/cuda_profile.sh
#   ROWS="gpt2-bf16" NCU=0 bash bench/cuda_profile.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/cuda_env.sh
out=${OUT:-/tmp/tapelm-cuda-out}
mkdir -p "$out"
rows=${ROWS:-"gpt2-bf16 char-bf16"}
gpt2="--n-layer 12 --n-head 12 --n-embd 768 --context 1024 --vocab-size 50257"
char="--n-layer 6 --n-head 6 --n-embd 384 --context 256 --vocab-size 65"
small="--n-layer 4 --n-head 4 --n-embd 128 --context 64 --vocab-size 65"
flags_of() {
  case $1 in
    gpt2-bf16) echo "$gpt2 --batch ${GPT2_BATCH:-16} --precision bf16" ;;
    gpt2-fp32) echo "$gpt2 --batch 16 --precision fp32" ;;
    char-bf16) echo "$char --batch 64 --precision bf16" ;;
    char-fp32) echo "$char --batch 64 --precision fp32" ;;
    small) echo "$small --batch 12 --precision fp32" ;;
  esac
}
for r in $rows; do
  echo "== $r: tapelm_bench --profile"
  timeout 300 dist/cuda/tapelm_bench $(flags_of "$r") --device cuda --steps 5 --warmup 2 --profile \
    >"$out/profile_$r.txt" 2>&1 || echo "(failed)"
  head -40 "$out/profile_$r.txt"
done
if [ "${NCU:-1}" = 1 ] && command -v ncu >/dev/null; then
  r=${NCU_ROW:-gpt2-bf16}
  echo "== $r: ncu kernel durations of the second step (batch ${NCU_BATCH:-8})"
  # --warmup 1 --steps 1: the kernels of the second step are the last half.
  timeout 400 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
    dist/cuda/tapelm_bench $(flags_of "$r" | sed "s/--batch [0-9]*/--batch ${NCU_BATCH:-8}/") --device cuda \
    --steps 1 --warmup 1 >"$out/ncu_$r.csv" 2>"$out/ncu_err.txt" || { echo "(ncu failed)"; tail -5 "$out/ncu_err.txt"; }
  python3 bench/ncu_summary.py "$out/ncu_$r.csv" | head -45
fi
