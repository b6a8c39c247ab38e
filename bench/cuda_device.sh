#!/usr/bin/env bash
# Runs on the lent GPU machine, in one call, with the binaries that
# bench/cuda_bundle.sh put in dist/cuda/: the environment, the GPU tests,
# compute-sanitizer (memcheck, racecheck) on the small op tests, and a
# summary table last. Nothing is built here.
set -uo pipefail
cd "$(dirname "$0")/.."
# cuBLAS is opened at the first product: find the machine's libcublas.so.13 if the loader does not.
cublas_dir=/usr/local/cuda/lib64
if ! ldconfig -p | grep -q 'libcublas.so.13'; then
  found=$(find /usr/local /usr/lib /opt -name 'libcublas.so.13*' 2>/dev/null | head -1)
  [ -n "$found" ] && cublas_dir=$(dirname "$found")
fi
export LD_LIBRARY_PATH="$PWD/dist/cuda/lib:$cublas_dir:${LD_LIBRARY_PATH:-}"
export TAPELM_SOURCE_DIR="$PWD"
out=${OUT:-/tmp/tapelm-cuda-out}
mkdir -p "$out"
echo "== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
ldd dist/cuda/tapelm_tests | grep -E "not found" || true
echo "cuBLAS from: $cublas_dir"; ls "$cublas_dir"/libcublas.so.13* 2>&1 | head -2
echo "== GPU tests"
dist/cuda/tapelm_tests --gtest_filter='Cuda.*' 2>&1 | tee "$out/gpu_tests.txt" | tail -40
tests_rc=${PIPESTATUS[0]}
echo "== compute-sanitizer"
san_rc=0
for tool in memcheck racecheck; do
  compute-sanitizer --tool "$tool" --error-exitcode 9 dist/cuda/tapelm_tests \
    --gtest_filter='Cuda.ElementwiseOps*:Cuda.RowOps*:Cuda.Products*:Cuda.Reductions*' >"$out/sanitizer_$tool.txt" 2>&1
  rc=$?
  tail -3 "$out/sanitizer_$tool.txt"
  [ $rc -ne 0 ] && san_rc=$rc
  echo "$tool: exit $rc"
done
echo "== train: the default small config, 300 steps, cpu and cuda"
corpus=dist/cuda/data/tinyshakespeare.txt  # bench/cuda_bundle.sh's caller copies the corpus there
for d in cpu cuda; do
  dist/cuda/tapelm train --data "$corpus" --out "$out/run-$d" --steps 300 --eval-interval 300 --device "$d" \
    --overwrite >"$out/train_$d.txt" 2>&1
  echo "$d: exit $?"; grep -E "^device|^step 300|val loss|^speed|^ran on the CPU|error" "$out/train_$d.txt" | tail -6
done
echo "== eval of the cpu run's checkpoint on both devices"
for d in cpu cuda; do
  dist/cuda/tapelm eval --checkpoint "$out/run-cpu" --data "$corpus" --device "$d" >"$out/eval_$d.txt" 2>&1
  echo "$d: exit $? $(cat "$out/eval_$d.txt" | tail -1)"
done
echo "== summary"
printf '%-28s %s\n' "GPU tests (Cuda.*)" "$(grep -E '^\[  (PASSED|FAILED)' "$out/gpu_tests.txt" | tr '\n' ' ') exit $tests_rc"
printf '%-28s %s\n' "compute-sanitizer" "exit $san_rc"
for d in cpu cuda; do
  printf '%-28s %s\n' "train $d" "$(grep -E '^speed' "$out/train_$d.txt" | head -1)"
  printf '%-28s %s\n' "eval $d" "$(tail -1 "$out/eval_$d.txt")"
done
