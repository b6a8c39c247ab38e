#!/usr/bin/python3
"""PyTorch reference for bench/run.sh: trains nanoGPT's GPT (the same model
tapelm builds by default: learned positions, LayerNorm with bias, GELU FFN,
tied LM head, no dropout, nanoGPT's init; scaled_dot_product_attention on
PyTorch >= 2.0, the explicit mask before) with AdamW on random tokens, and
prints one JSON line with the median ms/step, tokens/s and peak RSS.

Run with Debian's python3-torch: /usr/bin/python3 bench/torch_reference.py \
    --n-layer 4 --n-head 4 --n-embd 128 --context 64 --batch 12 --vocab 65 --threads 1

On a GPU (PyTorch 2.x), as nanoGPT's train.py runs there: --device cuda
[--precision bf16] [--compile]: bf16 is torch.autocast(dtype=bfloat16) around
the forward and loss, fp32 turns TF32 off; AdamW is the fused CUDA kernel
(nanoGPT's choice); steps are timed with CUDA events and the peak GPU memory
is torch.cuda.max_memory_allocated after the warm-up.
"""
import contextlib
import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def attention(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        heads = lambda t: t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q, k, v = heads(q), heads(k), heads(v)
        if hasattr(F, "scaled_dot_product_attention"):
            # nanoGPT on PyTorch >= 2.0: the fused (flash) kernel.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # nanoGPT's path for PyTorch < 2.0.
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            mask = torch.ones(T, T, dtype=torch.bool).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, vocab, context, n_layer, n_head, d):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(context, d)
        self.h = nn.ModuleList([Block(d, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        # nanoGPT's init: N(0, 0.02) for every Linear and Embedding weight
        # (the tied embedding included; nn.Embedding's own N(0, 1) made 15% of
        # the GPT-2 shape's logit gradients subnormal and PyTorch 4x slower),
        # zero biases, and N(0, 0.02/sqrt(2·n_layer)) for the residual
        # projections.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or name.endswith("mlp_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, idx, targets):
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--vocab-size", "--vocab", dest="vocab", type=int, default=65)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (PyTorch >= 2.0)")
    a = ap.parse_args()
    gpu = a.device == "cuda"
    torch.set_num_threads(a.threads)
    torch.manual_seed(1337)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 is exact float32; bf16 comes from autocast
        torch.backends.cudnn.allow_tf32 = False
    model = GPT(a.vocab, a.context, a.n_layer, a.n_head, a.n_embd).to(a.device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99),
                            **({"fused": True} if gpu else {}))
    step_model = torch.compile(model) if a.compile else model
    autocast = (torch.autocast(device_type=a.device, dtype=torch.bfloat16) if a.precision == "bf16"
                else contextlib.nullcontext())
    times = []
    for step in range(a.warmup + a.steps):
        x = torch.randint(a.vocab, (a.batch, a.context), device=a.device)
        y = torch.randint(a.vocab, (a.batch, a.context), device=a.device)
        if gpu and step == a.warmup:
            torch.cuda.reset_peak_memory_stats()
        if gpu:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        with autocast:
            loss = step_model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if gpu:
            stop.record()
            stop.synchronize()
            seconds = start.elapsed_time(stop) / 1e3
        else:
            seconds = time.perf_counter() - t0
        if step >= a.warmup:
            times.append(seconds)
    ms = statistics.median(times) * 1e3
    out = {"ms_per_step": ms, "tokens_per_s": a.batch * a.context / (ms / 1e3),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "threads": a.threads, "torch": torch.__version__, "device": a.device, "precision": a.precision,
           "compile": a.compile}
    if gpu:
        out["gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu_peak_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
