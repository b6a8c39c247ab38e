#!/usr/bin/env bash
# Runs on the lent GPU machine, in one call, with the binaries that
# bench/cuda_bundle.sh put in dist/cuda/: the environment, the GPU tests,
# compute-sanitizer (memcheck, racecheck) on the small op tests, 2000-step
# training runs on both devices and both precisions, exact resume, eval,
# sample and flops across devices, and a summary table last. Nothing is built here.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/cuda_env.sh
out=${OUT:-/tmp/tapelm-cuda-out}
mkdir -p "$out"
# SECTIONS="tests runs" (the default): the GPU tests and compute-sanitizer; the training runs, resume, eval, sample, flops.
sections=" ${SECTIONS:-tests runs} "
tests_rc=skipped san_rc=skipped
echo "== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
ldd dist/cuda/tapelm_tests | grep -E "not found" || true
echo "cuBLAS from: $cublas_dir"; ls "$cublas_dir"/libcublas.so.13* 2>&1 | head -2
if [[ $sections == *" tests "* ]]; then
echo "== GPU tests"
dist/cuda/tapelm_tests --gtest_filter='Cuda.*' 2>&1 | tee "$out/gpu_tests.txt" | tail -40
tests_rc=${PIPESTATUS[0]}
echo "== compute-sanitizer"
san_rc=0
# memcheck over the op tests; racecheck (slow) over the kernels with shared-memory tiles.
for tool in memcheck racecheck; do
  filter='Cuda.ElementwiseOps*:Cuda.RowOps*:Cuda.Products*:Cuda.Reductions*:Cuda.Attention*:Cuda.Bf16*:Cuda.Flash*:Cuda.Dropout*'
  [ $tool = racecheck ] && filter=${RACECHECK_FILTER:-'Cuda.Flash*:Cuda.RowOps*'}
  timeout 150 compute-sanitizer --tool "$tool" --error-exitcode 9 dist/cuda/tapelm_tests --gtest_filter="$filter" \
    >"$out/sanitizer_$tool.txt" 2>&1
  rc=$?
  tail -3 "$out/sanitizer_$tool.txt"
  [ $rc -ne 0 ] && san_rc=$rc
  echo "$tool: exit $rc"
done
fi
if [[ $sections == *" runs "* ]]; then
echo "== train: the default config (nanoGPT's README CPU recipe), 2000 steps: cpu, cuda fp32, cuda bf16"
corpus=dist/cuda/data/tinyshakespeare.txt  # bench/cuda_bundle.sh's caller copies the corpus there
train() {  # name, flags...
  local name=$1; shift
  dist/cuda/tapelm train --data "$corpus" --out "$out/run-$name" --overwrite --quiet "$@" >"$out/train_$name.txt" 2>&1
  echo "$name: exit $? | $(grep -E 'val loss' "$out/train_$name.txt" | tail -1) | $(grep -E '^ran on the CPU' "$out/train_$name.txt" || echo 'no CPU fallback')"
}
train cpu --device cpu
train cuda-fp32 --device cuda
train cuda-bf16 --device cuda --precision bf16
echo "== exact resume on the GPU: 1000 steps, stop, resume to 2000 (cosine over 2000 both times)"
train cuda-half --device cuda --steps 1000 --lr-decay-steps 2000
dist/cuda/tapelm train --data "$corpus" --out "$out/run-cuda-half" --resume --quiet --steps 2000 --lr-decay-steps 2000 \
  >"$out/train_cuda-resumed.txt" 2>&1
echo "resumed: exit $?"
# The tensors' bytes of two checkpoints (their headers differ: they hold the run's flags).
same_weights() {
  python3 -c "import struct, sys
def payload(p):
    b = open(p, 'rb').read()
    return b[8 + struct.unpack('<Q', b[:8])[0]:]
sys.exit(0 if payload(sys.argv[1]) == payload(sys.argv[2]) else 1)" "$1/model.safetensors" "$2/model.safetensors"
}
if same_weights "$out/run-cuda-half" "$out/run-cuda-fp32"; then
  resume_result="the same weights, bit for bit, as the uninterrupted run"
else
  resume_result="DIFFERENT weights from the uninterrupted run"
  grep -h '"step":2000' "$out/run-cuda-half/log.jsonl" "$out/run-cuda-fp32/log.jsonl" | cut -c1-160
fi
echo "$resume_result"
echo "== the same GPU run twice"
train cuda-fp32-again --device cuda
if same_weights "$out/run-cuda-fp32-again" "$out/run-cuda-fp32"; then
  repeat_result="the same weights, bit for bit"
else
  repeat_result="DIFFERENT weights"
fi
echo "$repeat_result"
echo "== eval of the cpu run's and the GPU run's checkpoints on both devices"
for run in cpu cuda-fp32; do
  for d in cpu cuda; do
    dist/cuda/tapelm eval --checkpoint "$out/run-$run" --data "$corpus" --device "$d" >"$out/eval_${run}_$d.txt" 2>&1
    echo "$run on $d: exit $? $(tail -1 "$out/eval_${run}_$d.txt")"
  done
done
echo "== sample: the GPU's checkpoint on the CPU, the CPU's on the GPU (same seed: same text when exact)"
dist/cuda/tapelm sample --checkpoint "$out/run-cuda-fp32" --tokens 200 --device cpu >"$out/sample_gpu_ck_on_cpu.txt" 2>&1
echo "exit $?"; tail -c 300 "$out/sample_gpu_ck_on_cpu.txt"; echo
dist/cuda/tapelm sample --checkpoint "$out/run-cuda-fp32" --tokens 200 --device cuda --stats >"$out/sample_gpu_ck_on_gpu.txt" 2>&1
echo "exit $?"; tail -c 400 "$out/sample_gpu_ck_on_gpu.txt"; echo
if cmp -s <(head -c 150 "$out/sample_gpu_ck_on_cpu.txt") <(head -c 150 "$out/sample_gpu_ck_on_gpu.txt"); then
  sample_result="the first 150 bytes equal on both devices"
else
  sample_result="the texts differ within 150 bytes"
fi
echo "== flops: the tape's count on the GPU equals the CPU's"
dist/cuda/tapelm flops --device cpu >"$out/flops_cpu.txt" 2>&1
dist/cuda/tapelm flops --device cuda >"$out/flops_cuda.txt" 2>&1
if cmp -s "$out/flops_cpu.txt" "$out/flops_cuda.txt"; then flops_result="same report"; else flops_result="reports differ"; diff "$out/flops_cpu.txt" "$out/flops_cuda.txt" | head; fi
fi
echo "== summary"
printf '%-24s %s\n' "GPU tests (Cuda.*)" "$(grep -E '^\[  (PASSED|FAILED)' "$out/gpu_tests.txt" | tr '\n' ' ') exit $tests_rc"
printf '%-24s %s\n' "compute-sanitizer" "exit $san_rc (memcheck, racecheck)"
for r in cpu cuda-fp32 cuda-bf16; do
  printf '%-24s %s | %s\n' "train $r, 2000 steps" "$(grep -E 'val loss' "$out/train_$r.txt" | tail -1)" \
    "$(grep -E '^speed' "$out/train_$r.txt" | head -1 | cut -c1-100)"
done
printf '%-24s %s\n' "GPU resume at 1000" "$resume_result"
printf '%-24s %s\n' "GPU run repeated" "$repeat_result"
for run in cpu cuda-fp32; do
  for d in cpu cuda; do printf '%-24s %s\n' "eval $run on $d" "$(tail -1 "$out/eval_${run}_$d.txt" | cut -c1-60)"; done
done
printf '%-24s %s\n' "sample" "$sample_result"
printf '%-24s %s\n' "flops cpu vs cuda" "$flops_result"
