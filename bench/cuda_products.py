"""The GPT-2 step's products on this GPU through PyTorch's cuBLAS, bf16
operands: each shape's time (CUDA events, median of 20) and TFLOP/s, the
classifier at the true vocabulary (50,257: rows not 16-byte aligned) and
padded to 50,304, to tell how much the alignment costs. Random operands.

    python3 bench/cuda_products.py [--rows 16384]
"""
import argparse

import torch


def time_ms(fn, reps=20):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=16384)
    args = ap.parse_args()
    m, d = args.rows, 768
    print(f"{'product':<34} {'ms':>8} {'TFLOP/s':>8}")
    x = torch.randn(m, d, device="cuda", dtype=torch.bfloat16)
    for v in (50257, 50304):
        w = torch.randn(v, d, device="cuda", dtype=torch.bfloat16)  # nn.Linear's [out, in]
        g = torch.randn(m, v, device="cuda", dtype=torch.bfloat16)  # the logits' gradient
        for name, fn, flops in (
            (f"lm_head logits = x·Wᵀ V={v}", lambda: x @ w.t(), 2 * m * d * v),
            (f"lm_head dX = G·W V={v}", lambda: g @ w, 2 * m * d * v),
            (f"lm_head dW = Gᵀ·x V={v}", lambda: g.t() @ x, 2 * m * d * v),
        ):
            ms = time_ms(fn)
            print(f"{name:<34} {ms:>8.3f} {flops / ms / 1e9:>8.1f}")
    for name, (inner, cols) in {"c_attn x·Wᵀ": (d, 3 * d), "c_fc x·Wᵀ": (d, 4 * d), "mlp c_proj": (4 * d, d)}.items():
        a = torch.randn(m, inner, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(cols, inner, device="cuda", dtype=torch.bfloat16)
        ms = time_ms(lambda: a @ w.t())
        print(f"{name:<34} {ms:>8.3f} {2 * m * inner * cols / ms / 1e9:>8.1f}")


if __name__ == "__main__":
    main()
