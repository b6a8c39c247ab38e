#!/usr/bin/env bash
# Thread scaling on a many-core machine without the Debian libraries:
# tapelm_bench (static builds) and PyTorch's reference script, same configs,
# 1..16 threads, JSON lines into $OUT/scale.jsonl. Put beside this script:
#   tapelm_bench_v4, tapelm_bench_v3  cmake -S . -B /tmp/b-v4 -G Ninja -DTAPELM_STATIC=ON -DTAPELM_NATIVE=OFF
#                                     -DTAPELM_BUILD_TESTS=OFF -DCMAKE_CXX_FLAGS=-march=x86-64-v4 (v3 alike)
#   torch_reference.py                 (from bench/)
# Made bench/results/scale_16core*.jsonl (README, Performance).
set -u
cd "$(dirname "$0")"
B=./tapelm_bench_v3
grep -qw avx512f /proc/cpuinfo && B=./tapelm_bench_v4
{ lscpu | grep -E "Model name|^CPU\(s\)|Thread|Socket"; python3 -c "import torch; print('torch', torch.__version__, torch.__config__.parallel_info().splitlines()[:3])"; echo "binary $B"; } > "$OUT/machine.txt" 2>&1
SMALL="--n-layer 4 --n-head 4 --n-embd 128 --context 64 --batch 12"
MID="--n-layer 6 --n-head 6 --n-embd 384 --context 256 --batch 8"
for t in 1 2 4 8 16; do
  $B --json --label small --threads $t --steps 30 $SMALL | sed 's/^/tapelm /' >> "$OUT/scale.jsonl"
  python3 torch_reference.py --threads $t --steps 30 $SMALL | sed 's/^/torch small /' >> "$OUT/scale.jsonl"
done
for t in 1 2 4 8 16; do
  $B --json --label mid --threads $t --steps 15 --warmup 2 $MID | sed 's/^/tapelm /' >> "$OUT/scale.jsonl"
  python3 torch_reference.py --threads $t --steps 15 --warmup 2 $MID | sed 's/^/torch mid /' >> "$OUT/scale.jsonl"
done
cat "$OUT/machine.txt" "$OUT/scale.jsonl"
for t in 1 2 4 8 16; do
  OMP_WAIT_POLICY=active $B --json --label small-active --threads $t --steps 30 $SMALL | sed 's/^/tapelm /' >> "$OUT/scale.jsonl"
done
for t in 1 2 4 8 16; do
  OMP_WAIT_POLICY=active $B --json --label mid-active --threads $t --steps 15 --warmup 2 $MID | sed 's/^/tapelm /' >> "$OUT/scale.jsonl"
done
tail -10 "$OUT/scale.jsonl"
