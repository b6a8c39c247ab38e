"""tapelm's GPT-2 tokenizer beside the Rust ones, on one machine and one text:
Hugging Face `tokenizers` (what GPT2TokenizerFast runs) and OpenAI's
`tiktoken`, both built from the same files tapelm ships (data/gpt2/, no
download), encoding the text in 1 MB pieces cut at newlines on N threads.
Prints MB/s and the token count of each (the counts of the Rust ones are of
their pieces, so they may differ from tapelm's whole-text count by a token
where a cut splits a run of newlines).

    python3 bench/tokenizer_compare.py TEXT THREADS...
"""
import os
import sys
import time

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "gpt2")
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def pieces(text, size=1 << 20):
    out, i = [], 0
    while i < len(text):
        j = min(len(text), i + size)
        while j < len(text) and text[j - 1] != "\n":
            j += 1
        out.append(text[i:j])
        i = j
    return out


def main(path, *threads):
    text = open(path, encoding="utf-8").read()
    mb = len(text.encode("utf-8")) / 1e6
    parts = pieces(text)
    for n in map(int, threads):
        try:
            os.environ["RAYON_NUM_THREADS"] = str(n)  # read when tokenizers first runs in parallel
            from tokenizers import Tokenizer, models, pre_tokenizers

            tok = Tokenizer(models.BPE.from_file(os.path.join(here, "encoder.json"), os.path.join(here, "vocab.bpe")))
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            t = time.perf_counter()
            count = sum(len(e.ids) for e in tok.encode_batch(parts))
            s = time.perf_counter() - t
            print(f"huggingface tokenizers, {n} threads: {mb / s:.1f} MB/s, {count} tokens")
        except Exception as e:  # noqa: BLE001
            print(f"huggingface tokenizers: {e}")
        try:
            import tiktoken
            from tiktoken.load import data_gym_to_mergeable_bpe_ranks

            ranks = data_gym_to_mergeable_bpe_ranks(os.path.join(here, "vocab.bpe"), os.path.join(here, "encoder.json"))
            enc = tiktoken.Encoding("gpt2-local", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens={})
            t = time.perf_counter()
            count = sum(len(ids) for ids in enc.encode_ordinary_batch(parts, num_threads=n))
            s = time.perf_counter() - t
            print(f"tiktoken {tiktoken.__version__}, {n} threads: {mb / s:.1f} MB/s, {count} tokens")
        except Exception as e:  # noqa: BLE001
            print(f"tiktoken: {e}")


if __name__ == "__main__":
    main(*sys.argv[1:])
