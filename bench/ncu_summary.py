"""Sums Nsight Compute's gpu__time_duration per kernel name over the timed
step of a `ncu --csv` report of `tapelm_bench --warmup 1 --steps 1`
(bench/cuda_profile.sh) and prints the kernels by total time. The launches
after the product-peak measurement (its operands are filled by k_fill_hash)
are two equal steps: the second half is the timed one."""
import collections
import csv
import sys


def main(path):
    rows = []
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu's own log lines are not CSV
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        scale = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0, "second": 1e3, "s": 1e3}[r["Metric Unit"]]
        rows.append((int(r["ID"]), r["Kernel Name"], float(r["Metric Value"].replace(",", "")) * scale))
    rows.sort()
    fills = [i for i, (_, name, _) in enumerate(rows) if "k_fill_hash" in name]
    steps = rows[fills[-1] + 1:] if fills else rows
    timed = steps[len(steps) // 2:]
    total = sum(ms for _, _, ms in timed)
    by_name = collections.defaultdict(lambda: [0.0, 0])
    for _, name, ms in timed:
        short = name.split("(")[0][:70]
        by_name[short][0] += ms
        by_name[short][1] += 1
    print(f"{len(timed)} kernels in the timed step, {total:.2f} ms of kernel time")
    print(f"{'kernel':<70} {'ms':>9} {'share':>6} {'calls':>6}")
    for name, (ms, n) in sorted(by_name.items(), key=lambda kv: -kv[1][0]):
        print(f"{name:<70} {ms:>9.3f} {100 * ms / total:>5.1f}% {n:>6}")


if __name__ == "__main__":
    main(sys.argv[1])
