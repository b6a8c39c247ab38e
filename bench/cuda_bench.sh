#!/usr/bin/env bash
# The GPU benchmark, in one call on the lent machine: tapelm_bench --device
# cuda (binaries from bench/cuda_bundle.sh in dist/cuda/) beside the
# project's nanoGPT-equivalent PyTorch model (bench/torch_reference.py: bf16
# autocast or fp32 with TF32 off, fused AdamW, torch.compile or eager) on the
# same card in the same run: tokens/s of the median step (CUDA events), MFU
# against the card's measured product peak, peak GPU memory. Prints a table
# last; every run's JSON line goes to $OUT/bench.jsonl. Nothing is built here.
#
#   bash bench/cuda_bench.sh            # every row (about 8 minutes on an H100)
#   ROWS="small" bash bench/cuda_bench.sh
#   BASELINE_ROWS="gpt2-bf16" bash bench/cuda_bench.sh   # also dist/baseline/tapelm_bench (an earlier build)
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/cuda_env.sh
out=${OUT:-/tmp/tapelm-cuda-out}
mkdir -p "$out"
jsonl="$out/bench.jsonl"
: >"$jsonl"
python=${PYTHON:-python3}
rows=${ROWS:-"gpt2-bf16 gpt2-fp32 char-bf16 char-fp32 small"}

# Whether a space-separated list names a row.
listed() { [[ " $1 " == *" $2 "* ]]; }

# One configuration: its name, precision, the model flags, and the batches of
# tapelm, compiled PyTorch and eager PyTorch ("-" skips one).
run_row() {
  local name=$1 precision=$2 model=$3 tb=$4 cb=$5 eb=$6 steps=$7
  local common="--steps $steps --warmup 3"
  for b in $tb; do
    [ "$b" = - ] && continue
    timeout 300 dist/cuda/tapelm_bench $model --batch "$b" --device cuda --precision "$precision" $common --json \
      --label "$name tapelm" 2>"$out/err_tapelm_${name}_$b.txt" | tail -1 >>"$jsonl" ||
      { echo "tapelm $name batch $b failed:"; tail -3 "$out/err_tapelm_${name}_$b.txt"; }
  done
  # A change's before: a tapelm_bench of an earlier commit in dist/baseline/ (carried beside dist/cuda/), first batch only.
  if [ -x dist/baseline/tapelm_bench ] && listed "${BASELINE_ROWS:-}" "$name"; then
    local b=${tb%% *}
    timeout 300 dist/baseline/tapelm_bench $model --batch "$b" --device cuda --precision "$precision" $common --json \
      --label "$name tapelm-baseline" 2>"$out/err_baseline_${name}_$b.txt" | tail -1 >>"$jsonl" ||
      { echo "baseline $name batch $b failed:"; tail -3 "$out/err_baseline_${name}_$b.txt"; }
  fi
  # NO_TORCH_ROWS="small ...": tapelm only for these rows (a short device call).
  listed "${NO_TORCH_ROWS:-}" "$name" && return
  for mode in compiled eager; do
    local batches=$cb flag=--compile
    [ $mode = eager ] && batches=$eb flag=
    for b in $batches; do
      [ "$b" = - ] && continue
      timeout 300 "$python" bench/torch_reference.py $model --batch "$b" --device cuda --precision "$precision" \
        $flag $common 2>"$out/err_torch_${name}_${mode}_$b.txt" |
        tail -1 | "$python" -c "import json,sys; j=json.loads(sys.stdin.read()); j['label']='$name pytorch $mode'; j['batch']=$b; print(json.dumps(j))" \
          >>"$jsonl" || { echo "pytorch $mode $name batch $b failed:"; tail -3 "$out/err_torch_${name}_${mode}_$b.txt"; }
    done
  done
}

gpt2="--n-layer 12 --n-head 12 --n-embd 768 --context 1024 --vocab-size 50257"
char="--n-layer 6 --n-head 6 --n-embd 384 --context 256 --vocab-size 65"
small="--n-layer 4 --n-head 4 --n-embd 128 --context 64 --vocab-size 65"
echo "== $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader); $("$python" -c 'import torch; print("PyTorch", torch.__version__)')"
for r in $rows; do
  echo "== $r"
  case $r in
    gpt2-bf16) run_row "$r" bf16 "$gpt2" "${GPT2_BATCHES:-16 32}" "32" "${GPT2_EAGER_BATCHES:-32}" 10 ;;
    gpt2-fp32) run_row "$r" fp32 "$gpt2" "16" "-" "16" 6 ;;
    char-bf16) run_row "$r" bf16 "$char" "64" "64" "-" 20 ;;
    char-fp32) run_row "$r" fp32 "$char" "64" "${CHAR_FP32_COMPILED:-64}" "${CHAR_FP32_EAGER:--}" 20 ;;
    small) run_row "$r" fp32 "$small" "12" "12" "12" 30 ;;
  esac
done

echo "== table"
"$python" bench/cuda_table.py "$jsonl"
