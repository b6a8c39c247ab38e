"""Writes a large text corpus made from a small one with variation, for the
data-at-scale measurements (no download): copy i of the source has its lines
in an order drawn from seed i, so no two copies are the same text and the
tokenizer's per-block caches see text as a real corpus gives it (the same
words, new sequences).

    python3 bench/big_corpus.py ../shared/data/tinyshakespeare.txt /tmp/big.txt 10
"""
import random
import sys


def main(source, out, gigabytes):
    lines = open(source, encoding="utf-8").read().splitlines(keepends=True)
    target = int(float(gigabytes) * 1e9)
    written = 0
    with open(out, "w", encoding="utf-8") as f:
        copy = 0
        while written < target:
            order = lines[:]
            random.Random(copy).shuffle(order)
            text = "".join(order)
            f.write(text)
            written += len(text.encode("utf-8"))
            copy += 1
    print(f"{out}: {written / 1e9:.2f} GB, {copy} copies of {source}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
