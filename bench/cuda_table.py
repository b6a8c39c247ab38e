#!/usr/bin/python3
"""The GPU benchmark's table from bench/cuda_bench.sh's bench.jsonl: one row
per run, tapelm and PyTorch side by side. PyTorch's MFU uses tapelm's counted
FLOPs of the same model (linear in the batch) and the same card's measured
product peak, so both columns divide by the same numbers.

    python3 bench/cuda_table.py OUT/bench.jsonl
"""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
ours = {j["label"].rsplit(" ", 1)[0]: j for j in rows if j["label"].endswith(" tapelm")}
print(f"{'configuration':<36} {'batch':>5} {'tokens/s':>10} {'ms/step':>8} {'MFU':>6} {'peak GPU MiB':>12}")
for j in rows:
    mfu = "-"
    if "mfu" in j:
        mfu = f"{100 * j['mfu']:.1f}%"
    else:
        t = ours.get(j["label"].split(" pytorch")[0])
        if t:
            flops = t["flops_per_step"] / t["batch"] * j["batch"]
            mfu = f"{100 * flops / (j['ms_per_step'] / 1e3) / (t['gemm_peak_gflops'] * 1e9):.1f}%"
    print(f"{j['label']:<36} {j['batch']:>5} {j['tokens_per_s']:>10.0f} {j['ms_per_step']:>8.1f} {mfu:>6} "
          f"{j.get('gpu_peak_allocated_mb', 0):>12.0f}")
