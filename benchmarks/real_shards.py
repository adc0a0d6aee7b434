"""A small run of real English text for the GPU benchmark, so it can time our loader on real shards.

python benchmarks/real_shards.py runs/bench [--data ../shared/data]
then, on the GPU machine (carry runs/bench):  bash benchmarks/gpu_session.sh --run runs/bench

Documents: the extraction benchmark's 91 article bodies, WikiText-2's test articles and Tiny Shakespeare in
scenes; GPT-2's own vocabulary (`webtext tokenizer --from-gpt2`), shards written by `webtext shards`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from webtext.pipeline.cli import main as webtext
from webtext.train.shards import Manifest

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def documents(data: Path) -> list[dict]:
    truth = json.loads((data / "extraction-benchmark" / "ground-truth.json").read_text(encoding="utf-8"))
    docs = [{"doc_id": f"page-{key[:16]}", "text": value["articleBody"]} for key, value in sorted(truth.items())]
    wikitext = (data / "eval" / "wikitext-2_test.txt").read_text(encoding="utf-8")
    for index, article in enumerate(re.split(r"\n (?== [^=])", wikitext)):  # top-level " = Title = " headings
        if article.strip():
            docs.append({"doc_id": f"wikitext-{index:04d}", "text": article.strip()})
    play = (data / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    speeches = play.split("\n\n")
    for index in range(0, len(speeches), 40):
        docs.append({"doc_id": f"shakespeare-{index // 40:04d}", "text": "\n\n".join(speeches[index:index + 40])})
    return docs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the run directory to create")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    args = parser.parse_args(argv)
    if not (args.data / "gpt2-tokenizer" / "encoder.json").is_file():
        print(f"{args.data}: no shared data here (gpt2-tokenizer/encoder.json missing); pass --data", file=sys.stderr)
        return 2
    if args.run.exists():
        print(f"{args.run} exists; choose a new directory", file=sys.stderr)
        return 2
    (args.run / "docs").mkdir(parents=True)
    table = pa.Table.from_pylist(documents(args.data), schema=pa.schema([("doc_id", pa.string()), ("text", pa.string())]))
    pq.write_table(table, args.run / "docs" / "docs-00000-of-00001.parquet")
    if webtext(["tokenizer", str(args.run), "--from-gpt2", str(args.data / "gpt2-tokenizer")]) != 0:
        return 1
    if webtext(["shards", str(args.run), "--shard-tokens", "250000", "--val-fraction", "0.02"]) != 0:
        return 1
    manifest = Manifest.load(args.run / "shards")
    tokens = sum(info.tokens for info in manifest.shards)
    print(f"{args.run}: {table.num_rows} documents, {tokens:,} tokens in {len(manifest.shards)} shards")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
