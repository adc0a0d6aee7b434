"""Times BPE training (the tokenizer stage's `train_bpe`) on ~100 MB of text and reports its peak memory.

    python benchmarks/bench_bpe.py --megabytes 100 --vocab-size 50257

The text: every real text file in ../shared/data (news articles of the extraction benchmark, tinyshakespeare,
WikiText-2 test, Reddit titles/selftexts), about 3 MB, repeated with variation until the target size: each
repetition shuffles the documents and replaces 1 character in 60 (letters only) by a random lowercase letter, so
every repetition brings new word forms, as a larger real corpus would, instead of just scaling the counts.
Training runs in a fresh child process so its peak RSS (ru_maxrss) is the training's alone.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"
MUTATE_EVERY = 60  # characters per replaced letter in each repetition after the first


def _chunks(text: str, size: int) -> list[str]:
    """Paragraph-aligned pieces of about `size` characters."""
    pieces, current = [], []
    for paragraph in text.split("\n\n"):
        current.append(paragraph)
        if sum(len(p) for p in current) >= size:
            pieces.append("\n\n".join(current))
            current = []
    if current:
        pieces.append("\n\n".join(current))
    return pieces


def real_documents(data: Path) -> list[tuple[str, str]]:
    """(doc_id, text) of the real text in shared/data, in a fixed order."""
    documents = []
    truth = json.loads((data / "extraction-benchmark" / "ground-truth.json").read_text(encoding="utf-8"))
    documents += [(f"article-{key}", value["articleBody"]) for key, value in sorted(truth.items())]
    shakespeare = (data / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    documents += [(f"shakespeare-{i}", text) for i, text in enumerate(_chunks(shakespeare, 4000))]
    wikitext = (data / "eval" / "wikitext-2_test.txt").read_text(encoding="utf-8")
    articles = wikitext.split("\n = ")
    documents += [(f"wikitext-{i}", (" = " if i else "") + text) for i, text in enumerate(articles) if text.strip()]
    for path in sorted((data / "reddit-api").glob("*.json")):
        if path.name == "index.json":
            continue
        listing = json.loads(path.read_text(encoding="utf-8"))
        children = listing.get("data", {}).get("children", []) if isinstance(listing, dict) else []
        for child in children:
            post = child.get("data", {})
            text = "\n\n".join(t for t in (post.get("title"), post.get("selftext")) if t)
            if text:
                documents.append((f"reddit-{path.stem}-{post.get('id')}", text))
    return documents


def _mutate(text: str, rng: np.random.Generator) -> str:
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).copy()
    if codes.size == 0:
        return text
    positions = rng.integers(0, codes.size, size=max(1, codes.size // MUTATE_EVERY))
    letters = positions[((codes[positions] >= 97) & (codes[positions] <= 122)) |
                        ((codes[positions] >= 65) & (codes[positions] <= 90))]
    codes[letters] = rng.integers(97, 123, size=letters.size)
    return codes.tobytes().decode("utf-32-le")


def varied_documents(target_bytes: int, data: Path = DEFAULT_DATA, seed: int = 0) -> Iterator[tuple[str, str]]:
    """(doc_id, text) until about `target_bytes` of UTF-8 text: the real documents, then mutated repetitions."""
    base = real_documents(data)
    rng = np.random.default_rng(seed)
    produced, repetition = 0, 0
    while produced < target_bytes:
        order = rng.permutation(len(base)) if repetition else np.arange(len(base))
        for index in order:
            doc_id, text = base[int(index)]
            text = _mutate(text, rng) if repetition else text
            yield f"{doc_id}-r{repetition}", text
            produced += len(text.encode("utf-8"))
            if produced >= target_bytes:
                return
        repetition += 1


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _train_child(args: argparse.Namespace) -> None:
    """Runs in the child: build the text, train, print one JSON line of figures."""
    from webtext.pipeline import gpt2_bpe

    texts = [text for _, text in varied_documents(int(args.megabytes * 1e6), Path(args.data))]
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    rss_before = peak_rss_mb()
    batches = (texts[i:i + 1000] for i in range(0, len(texts), 1000))
    started = time.perf_counter()
    tokenizer = gpt2_bpe.train_bpe(batches, vocab_size=args.vocab_size, min_frequency=2)
    seconds = time.perf_counter() - started
    print(json.dumps({"documents": len(texts), "text_mb": text_bytes / 1e6, "seconds": seconds,
                      "vocab_size": gpt2_bpe.vocab_size(tokenizer), "peak_rss_mb": peak_rss_mb(),
                      "rss_before_training_mb": rss_before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=100)
    parser.add_argument("--vocab-size", type=int, default=50257)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _train_child(args)
        return
    print(f"load average before: {os.getloadavg()}", flush=True)
    command = [sys.executable, __file__, "--child", "--megabytes", str(args.megabytes),
               "--vocab-size", str(args.vocab_size), "--data", args.data]
    started = time.perf_counter()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    figures = json.loads(output.strip().splitlines()[-1])
    print(f"text: {figures['documents']:,} documents, {figures['text_mb']:.1f} MB (built in the child, "
          f"{time.perf_counter() - started - figures['seconds']:.1f} s incl. start-up)")
    print(f"BPE training to {figures['vocab_size']:,} tokens: {figures['seconds']:.1f} s "
          f"({figures['text_mb'] / figures['seconds']:.1f} MB/s)")
    print(f"peak RSS: {figures['peak_rss_mb']:,.0f} MB (text and interpreter before training: "
          f"{figures['rss_before_training_mb']:,.0f} MB, so training added {figures['peak_rss_mb'] - figures['rss_before_training_mb']:,.0f} MB)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
