#!/usr/bin/env python3
"""Markdown table from bench/scale_device.sh's JSON lines ("tapelm {...}" and
"torch {...}"): tokens/s of both, their ratio, peak RSS, and tapelm's MFU
against the GEMM peak tapelm_bench measured at the same thread count. Where a
cell ran several times (REPEAT), each side's fastest run is kept; the last
column says how many runs each side had.

    python3 bench/scale_table.py scale.jsonl [more.jsonl ...]
"""
import json
import sys

rows = {"tapelm": {}, "torch": {}}
runs = {"tapelm": {}, "torch": {}}
for path in sys.argv[1:]:
    for line in open(path):
        who, js = line.split(" ", 1)
        r = json.loads(js)
        key = (r["label"], r["threads"])
        runs[who][key] = runs[who].get(key, 0) + 1
        if key not in rows[who] or r["tokens_per_s"] > rows[who][key]["tokens_per_s"]:
            rows[who][key] = r

names = {"small": "small L4 H4 D128 T64 B12 V65", "mid": "mid L6 H6 D384 T256 B8 V65",
         "gpt2": "GPT-2 small shape L12 H12 D768 T256 B4 V50257"}
print("| config | threads | tapelm tok/s | PyTorch tok/s | tapelm / PyTorch | tapelm MFU (of its GEMM peak) "
      "| tapelm peak RSS MB | PyTorch peak RSS MB | runs |")
print("|---|---|---|---|---|---|---|---|---|")
for (label, threads), r in rows["tapelm"].items():
    t = rows["torch"].get((label, threads))
    cells = [names.get(label, label), threads, f"{r['tokens_per_s']:,.0f}",
             f"{t['tokens_per_s']:,.0f}" if t else "-",
             f"{r['tokens_per_s'] / t['tokens_per_s']:.2f}" if t else "-",
             f"{100 * r['mfu']:.0f}% of {r['gemm_peak_gflops']:.0f} GFLOP/s", f"{r['peak_rss_mb']:.0f}",
             f"{t['peak_rss_mb']:.0f}" if t else "-",
             f"{runs['tapelm'][(label, threads)]} / {runs['torch'].get((label, threads), 0)}"]
    print("| " + " | ".join(str(c) for c in cells) + " |")
