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
    for name, (rows, inner, cols) in {
        "c_attn x·Wᵀ": (m, d, 3 * d),
        "c_fc x·Wᵀ": (m, d, 4 * d),
        "mlp c_proj x·Wᵀ": (m, 4 * d, d),
        "lm_head x·Wᵀ V=50257": (m, d, 50257),
        "lm_head x·Wᵀ V=50304": (m, d, 50304),
        "lm_head dX = G·W V=50257": (m, 50257, d),
        "lm_head dX = G·W V=50304": (m, 50304, d),
        "lm_head dW = Gᵀ·X V=50257": (50257, m, d),
        "lm_head dW = Gᵀ·X V=50304": (50304, m, d),
    }.items():
        a = torch.randn(rows, inner, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(inner, cols, device="cuda", dtype=torch.bfloat16)
        ms = time_ms(lambda: a @ b)
        print(f"{name:<34} {ms:>8.3f} {2 * rows * inner * cols / ms / 1e9:>8.1f}")


if __name__ == "__main__":
    main()
