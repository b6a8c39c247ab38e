#!/usr/bin/env bash
# The speed benchmark: tapelm beside PyTorch, same model, batch, AdamW and
# thread count, one markdown table. Run from the repository root:
#   bench/run.sh           all rows (about 15 minutes on a 2-core machine)
#   bench/run.sh --quick   fewer timed steps, small config and mixers only
# Needs Debian's python3-torch (run as /usr/bin/python3); PyTorch's CPU speed
# depends on the BLAS it finds: install libopenblas0-openmp (the default
# reference BLAS makes PyTorch about 10x slower, which would flatter tapelm).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
STEPS=30
((QUICK)) && STEPS=10
THREADS="1 2"
MIXERS="linear retnet gated_retention gla deltanet gated_deltanet gau flash mamba mamba2"
SMALL="--n-layer 4 --n-head 4 --n-embd 128 --context 64 --batch 12"
MID="--n-layer 6 --n-head 6 --n-embd 384 --context 256 --batch 8"

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target tapelm_bench >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT

tapelm_row() {  # LABEL THREADS STEPS FLAGS...
  local label=$1 threads=$2 steps=$3
  shift 3
  build/tapelm_bench --json --label "$label" --threads "$threads" --steps "$steps" "$@" | sed 's/^/tapelm /' >>"$out"
}
torch_row() {  # LABEL THREADS STEPS FLAGS...
  local label=$1 threads=$2 steps=$3
  shift 3
  /usr/bin/python3 bench/torch_reference.py --threads "$threads" --steps "$steps" "$@" |
    sed "s/^{/torch {\"label\": \"$label\", /" >>"$out"
}

for t in $THREADS; do
  echo "small config, $t thread(s)..." >&2
  tapelm_row small "$t" "$STEPS" $SMALL
  torch_row small "$t" "$STEPS" $SMALL
  if ((!QUICK)); then
    echo "mid config, $t thread(s)..." >&2
    tapelm_row mid "$t" "$STEPS" $MID --warmup 2
    torch_row mid "$t" "$STEPS" $MID --warmup 2
  fi
done
best=$(nproc)
for m in $MIXERS; do
  echo "mixer $m..." >&2
  tapelm_row "small $m" "$best" "$STEPS" $SMALL --mixer "$m"
  ((QUICK)) || tapelm_row "mid $m" "$best" "$STEPS" $MID --mixer "$m" --warmup 2
done

/usr/bin/python3 - "$out" <<'PY'
import json, sys, platform, subprocess
rows = {"tapelm": [], "torch": []}
for line in open(sys.argv[1]):
    who, js = line.split(" ", 1)
    rows[who].append(json.loads(js))
torch = {(r["label"], r["threads"]): r for r in rows["torch"]}
best = {}
for r in rows["torch"]:
    if r["tokens_per_s"] > best.get(r["label"], {"tokens_per_s": 0})["tokens_per_s"]:
        best[r["label"]] = r
cpu = subprocess.run("lscpu | sed -n 's/^Model name: *//p'", shell=True, capture_output=True, text=True).stdout.strip()
print(f"machine: {cpu}, {subprocess.run('nproc', capture_output=True, text=True).stdout.strip()} cores; "
      f"PyTorch {rows['torch'][0]['torch'] if rows['torch'] else '-'}; GEMM peak measured by tapelm_bench per row\n")
print("| config | threads | tapelm ms/step | tapelm tok/s | GFLOP/s | MFU | peak RSS MB | PyTorch ms/step | PyTorch tok/s | PyTorch RSS MB | tapelm / PyTorch (same threads) | tapelm / PyTorch best |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
def ratio(x, y):
    return f"{x / y:.2f}" if y else "-"
for r in rows["tapelm"]:
    t = torch.get((r["label"], r["threads"]), {})
    b = best.get(r["label"], {})
    cfg = f"{r['label']} (L{r['n_layer']} H{r['n_head']} D{r['n_embd']} T{r['context']} B{r['batch']})"
    cells = [cfg, r["threads"], f"{r['ms_per_step']:.1f}", f"{r['tokens_per_s']:,.0f}", f"{r['gflops_per_s']:.1f}",
             f"{100 * r['mfu']:.0f}% of {r['gemm_peak_gflops']:.0f}", f"{r['peak_rss_mb']:.0f}",
             f"{t['ms_per_step']:.1f}" if t else "-", f"{t['tokens_per_s']:,.0f}" if t else "-",
             f"{t['peak_rss_mb']:.0f}" if t else "-", ratio(r["tokens_per_s"], t.get("tokens_per_s", 0)),
             ratio(r["tokens_per_s"], b.get("tokens_per_s", 0))]
    print("| " + " | ".join(str(c) for c in cells) + " |")
PY
