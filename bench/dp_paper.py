#!/usr/bin/env python3
"""Data parallelism across machines, on paper: the step time of R machines on
a 10 Gb/s and a 100 Gb/s network, from a measured one-machine step time and
the bytes a ring all-reduce moves.

A ring all-reduce of S bytes over R ranks sends and receives 2(R-1)/R * S bytes
per rank in 2(R-1) hops (reduce-scatter, then all-gather); at bandwidth W and
per-hop latency a it takes 2(R-1)/R * S / W + 2(R-1) * a. tapelm reduces after
backward (no overlap), so a step takes compute + all-reduce; with the reduction
overlapped with backward (2/3 of the compute) it could take
compute/3 + max(2/3 compute, all-reduce), which the table shows as a bound.

Two ways to grow:
  weak:   each machine keeps its batch (the global batch grows R-fold): the
          compute per step stays, the all-reduce is added.
  strong: the global batch stays (as in the one-machine table): the compute
          per machine shrinks R-fold, the all-reduce does not.

Usage: python3 bench/dp_paper.py  (prints docs/data_parallel.md's markdown table)
"""

# One machine = the lent 16-core Xeon at 16 threads (docs/performance.md, "Many cores":
# bench/results/scale_16core.jsonl at 30ea294): tokens/s at the table's batch.
SHAPES = {
    # name: (parameters, all reduced in float32; sequences and tokens per step; tokens/s on one machine)
    "mid (L6 H6 D384 T256 B8)": (10_770_816, 8, 8 * 256, 8_851),
    "GPT-2 small shape (L12 H12 D768 T256 B4 V50257)": (123_849_984, 4, 4 * 256, 986),
}
NETWORKS = {"10 Gb/s": 10e9 / 8, "100 Gb/s": 100e9 / 8}
LATENCY = 20e-6  # seconds per hop on an Ethernet network with TCP
RANKS = [1, 2, 4, 8, 16, 64]


def allreduce_seconds(nbytes, ranks, bandwidth):
    if ranks == 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * LATENCY


def main():
    print("| shape | network | R | all-reduce s | weak: step s (efficiency) | weak, overlapped: step s | strong: step s (speed-up) |")
    print("|---|---|---|---|---|---|---|")
    for shape, (params, sequences, tokens, tps) in SHAPES.items():
        compute = tokens / tps
        nbytes = 4 * params
        for net, bandwidth in NETWORKS.items():
            for r in RANKS:
                comm = allreduce_seconds(nbytes, r, bandwidth)
                weak = compute + comm
                overlapped = compute / 3 + max(2 * compute / 3, comm)
                # Strong: at most one sequence per machine, and the compute
                # taken as shrinking R-fold (small batches run GEMMs less well,
                # so this is optimistic).
                strong = compute / r + comm
                strong_cell = f"{strong:.3f} ({compute / strong:.2f}×)" if r <= sequences else "—"
                print(f"| {shape} | {net} | {r} | {comm:.3f} | {weak:.3f} ({compute / weak:.0%}) | "
                      f"{overlapped:.3f} | {strong_cell} |")
        print(f"| {shape}: {nbytes / 1e6:.0f} MB of gradients, {compute:.3f} s of compute per step on one machine | | | | | | |")


if __name__ == "__main__":
    main()
