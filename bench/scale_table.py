#!/usr/bin/env python3
"""Markdown table from bench/scale_device.sh's JSON lines ("tapelm {...}" and
"torch {...}"): tokens/s of both, their ratio, peak RSS, and tapelm's MFU
against the GEMM peak tapelm_bench measured at the same thread count.

    python3 bench/scale_table.py scale.jsonl
"""
import json
import sys

rows = {"tapelm": {}, "torch": {}}
for line in open(sys.argv[1]):
    who, js = line.split(" ", 1)
    r = json.loads(js)
    rows[who][(r["label"], r["threads"])] = r

names = {"small": "small L4 H4 D128 T64 B12 V65", "mid": "mid L6 H6 D384 T256 B8 V65",
         "gpt2": "GPT-2 small shape L12 H12 D768 T256 B4 V50257"}
print("| config | threads | tapelm tok/s | PyTorch tok/s | tapelm / PyTorch | tapelm MFU (of its GEMM peak) "
      "| tapelm peak RSS MB | PyTorch peak RSS MB |")
print("|---|---|---|---|---|---|---|---|")
for (label, threads), r in rows["tapelm"].items():
    t = rows["torch"].get((label, threads))
    cells = [names.get(label, label), threads, f"{r['tokens_per_s']:,.0f}",
             f"{t['tokens_per_s']:,.0f}" if t else "-",
             f"{r['tokens_per_s'] / t['tokens_per_s']:.2f}" if t else "-",
             f"{100 * r['mfu']:.0f}% of {r['gemm_peak_gflops']:.0f} GFLOP/s", f"{r['peak_rss_mb']:.0f}",
             f"{t['peak_rss_mb']:.0f}" if t else "-"]
    print("| " + " | ".join(str(c) for c in cells) + " |")
