#!/usr/bin/env bash
# Part 1's whole GPU check in one lean call on the lent machine (binaries from
# bench/cuda_bundle.sh in dist/cuda/; about 2.5 minutes on an H100): the GPU
# tests, the GPT-2 benchmark beside compiled PyTorch and the dist/baseline/
# build, compute-sanitizer memcheck over the op tests and racecheck over the
# fused attention, the char and small rows, then bench/cuda_device.sh's
# training runs (2000 steps on both devices, exact resume, the run repeated,
# eval, sample and flops across devices). The README's GPU table comes from it.
#
#   bash bench/cuda_part1.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/cuda_env.sh
export OUT=${OUT:-/tmp/tapelm-cuda-out}; mkdir -p $OUT
s=$SECONDS
timeout 60 dist/cuda/tapelm_tests --gtest_filter='Cuda.*' >$OUT/gpu_tests.txt 2>&1; echo "tests rc=$?"
grep -E '^\[  (FAILED|PASSED) ' $OUT/gpu_tests.txt | head; grep -B3 -A12 Failure $OUT/gpu_tests.txt | head -30
echo "tests: $((SECONDS-s)) s"
ROWS=gpt2-bf16 GPT2_BATCHES="16 32" GPT2_EAGER_BATCHES=- BASELINE_ROWS=gpt2-bf16 timeout 150 bash bench/cuda_bench.sh >$OUT/bench_gpt2.txt 2>&1
tail -5 $OUT/bench_gpt2.txt; cp $OUT/bench.jsonl $OUT/bench_gpt2.jsonl
echo "bench: $((SECONDS-s)) s"
for tool in memcheck racecheck; do
  filter='Cuda.ElementwiseOps*:Cuda.RowOps*:Cuda.Products*:Cuda.Bf16*:Cuda.Attention*'
  [ $tool = racecheck ] && filter='Cuda.Flash*:Cuda.PackedFlash*'
  timeout 60 compute-sanitizer --tool $tool --error-exitcode 9 dist/cuda/tapelm_tests --gtest_filter="$filter" >$OUT/sanitizer_$tool.txt 2>&1
  echo "$tool rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/sanitizer_$tool.txt)"
done
echo "sanitizers: $((SECONDS-s)) s"
ROWS="char-bf16 char-fp32 small" NO_TORCH_ROWS="char-bf16 char-fp32 small" timeout 60 bash bench/cuda_bench.sh >$OUT/bench_char.txt 2>&1
tail -5 $OUT/bench_char.txt; echo "char: $((SECONDS-s)) s"
SECTIONS=runs timeout 240 bash bench/cuda_device.sh >$OUT/device_runs.txt 2>&1
sed -n '/== summary/,$p' $OUT/device_runs.txt
echo "total: $((SECONDS-s)) s"
