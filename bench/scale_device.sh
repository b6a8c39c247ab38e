#!/usr/bin/env bash
# Thread scaling on a many-core machine without the Debian libraries:
# tapelm_bench (a static build) beside PyTorch's nanoGPT reference
# (torch_reference.py: scaled_dot_product_attention, nanoGPT's init, AdamW
# decay groups, clipping) on the same three shapes at 1, 4, 8 and 16 threads,
# with tapelm's default thread policy (train/thread_policy.h). JSON lines go to
# $OUT/scale.jsonl and a markdown table to $OUT/scale.md (docs/performance.md).
#
#   bench/scale_device.sh            the table (REPEAT=3 SHAPES="small mid" THREADS="1 4": best of 3,
#                                    two shapes, two thread counts; defaults: 1 run, all shapes, 1 4 8 16)
#   bench/scale_device.sh --policy   tapelm at 4 and 16 threads under each OMP_WAIT_POLICY
#
# Put beside this script (the folder is what the device call carries):
#   tapelm_bench_v4   cmake -S . -B /tmp/b-v4 -G Ninja -DTAPELM_STATIC=ON -DTAPELM_NATIVE=OFF \
#                       -DTAPELM_BUILD_TESTS=OFF -DCMAKE_CXX_FLAGS=-march=x86-64-v4
#                     cmake --build /tmp/b-v4 --target tapelm_bench
#   torch_reference.py, scale_table.py   (from bench/)
set -u
cd "$(dirname "$0")"
OUT=${OUT:-.}
B=./tapelm_bench_v4
SMALL="--n-layer 4 --n-head 4 --n-embd 128 --context 64 --batch 12"
MID="--n-layer 6 --n-head 6 --n-embd 384 --context 256 --batch 8"
GPT2="--n-layer 12 --n-head 12 --n-embd 768 --context 256 --batch 4 --vocab-size 50257"
# Steps per shape: the two big shapes warm up twice (the first step also
# allocates AdamW's moments, so the second still touches new memory).
steps() {
  case $1 in
    small) echo "--steps 30" ;;
    mid) echo "--steps 6 --warmup 2" ;;
    gpt2) echo "--steps 3 --warmup 2" ;;
  esac
}
flags() {
  case $1 in
    small) echo "$SMALL" ;;
    mid) echo "$MID" ;;
    gpt2) echo "$GPT2" ;;
  esac
}

{ lscpu | grep -E "Model name|^CPU\(s\)|Thread|Socket|L2|L3"; python3 -c "import torch; print('torch', torch.__version__)"; } \
  > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

if [[ "${1:-}" == "--policy" ]]; then
  for cfg in small mid; do
    for t in 4 16; do
      for p in active passive default; do  # "default": libgomp's own (it warns about the value)
        OMP_WAIT_POLICY=$p $B --json --label "$cfg-$p" --threads $t $(steps $cfg) $(flags $cfg) 2>/dev/null |
          sed 's/^/tapelm /' | tee -a "$OUT/policy.jsonl"
      done
    done
  done
  exit 0
fi

# A lent machine's speed drifts by 10-20% from run to run, so each cell runs
# REPEAT times, tapelm and PyTorch alternating; scale_table.py keeps the best
# of each. SHAPES and THREADS pick the cells (to split the table over several calls).
for cfg in ${SHAPES:-small mid gpt2}; do
  for t in ${THREADS:-1 4 8 16}; do
    for ((r = 0; r < ${REPEAT:-1}; ++r)); do
      env -u OMP_WAIT_POLICY $B --json --label $cfg --threads $t $(steps $cfg) $(flags $cfg) | sed 's/^/tapelm /' |
        tee -a "$OUT/scale.jsonl"
      python3 torch_reference.py --threads $t $(steps $cfg) $(flags $cfg) | sed "s/^{/torch {\"label\": \"$cfg\", /" |
        tee -a "$OUT/scale.jsonl"
    done
  done
done
python3 scale_table.py "$OUT/scale.jsonl" | tee "$OUT/scale.md"
