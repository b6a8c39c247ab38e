#!/usr/bin/python3
"""Hugging Face transformers' outputs for tests/test_hugging_face.cpp to check tapelm against.

Run where transformers and PyTorch are (the lent GPU machine: transformers 5.x,
PyTorch 2.11; CPU, float32):
    python3 tests/golden/hugging_face.py EXPORTS OUT

EXPORTS holds folders that `tapelm export --format hf` wrote
(export_<mixer>: small models trained on tinyshakespeare, and export_gpt2tok
whose tokenizer is GPT-2's; tests/golden/hugging_face/README.md says how they
were made). For each it writes OUT/<name>/: the folder's files (committed, so
CI needs no transformers) and transformers.json with what transformers makes of
it: the tokenizer's ids of fixed texts and their decoding, the logits at four
positions of a fixed sequence, the argmax at every position, and 100 greedy
tokens. It also makes one small random model of each class with transformers
itself (save_pretrained), with the char tokenizer's files of export_attention,
and writes the same for it: tapelm's --init-from reads what transformers wrote.
"""
import json
import os
import shutil
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXTS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n",
    "  What?  3 lords,\n'tis so -- done!\n\n\nEnd",  # tinyshakespeare's 65 characters only (the char tokenizers)
]
WIDE_TEXTS = ["  What?  42 lords,\t'tis so -- \"done\"!", "caf\u00e9 \u6771\u4eac 42!\n\t  spaces   end \U0001F600 \u0394x=1.5e-3",
              "I'm sure it's 2024's best: you'll see, we've done, they'd go."]
POSITIONS = [0, 7, 15, 31]  # those before the sequence's end (a BPE tokenizer makes fewer than 32 ids)


def describe(folder, texts):
    out = {"transformers": transformers.__version__, "torch": torch.__version__, "tokenizer": []}
    tok = AutoTokenizer.from_pretrained(folder)
    out["tokenizer_class"] = type(tok).__name__
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        out["tokenizer"].append({"text": t, "ids": ids, "decoded": tok.decode(ids)})
    if not os.path.exists(os.path.join(folder, "config.json")) or not os.path.exists(
            os.path.join(folder, "model.safetensors")):
        return out
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = out["tokenizer"][0]["ids"][:32]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
        out["ids"] = ids
        out["logits"] = {str(p): logits[p].tolist() for p in POSITIONS if p < len(ids)}
        out["argmax"] = logits.argmax(-1).tolist()
        top2 = logits.topk(2, -1).values
        out["min_top2_margin"] = float((top2[:, 0] - top2[:, 1]).min())
        prompt = torch.tensor([ids[:8]])
        gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=100,
                             do_sample=False, pad_token_id=0, eos_token_id=None)
        out["greedy"] = gen[0, 8:].tolist()
        # The greedy run's closest call: the smallest top-2 margin along it.
        full = model(gen).logits[0, 7:-1]
        t2 = full.topk(2, -1).values
        out["greedy_min_top2_margin"] = float((t2[:, 0] - t2[:, 1]).min())
    out["class"] = type(model).__name__
    return out


def guarded(f, *args):
    """f's result, or the error it raised (one folder's failure does not stop the others)."""
    try:
        return f(*args)
    except Exception as e:  # noqa: BLE001 - recorded in the golden, where the test reports it
        import traceback
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}"}


def random_models(tokenizer_folder, out_dir):
    vocab = len(json.load(open(os.path.join(tokenizer_folder, "tokenizer.json")))["model"]["vocab"])
    common = dict(vocab_size=vocab, initializer_range=0.2)
    configs = {
        "hf_gpt2": transformers.GPT2Config(n_positions=128, n_embd=32, n_layer=2, n_head=2,
                                           activation_function="gelu", **common),
        "hf_llama": transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=2,
                                             max_position_embeddings=128, **common),
        "hf_mamba": transformers.MambaConfig(hidden_size=32, state_size=8, num_hidden_layers=2, **common),
        "hf_mamba2": transformers.Mamba2Config(hidden_size=32, state_size=8, num_hidden_layers=2, num_heads=4,
                                               head_dim=16, n_groups=1, chunk_size=16, **common),
    }
    for name, config in configs.items():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).float()
        with torch.no_grad():  # weights big enough that the greedy path is decided far from ties
            for n, p in model.named_parameters():
                if p.dim() >= 2 or n.endswith(".bias"):
                    p.normal_(0.0, 0.2)
        folder = os.path.join(out_dir, name)
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(folder, safe_serialization=True)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(tokenizer_folder, f), folder)
        json.dump(guarded(describe, folder, TEXTS), open(os.path.join(folder, "transformers.json"), "w"), indent=1)
        print(name, "written")


def main():
    exports, out_dir = sys.argv[1], sys.argv[2]
    torch.set_num_threads(8)
    os.makedirs(out_dir, exist_ok=True)
    for name in sorted(os.listdir(exports)):
        src = os.path.join(exports, name)
        if not name.startswith("export_"):
            continue
        dst = os.path.join(out_dir, name[len("export_"):])
        shutil.rmtree(dst, ignore_errors=True)
        if name == "export_gpt2tok":  # GPT-2's tokenizer files alone (the model is left out: 50,257 rows)
            os.makedirs(dst)
            files = [f for f in os.listdir(src) if f not in ("config.json", "model.safetensors")]
            for f in files:
                shutil.copy(os.path.join(src, f), dst)
            result = guarded(describe, dst, TEXTS + WIDE_TEXTS)
            for f in files:  # tapelm ships these files (data/): only what transformers made of them is kept
                os.remove(os.path.join(dst, f))
        else:
            shutil.copytree(src, dst)
            wide = [] if "char" in open(os.path.join(src, "tokenizer_config.json")).read() else WIDE_TEXTS
            result = guarded(describe, dst, TEXTS + wide)
        json.dump(result, open(os.path.join(dst, "transformers.json"), "w"), indent=1)
        print(name, "written", result.get("class", "tokenizer only"))
    random_models(os.path.join(exports, "export_attention"), out_dir)


if __name__ == "__main__":
    main()
