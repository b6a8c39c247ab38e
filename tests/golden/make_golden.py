#!/usr/bin/python3
"""Writes the PyTorch golden files that tests/test_golden.cpp checks tapelm against.

Each module (and a 2-layer model) is written here in plain PyTorch, in float64,
with random weights; every file holds the inputs (`input.*`), the weights under
tapelm's / nanoGPT's names (`param.*`), the outputs (`output.*`), the upstream
gradient used for backward (`upstream.*`) and every gradient (`grad.*`).
The C++ tests need no Python: the files are committed.

Regenerate (Debian 12: apt-get install python3-torch) from the repository root:
    /usr/bin/python3 tests/golden/make_golden.py
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

torch.manual_seed(0)
DT = torch.float64
OUT = os.path.dirname(os.path.abspath(__file__))


def save(name, tensors):
    """Minimal safetensors writer (torch 1.13 has no safetensors package)."""
    header, blobs, offset = {}, [], 0
    codes = {torch.float64: "F64", torch.float32: "F32", torch.int32: "I32", torch.bool: "BOOL"}
    for key in sorted(tensors):
        t = tensors[key].detach().contiguous()
        data = t.numpy().tobytes()
        header[key] = {"dtype": codes[t.dtype], "shape": list(t.shape),
                       "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (len(h) + 8) % 8) % 8)
    with open(os.path.join(OUT, name + ".safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def rand(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=DT) * scale).requires_grad_()


def gain(n):  # norm gains near 1, so tests see non-trivial values
    return (1 + 0.1 * torch.randn(n, dtype=DT)).requires_grad_()


# ---- modules, written as tapelm (and nanoGPT) define them -------------------

def layernorm(x, w, b, eps=1e-5):
    return F.layer_norm(x, w.shape, w, b, eps)


def rmsnorm(x, w, eps=1e-5):
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if w is None else y * w


def dyt(x, alpha, w, b):
    return torch.tanh(alpha * x) * w + b


def linear(x, p, prefix, bias=True):
    return F.linear(x, p[prefix + ".weight"], p.get(prefix + ".bias") if bias else None)


def ffn(x, p, prefix, kind, bias=True):
    if kind == "swiglu":
        h = F.silu(linear(x, p, prefix + ".c_gate", bias)) * linear(x, p, prefix + ".c_fc", bias)
    else:
        h = linear(x, p, prefix + ".c_fc", bias)
        h = F.gelu(h) if kind == "gelu" else F.relu(h)
    return linear(h, p, prefix + ".c_proj", bias)


def position_ids(pad):
    """Real tokens before each position (HF convention); pads repeat the last one."""
    valid = (~pad).long()
    before = torch.cumsum(valid, 1) - valid
    return torch.where(pad, (before - 1).clamp(min=0), before)


def rope(x, pos, base=10000.0):
    """x [B,H,T,hd], rotate-half layout (GPT-NeoX / LLaMA)."""
    hd = x.shape[-1]
    inv = base ** (-torch.arange(0, hd, 2, dtype=DT) / hd)
    ang = pos.to(DT)[..., None] * inv  # [B,T,hd/2]
    ang = torch.cat([ang, ang], -1)[:, None]  # [B,1,T,hd]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * ang.cos() + torch.cat([-x2, x1], -1) * ang.sin()


def attention(x, p, prefix, n_head, pad, use_rope, bias=True):
    B, T, C = x.shape
    q, k, v = linear(x, p, prefix + ".c_attn", bias).split(C, dim=2)
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
    if use_rope:
        pos = position_ids(pad)
        q, k = rope(q, pos), rope(k, pos)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    mask = causal[None, None] | pad[:, None, None, :]
    att = att.masked_fill(mask, float("-inf"))
    att = F.softmax(att, dim=-1)
    att = att.masked_fill(mask.all(-1, keepdim=True), 0.0)  # fully masked query -> zeros
    y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
    return linear(y, p, prefix + ".c_proj", bias)


def sinusoidal_table(n_pos, dim):
    """'Attention is all you need' §3.5: sin on even, cos on odd dimensions."""
    pos = torch.arange(n_pos, dtype=DT)[:, None]
    i = torch.arange(0, dim, 2, dtype=DT)
    ang = pos / 10000 ** (i / dim)
    table = torch.zeros(n_pos, dim, dtype=DT)
    table[:, 0::2], table[:, 1::2] = ang.sin(), ang.cos()
    return table


def norm(x, p, prefix, kind, bias=True):
    if kind == "layernorm":
        return layernorm(x, p[prefix + ".weight"], p.get(prefix + ".bias") if bias else None)
    if kind == "rmsnorm":
        return rmsnorm(x, p[prefix + ".weight"])
    return dyt(x, p[prefix + ".alpha"], p[prefix + ".weight"], p[prefix + ".bias"])


def gpt(idx, p, cfg, pad):
    """nanoGPT's GPT.forward (dropout 0), with tapelm's options and padding."""
    B, T = idx.shape
    x = F.embedding(idx.long(), p["transformer.wte.weight"])
    if cfg["position"] == "learned":
        x = x + F.embedding(position_ids(pad), p["transformer.wpe.weight"])
    if cfg["position"] == "sinusoidal":
        x = x + sinusoidal_table(cfg["block_size"], cfg["n_embd"])[position_ids(pad)]
    for i in range(cfg["n_layer"]):
        pre = f"transformer.h.{i}"
        x = x + attention(norm(x, p, pre + ".ln_1", cfg["norm"], cfg["bias"]), p, pre + ".attn",
                          cfg["n_head"], pad, cfg["position"] == "rope", cfg["bias"])
        x = x + ffn(norm(x, p, pre + ".ln_2", cfg["norm"], cfg["bias"]), p, pre + ".mlp",
                    cfg["ffn"], cfg["bias"])
    x = norm(x, p, "transformer.ln_f", cfg["norm"], cfg["bias"])
    head = p["transformer.wte.weight"] if cfg["tie_weights"] else p["lm_head.weight"]
    return F.linear(x, head)


def gpt_params(cfg):
    C, V, L, H = cfg["n_embd"], cfg["vocab_size"], cfg["n_layer"], 4 * cfg["n_embd"]
    p = {"transformer.wte.weight": rand(V, C, scale=0.5)}
    if cfg["position"] == "learned":
        p["transformer.wpe.weight"] = rand(cfg["block_size"], C, scale=0.2)

    def add_norm(prefix):
        p[prefix + ".weight"] = gain(C)
        if cfg["norm"] == "dyt":
            p[prefix + ".alpha"] = torch.tensor([0.7], dtype=DT, requires_grad=True)
        if cfg["bias"] and cfg["norm"] != "rmsnorm":
            p[prefix + ".bias"] = rand(C, scale=0.1)

    def add_linear(prefix, i, o):
        p[prefix + ".weight"] = rand(o, i, scale=1 / math.sqrt(i))
        if cfg["bias"]:
            p[prefix + ".bias"] = rand(o, scale=0.1)

    for i in range(L):
        pre = f"transformer.h.{i}"
        add_norm(pre + ".ln_1")
        add_linear(pre + ".attn.c_attn", C, 3 * C)
        add_linear(pre + ".attn.c_proj", C, C)
        add_norm(pre + ".ln_2")
        add_linear(pre + ".mlp.c_fc", C, H)
        if cfg["ffn"] == "swiglu":
            add_linear(pre + ".mlp.c_gate", C, H)
        add_linear(pre + ".mlp.c_proj", H, C)
    add_norm("transformer.ln_f")
    if not cfg["tie_weights"]:
        p["lm_head.weight"] = rand(V, C, scale=1 / math.sqrt(C))
    return p


# ---- cases ------------------------------------------------------------------

def module_case(name, params, inputs, fn, extra=None):
    y = fn(*inputs.values())
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()
    t = {f"param.{k}": v for k, v in params.items()}
    t.update({f"input.{k}": v for k, v in inputs.items()})
    t.update({f"grad.input.{k}": v.grad for k, v in inputs.items() if v.dtype == DT})
    t.update({f"grad.{k}": v.grad for k, v in params.items()})
    t["output.y"] = y
    t["upstream.y"] = upstream
    t.update(extra or {})
    save(name, t)


def model_case(name, cfg, pad, p=None, forward=gpt):
    p = p if p is not None else gpt_params(cfg)
    B, T = pad.shape
    idx = torch.randint(0, cfg["vocab_size"], (B, T), dtype=torch.int32)
    targets = torch.randint(0, cfg["vocab_size"], (B, T), dtype=torch.int32)
    logits = forward(idx, p, cfg, pad)
    kept = targets.long().masked_fill(pad, -1)
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), kept.view(-1), ignore_index=-1)
    loss.backward()
    t = {f"param.{k}": v for k, v in p.items()}
    t.update({f"grad.{k}": v.grad for k, v in p.items()})
    t.update({"input.idx": idx, "input.targets": targets, "input.pad_mask": pad,
              "output.logits": logits, "output.loss": loss.reshape(1)})
    if cfg["tie_weights"]:
        t["param.lm_head.weight"] = p["transformer.wte.weight"]
    save(name, t)
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(cfg, f, indent=1)


def main():
    C = 8
    x = lambda: {"x": rand(2, 3, C)}  # noqa: E731
    w, b = gain(C), rand(C, scale=0.1)
    module_case("layernorm", {"weight": w, "bias": b}, x(), lambda x: layernorm(x, w, b))
    w = gain(C)
    module_case("rmsnorm", {"weight": w}, x(), lambda x: rmsnorm(x, w))
    a, w, b = torch.tensor([0.7], dtype=DT, requires_grad=True), gain(C), rand(C, scale=0.1)
    module_case("dyt", {"alpha": a, "weight": w, "bias": b}, x(), lambda x: dyt(x, a, w, b))
    for kind in ("gelu", "relu", "swiglu"):
        p = {"c_fc.weight": rand(16, C, scale=0.4), "c_fc.bias": rand(16, scale=0.1),
             "c_proj.weight": rand(C, 16, scale=0.3), "c_proj.bias": rand(C, scale=0.1)}
        if kind == "swiglu":
            p.update({"c_gate.weight": rand(16, C, scale=0.4), "c_gate.bias": rand(16, scale=0.1)})
        module_case(f"ffn_{kind}", p, x(), lambda x, p=p, kind=kind: ffn_module(x, p, kind))
    # Attention over [2,6,8], 2 heads: sequence 0 left-padded by 2, sequence 1 right-padded by 1.
    pad = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    for use_rope in (False, True):
        p = {"c_attn.weight": rand(3 * C, C, scale=0.4), "c_attn.bias": rand(3 * C, scale=0.1),
             "c_proj.weight": rand(C, C, scale=0.3), "c_proj.bias": rand(C, scale=0.1)}
        module_case("attention_rope" if use_rope else "attention", p, {"x": rand(2, 6, C)},
                    lambda x, p=p, r=use_rope: attention_module(x, p, pad, r),
                    {"input.pad_mask": pad})
    nano = {"vocab_size": 11, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 16,
            "ffn": "gelu", "norm": "layernorm", "position": "learned", "bias": True,
            "tie_weights": True, "mixer": "attention"}
    model_case("model_nanogpt", nano, torch.zeros(2, 8, dtype=torch.bool))
    variant = dict(nano, ffn="swiglu", norm="rmsnorm", position="rope", bias=False,
                   tie_weights=False)
    pad = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    model_case("model_rope_rmsnorm_swiglu_padded", variant, pad)
    model_case("model_dyt_sinusoidal_relu_padded",
               dict(nano, ffn="relu", norm="dyt", position="sinusoidal"), pad)
    # Each family draws from its own seed, so a change in one leaves the others' files as they are.
    for seed, cases in ((1, mixer_cases), (2, gau_case), (3, mamba_cases), (4, optimizer_cases),
                        (5, flash_pytorch_cases), (6, chunk_op_cases)):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            cases()


def optimizer_cases():
    optimizer_case("adamw", lambda groups: torch.optim.AdamW(groups, betas=(0.9, 0.95), eps=1e-8))
    optimizer_case("sgd", lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9))


def short_conv(u, w, pad):
    """fla's ShortConvolution with SiLU: causal depthwise conv over time, no bias,
    [B,T,C] with weight [C,1,k]; padded positions enter as 0."""
    T, k = u.shape[1], w.shape[-1]
    u = u.masked_fill(pad[:, :, None], 0.0).transpose(1, 2)
    return F.silu(F.conv1d(u, w, padding=k - 1, groups=w.shape[0])[..., :T].transpose(1, 2))


NORM_NAME = {"linear": "norm", "retnet": "g_norm_swish_gate", "gated_retention": "o_norm",
             "gla": "g_norm_swish_gate", "deltanet": "o_norm", "gated_deltanet": "o_norm"}


def recurrent_mixer(x, p, kind, pad, n_head, feature_map="elu", normalize=True):
    """The linear-attention family as a plain sequential loop:
    S_t = diag(exp g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t (tapelm's nn/linear_attention.h);
    key and value widths from the projections (fla's expand_k, expand_v)."""
    B, T, C = x.shape
    K = p["q_proj.weight"].shape[0] // n_head  # key head width
    heads = lambda t: t.view(B, T, n_head, -1).transpose(1, 2)  # noqa: E731  [B,H,T,d]
    q, k, v = (F.linear(x, p[n + "_proj.weight"]) for n in ("q", "k", "v"))
    if kind in ("deltanet", "gated_deltanet"):
        q, k, v = (short_conv(t, p[n + "_conv1d.weight"], pad) for t, n in ((q, "q"), (k, "k"), (v, "v")))
    q, k, v = heads(q), heads(k), heads(v)
    V = v.shape[-1]
    beta = None
    if kind in ("deltanet", "gated_deltanet"):
        l2 = lambda t: t / torch.sqrt(t.pow(2).sum(-1, keepdim=True) + 1e-6)  # noqa: E731
        q, k = l2(q) / math.sqrt(K), l2(k)
        beta = torch.sigmoid(heads(F.linear(x, p["b_proj.weight"])))
        if kind == "gated_deltanet":  # Mamba-2's decay: -exp(A_log) softplus(x W_a + dt_bias)
            g = heads(-p["A_log"].exp() * F.softplus(F.linear(x, p["a_proj.weight"]) + p["dt_bias"]))
        else:
            g = torch.zeros(B, n_head, T, 1, dtype=DT)
    elif kind == "linear":
        phi = {"elu": lambda t: F.elu(t) + 1, "relu": F.relu, "identity": lambda t: t}[feature_map]
        q, k = phi(q), phi(k)
        g = torch.zeros(B, n_head, T, 1, dtype=DT)
        if normalize:
            v = torch.cat([v, torch.ones(B, n_head, T, 1, dtype=DT)], -1)
    else:
        if kind == "retnet":  # fla's RotaryEmbedding: rotate-half pairs
            pos = position_ids(pad)
            q, k = rope(q, pos), rope(k, pos)
        if kind == "gated_retention":  # fla's YOCOGatedRetention: interleaved pairs
            pos = position_ids(pad)[:, None]
            q, k = rotary_interleaved(q, pos, K), rotary_interleaved(k, pos, K)
        q = q / math.sqrt(K)
        if kind == "retnet":
            gamma = 1 - 2.0 ** (-5 - torch.arange(n_head, dtype=DT))
            g = gamma.log().view(1, n_head, 1, 1).expand(B, n_head, T, 1)
        elif kind == "gated_retention":
            g = F.logsigmoid(heads(F.linear(x, p["gk_proj.weight"]))) / 16  # YOCO: no gate bias
        else:  # gla
            low = F.linear(x, p["gk_proj.0.weight"])
            g = F.logsigmoid(heads(F.linear(low, p["gk_proj.1.weight"], p["gk_proj.1.bias"]))) / 16
    m = pad[:, None, :, None]
    k, g = k.masked_fill(m, 0.0), g.masked_fill(m, 0.0)  # padding: no write, no decay
    if beta is not None:
        beta = beta.masked_fill(m, 0.0)
    S = torch.zeros(B, n_head, K, v.shape[-1], dtype=DT)
    outs = []
    for t in range(T):
        a = g[:, :, t].exp().unsqueeze(-1)
        if beta is None:
            S = S * a + k[:, :, t, :, None] * v[:, :, t, None, :]
        else:  # delta rule: S = a (I - b k k^T) S + b k v^T
            b = beta[:, :, t][..., None]  # [B,H,1,1]
            kt = k[:, :, t, :, None]
            S = a * (S - b * kt * (kt.transpose(-1, -2) @ S)) + b * kt * v[:, :, t, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], S))
    o = torch.stack(outs, 2)
    if kind == "linear" and normalize:
        o = o[..., :V] / (o[..., V:] + 1e-6)
    else:
        o = rmsnorm(o, p.get(NORM_NAME[kind] + ".weight"))  # YOCO's o_norm has no weight
    o = o.transpose(1, 2).reshape(B, T, -1)
    if kind not in ("linear", "deltanet"):
        o = F.silu(F.linear(x, p["g_proj.weight"])) * o
    return F.linear(o, p["o_proj.weight"])


def relu_input_away_from_zero_normaliser(p, pad, H):
    """An input whose relu normalisers Σ_s φ(q_t)·φ(k_s) are each 0 or ≥ 0.25.

    With x ~ N(0, 1) one normaliser came out at 0.023: dividing by it
    amplifies float32 rounding about 100×, so the float32 check measured
    rounding luck (6.7e-6 with one GEMM kernel, 1.3e-5 with another, against
    1e-5). A normaliser of exactly 0 is harmless (φ(q_t) = 0, output 0)."""
    g = torch.Generator().manual_seed(11)
    while True:
        x = torch.randn(2, 7, p["q_proj.weight"].shape[1], dtype=DT, generator=g)
        B, T, C = x.shape
        heads = lambda z: z.view(B, T, H, C // H).transpose(1, 2)  # noqa: E731
        with torch.no_grad():
            q = F.relu(heads(F.linear(x, p["q_proj.weight"])))
            k = F.relu(heads(F.linear(x, p["k_proj.weight"]))).masked_fill(pad[:, None, :, None], 0.0)
            den = torch.einsum("bhtk,bhsk->bhts", q, k).tril().sum(-1)
        if bool(((den == 0) | (den >= 0.25)).all()):
            return x.requires_grad_()


def mixer_cases():
    """d = 8, 2 heads; fla's widths: GLA keys 4, RetNet values 16, Gated DeltaNet keys 6
    and values 12; short convolutions of size 4 (DeltaNet, Gated DeltaNet)."""
    C, H = 8, 2
    widths = {"gla": (4, 8), "retnet": (8, 16), "gated_deltanet": (6, 12)}  # (keys, values)
    pad = torch.tensor([[1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    variants = [("linear_elu", "linear", "elu", True), ("linear_relu", "linear", "relu", True),
                ("linear_unnormalised", "linear", "elu", False), ("retnet", "retnet", "elu", True),
                ("gated_retention", "gated_retention", "elu", True), ("gla", "gla", "elu", True),
                ("deltanet", "deltanet", "elu", True), ("gated_deltanet", "gated_deltanet", "elu", True)]
    for name, kind, fmap, norm in variants:
        Kd, Vd = widths.get(kind, (C, C))
        p = {"q_proj.weight": rand(Kd, C, scale=0.4), "k_proj.weight": rand(Kd, C, scale=0.4),
             "v_proj.weight": rand(Vd, C, scale=0.4), "o_proj.weight": rand(C, Vd, scale=0.4)}
        if kind not in ("linear", "deltanet"):
            p["g_proj.weight"] = rand(Vd, C, scale=0.4)
        if kind in ("deltanet", "gated_deltanet"):
            p["b_proj.weight"] = rand(H, C, scale=0.5)
            for n, w in (("q", Kd), ("k", Kd), ("v", Vd)):
                p[n + "_conv1d.weight"] = rand(w, 1, 4, scale=0.5)
        if kind == "gated_retention":
            p["gk_proj.weight"] = rand(H, C, scale=0.4)
        if kind == "gated_deltanet":
            p["a_proj.weight"] = rand(H, C, scale=0.4)
            p["A_log"] = (torch.rand(H, dtype=DT) * 16).log().requires_grad_()
            p["dt_bias"] = rand(H, scale=0.5)
        if kind == "gla":
            p["gk_proj.0.weight"] = rand(16, C, scale=0.4)
            p["gk_proj.1.weight"], p["gk_proj.1.bias"] = rand(Kd, 16, scale=0.3), rand(Kd, scale=0.5)
        if (kind != "linear" or not norm) and kind != "gated_retention":
            p[NORM_NAME[kind] + ".weight"] = gain(Vd // H)
        x = rand(2, 7, C)  # drawn in every case, so later cases keep their numbers
        if fmap == "relu":
            x = relu_input_away_from_zero_normaliser(p, pad, H)
        module_case("mixer_" + name, p, {"x": x},
                    lambda x, p=p, kind=kind, fmap=fmap, norm=norm: recurrent_mixer(x, p, kind, pad, H, fmap, norm),
                    {"input.pad_mask": pad})


def distance_bias(w, D, pad):
    """[B,T,T]: w[min(p_t − p_u, D − 1)] (negative distances are masked anyway)."""
    pos = position_ids(pad)
    return w[(pos[:, :, None] - pos[:, None, :]).clamp(0, D - 1)]


def shift_tokens(x, pad):
    """FLASH-pytorch's shift_tokens: the first half of the features from the last real token
    before (zeros before the first); padding neither feeds the shift nor moves it."""
    B, T, d = x.shape
    h = (d + 1) // 2
    rows = []
    for b in range(B):
        prev, out = torch.zeros(h, dtype=DT), []
        for t in range(T):
            out.append(prev)
            if not pad[b, t]:
                prev = x[b, t, :h]
        rows.append(torch.stack(out))
    return torch.cat([torch.stack(rows), x[..., h:]], -1)


def rotary_interleaved(x, pos, r):
    """rotary_embedding_torch's rotate_queries_or_keys on the first r features of x [B,T,s]:
    pairs (2i, 2i+1) turned by p·10000^(−2i/r); the rest pass unchanged."""
    inv = 10000 ** (-torch.arange(0, r, 2, dtype=DT) / r)
    ang = (pos.to(DT)[..., None] * inv).repeat_interleave(2, -1)  # [B,T,r]
    xr, rest = x[..., :r], x[..., r:]
    turned = torch.stack((-xr[..., 1::2], xr[..., 0::2]), -1).flatten(-2)
    return torch.cat([xr * ang.cos() + turned * ang.sin(), rest], -1)


def gau_layer(x, p, pad, group, linear_part, rotary_dim=0, shift=False, prefix=""):
    """GAU (linear_part False: one quadratic group of n = group) or FLASH (chunks of `group` by
    position id; quadratic within a chunk, linear across, both / group), with FLASH-pytorch's
    token shift and partial interleaved rotary as options; names as FLASH-pytorch's FLASH."""
    w = lambda name: p[prefix + name]  # noqa: E731
    if shift:
        x = shift_tokens(x, pad)
    v, u = F.silu(F.linear(x, w("to_hidden.0.weight"), w("to_hidden.0.bias"))).chunk(2, -1)
    z = F.silu(F.linear(x, w("to_qk.0.weight"), w("to_qk.0.bias")))
    g, b = w("qk_offset_scale.gamma"), w("qk_offset_scale.beta")
    heads = [z * g[i] + b[i] for i in range(g.shape[0])]  # GAU: q, k; FLASH: quad_q, lin_q, quad_k, lin_k
    if rotary_dim:
        heads = [rotary_interleaved(h, position_ids(pad), rotary_dim) for h in heads]
    T = x.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()[None]
    key_ok = ~pad[:, None, :]
    bias = distance_bias(w("rel_pos_bias.weight"), group, pad)
    if not linear_part:
        q, k = heads
        a = F.relu(q @ k.transpose(-1, -2) / group + bias).pow(2) * (causal & key_ok)
    else:
        q, ql, k, kl = heads
        c = position_ids(pad) // group  # [B,T]
        same = c[:, :, None] == c[:, None, :]
        before = c[:, None, :] < c[:, :, None]
        quad = F.relu(q @ k.transpose(-1, -2) / group + bias).pow(2)
        lin = ql @ kl.transpose(-1, -2) / group
        a = quad * (causal & same & key_ok) + lin * (causal & before & key_ok)
    return F.linear(u * (a @ v), w("to_out.weight"), w("to_out.bias"))


def gau_params(C, E, S, heads, distances, prefix=""):
    p = {"to_hidden.0.weight": rand(2 * E, C, scale=0.4), "to_hidden.0.bias": rand(2 * E, scale=0.1),
         "to_qk.0.weight": rand(S, C, scale=0.4), "to_qk.0.bias": rand(S, scale=0.1),
         "qk_offset_scale.gamma": rand(heads, S, scale=1.0), "qk_offset_scale.beta": rand(heads, S, scale=0.3),
         "rel_pos_bias.weight": rand(distances, scale=0.5),
         "to_out.weight": rand(C, E, scale=0.3), "to_out.bias": rand(C, scale=0.1)}
    return {prefix + k: v for k, v in p.items()}


def gau_case():
    """Gated Attention Unit (Hua et al. 2022), causal quadratic form, d=8, e=16, s=8, n=16: the
    paper's relu²(q·k/n + b[t−u]) with one bias per distance; names as FLASH-pytorch's FLASH."""
    C, E, S, n = 8, 16, 8, 16
    pad = torch.tensor([[1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    p = {"to_hidden.0.weight": rand(2 * E, C, scale=0.4), "to_hidden.0.bias": rand(2 * E, scale=0.1),
         "to_qk.0.weight": rand(S, C, scale=0.4), "to_qk.0.bias": rand(S, scale=0.1),
         "qk_offset_scale.gamma": rand(2, S, scale=1.0), "qk_offset_scale.beta": rand(2, S, scale=0.3),
         "rel_pos_bias.weight": rand(n, scale=0.5),
         "to_out.weight": rand(C, E, scale=0.3), "to_out.bias": rand(C, scale=0.1)}
    module_case("gau", p, {"x": rand(2, 7, C)}, lambda x: gau_layer(x, p, pad, n, False), {"input.pad_mask": pad})

    # FLASH: chunks of 3 by position id; quadratic within a chunk (n = 3), linear across (/ 3).
    chunk = 3
    p = {k: v.detach().clone().requires_grad_() for k, v in p.items()}  # fresh leaves: no stale .grad
    p.update({"qk_offset_scale.gamma": rand(4, S, scale=1.0), "qk_offset_scale.beta": rand(4, S, scale=0.3),
              "rel_pos_bias.weight": rand(chunk, scale=0.5)})
    module_case("flash", p, {"x": rand(2, 7, C)}, lambda x: gau_layer(x, p, pad, chunk, True),
                {"input.pad_mask": pad})


def scalenorm(x, g, eps=1e-5):
    """FLASH-pytorch's ScaleNorm."""
    norm = torch.norm(x, dim=-1, keepdim=True) * x.shape[-1] ** -0.5
    return x / norm.clamp(min=eps) * g


def scaled_sinusoid(pos, dim, scale):
    """FLASH-pytorch's ScaledSinuEmbedding at positions pos: cat(sin, cos) · scale."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=DT) / dim))
    sinu = pos.to(DT)[..., None] * inv_freq
    return torch.cat((sinu.sin(), sinu.cos()), -1) * scale


def flash_transformer(idx, p, cfg, pad):
    """FLASH-pytorch's FLASHTransformer.forward (ScaleNorm, scaled sinusoid, token shift, partial
    rotary, LayerNorm before the head), under tapelm's names, padding and tied head."""
    x = F.embedding(idx.long(), p["transformer.wte.weight"])
    x = x + scaled_sinusoid(position_ids(pad), cfg["n_embd"], p["transformer.wpe.scale"])
    for i in range(cfg["n_layer"]):
        pre = f"transformer.h.{i}"
        x = x + gau_layer(scalenorm(x, p[pre + ".ln_1.g"]), p, pad, cfg["chunk_size"], cfg["mixer"] == "flash",
                          min(cfg["gau_rotary_dim"], cfg["gau_qk_dim"]), cfg["gau_token_shift"], pre + ".attn.")
    x = layernorm(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"])
    return F.linear(x, p["transformer.wte.weight"])


def flash_pytorch_cases():
    """FLASH-pytorch's model parts: ScaleNorm (a row inside the clamp), GAU and FLASH with token
    shift and partial rotary (4 of s = 8 features), and a 2-layer FLASHTransformer-style model."""
    C = 8
    x = rand(3, C)
    with torch.no_grad():
        x[0] *= 1e-7  # ‖x‖·d^−½ < ε: the clamp holds
    g = torch.tensor([1.3], dtype=DT, requires_grad=True)
    module_case("scalenorm", {"g": g}, {"x": x}, lambda x: scalenorm(x, g))
    pad = torch.tensor([[1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    for name, heads, group, linear_part in (("gau_shift_rotary", 2, 16, False), ("flash_shift_rotary", 4, 3, True)):
        p = gau_params(C, 16, 8, heads, group)
        module_case(name, p, {"x": rand(2, 7, C)},
                    lambda x, p=p, group=group, lin=linear_part: gau_layer(x, p, pad, group, lin, 4, True),
                    {"input.pad_mask": pad})
    cfg = {"vocab_size": 11, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 16, "mixer": "flash",
           "chunk_size": 3, "gau_qk_dim": 8, "gau_rotary_dim": 4, "gau_token_shift": True, "norm": "scalenorm",
           "final_norm": "layernorm", "position": "scaled_sinusoidal", "bias": True, "tie_weights": True}
    p = {"transformer.wte.weight": rand(11, 16, scale=0.5),
         "transformer.wpe.scale": torch.tensor([0.8], dtype=DT, requires_grad=True)}
    for i in range(2):
        p[f"transformer.h.{i}.ln_1.g"] = (1 + 0.1 * torch.randn(1, dtype=DT)).requires_grad_()
        p.update(gau_params(16, 32, 8, 4, 3, f"transformer.h.{i}.attn."))
    p["transformer.ln_f.weight"], p["transformer.ln_f.bias"] = gain(16), rand(16, scale=0.1)
    pad = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    model_case("model_flash_pytorch_padded", cfg, pad, p, flash_transformer)


def mamba_cases():
    """Mamba (mamba_simple.py) and Mamba-2 (SSD) blocks as sequential scans, d=8,
    d_inner=16, N=4, d_conv=4, Mamba-2 head dim 4; padded batch."""
    C, Di, N, K, R, P = 8, 16, 4, 4, 1, 4
    H = Di // P
    pad = torch.tensor([[1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 1]], dtype=torch.bool)

    def conv(u, w, b):  # depthwise causal
        T = u.shape[1]
        return F.conv1d(u.transpose(1, 2), w, b, padding=w.shape[-1] - 1, groups=u.shape[-1])[..., :T].transpose(1, 2)

    p1 = {"in_proj.weight": rand(2 * Di, C, scale=0.4), "conv1d.weight": rand(Di, 1, K, scale=0.4),
          "conv1d.bias": rand(Di, scale=0.1), "x_proj.weight": rand(R + 2 * N, Di, scale=0.4),
          "dt_proj.weight": rand(Di, R, scale=0.5), "dt_proj.bias": rand(Di, scale=0.5),
          "A_log": (torch.rand(Di, N, dtype=DT) * 2).requires_grad_(), "D": gain(Di),
          "out_proj.weight": rand(C, Di, scale=0.3)}

    def mamba1(x):
        B, T, _ = x.shape
        xi, z = F.linear(x, p1["in_proj.weight"]).chunk(2, -1)
        u = F.silu(conv(xi.masked_fill(pad[..., None], 0.0), p1["conv1d.weight"], p1["conv1d.bias"]))
        dt, Bm, Cm = F.linear(u, p1["x_proj.weight"]).split([R, N, N], -1)
        delta = F.softplus(F.linear(dt, p1["dt_proj.weight"], p1["dt_proj.bias"])).masked_fill(pad[..., None], 0.0)
        A = -p1["A_log"].exp()
        h = torch.zeros(B, Di, N, dtype=DT)
        ys = []
        for t in range(T):
            d = delta[:, t, :, None]
            h = (d * A).exp() * h + d * Bm[:, t, None, :] * u[:, t, :, None]
            ys.append((h * Cm[:, t, None, :]).sum(-1))
        y = (torch.stack(ys, 1) + u * p1["D"]) * F.silu(z)
        return F.linear(y, p1["out_proj.weight"])

    module_case("mamba", p1, {"x": rand(2, 7, C)}, mamba1, {"input.pad_mask": pad})

    p2 = {"in_proj.weight": rand(2 * Di + 2 * N + H, C, scale=0.4), "conv1d.weight": rand(Di + 2 * N, 1, K, scale=0.4),
          "conv1d.bias": rand(Di + 2 * N, scale=0.1), "dt_bias": rand(H, scale=0.5),
          "A_log": (torch.rand(H, dtype=DT) * 2).requires_grad_(), "D": gain(H), "norm.weight": gain(Di),
          "out_proj.weight": rand(C, Di, scale=0.3)}

    def mamba2(x):
        B, T, _ = x.shape
        z, xbc, dt = F.linear(x, p2["in_proj.weight"]).split([Di, Di + 2 * N, H], -1)
        u = F.silu(conv(xbc.masked_fill(pad[..., None], 0.0), p2["conv1d.weight"], p2["conv1d.bias"]))
        xs, Bm, Cm = u.split([Di, N, N], -1)
        delta = F.softplus(dt + p2["dt_bias"]).masked_fill(pad[..., None], 0.0)  # [B,T,H]
        A = -p2["A_log"].exp()
        xh = xs.view(B, T, H, P)
        h = torch.zeros(B, H, N, P, dtype=DT)
        ys = []
        for t in range(T):
            d = delta[:, t, :, None, None]
            h = (d * A[None, :, None, None]).exp() * h + Bm[:, t, None, :, None] * (d * xh[:, t, :, None, :])
            ys.append(torch.einsum("bn,bhnp->bhp", Cm[:, t], h))
        y = (torch.stack(ys, 1) + xh * p2["D"][None, None, :, None]).reshape(B, T, Di)
        return F.linear(rmsnorm(y * F.silu(z), p2["norm.weight"]), p2["out_proj.weight"])

    module_case("mamba2", p2, {"x": rand(2, 7, C)}, mamba2, {"input.pad_mask": pad})


def chunk_op_cases():
    """The two ops of the GPU's chunk forms, each from its definition: decay_scores
    (GLA's scores under a decay per key, Yang et al. 2023 §4.2) over chunks of 5
    steps, and unit_tril_inverse (the delta rule's UT transform) as PyTorch's
    triangular solve, which reads only N's strictly lower part too."""
    C, K = 5, 4
    log_decay = -(0.05 + torch.rand(2, 3, C, K, dtype=DT))
    inputs = {"q": rand(2, 3, C, K), "k": rand(2, 3, C, K),
              "L": log_decay.cumsum(-2).requires_grad_()}
    causal = torch.ones(C, C, dtype=torch.bool).tril()

    def decay_scores(q, k, L):  # A_ts = Σ_k q_tk k_sk e^{L_tk − L_sk}, s ≤ t
        exponent = (L[..., :, None, :] - L[..., None, :, :]).masked_fill(~causal[..., None], -math.inf)
        return (q[..., :, None, :] * k[..., None, :, :] * exponent.exp()).sum(-1)

    module_case("op_decay_scores", {}, inputs, decay_scores)
    eye = torch.eye(7, dtype=DT)
    module_case("op_unit_tril_inverse", {}, {"N": rand(2, 3, 7, 7, scale=0.5)},
                lambda N: torch.linalg.solve_triangular(N, eye.expand_as(N), upper=False,
                                                        unitriangular=True))


def optimizer_case(name, make_opt):
    """20 steps of a torch optimizer in float32 on two groups (decayed matrix,
    undecayed vector), with given gradients and an lr that changes each step."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(4, 3, generator=g).requires_grad_()
    b = torch.randn(3, generator=g).requires_grad_()
    t = {"param.w": w.detach().clone(), "param.b": b.detach().clone()}
    opt = make_opt([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}])
    for step in range(20):
        lr = 1e-2 * (1 + step) / 20
        for group in opt.param_groups:
            group["lr"] = lr
        w.grad = torch.randn(4, 3, generator=g)
        b.grad = torch.randn(3, generator=g)
        t[f"grad.{step}.w"], t[f"grad.{step}.b"] = w.grad.clone(), b.grad.clone()
        t[f"lr.{step}"] = torch.tensor([lr], dtype=torch.float64)
        opt.step()
    t["final.w"], t["final.b"] = w.detach().clone(), b.detach().clone()
    save(name, t)


def ffn_module(x, p, kind):
    q = {"." + k: v for k, v in p.items()}
    return ffn(x, q, "", kind)


def attention_module(x, p, pad, use_rope):
    q = {"." + k: v for k, v in p.items()}
    return attention(x, q, "", 2, pad, use_rope)


if __name__ == "__main__":
    main()
