"""A small run of real English text for the GPU benchmark, so it can time our loader on real shards.

python benchmarks/real_shards.py runs/bench [--data ../shared/data]
then, on the GPU machine (carry runs/bench):  bash benchmarks/gpu_session.sh --run runs/bench

Documents: the real text of ../shared/data as bench_bpe.real_documents reads it (article bodies, Tiny Shakespeare,
WikiText-2's test articles, Reddit posts); GPT-2's own vocabulary (`webtext tokenizer --from-gpt2`), shards written
by `webtext shards`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bpe import DEFAULT_DATA, real_documents  # noqa: E402

from webtext.pipeline import layout, sinks  # noqa: E402
from webtext.pipeline.cli import main as webtext  # noqa: E402
from webtext.train.shard_format import Manifest  # noqa: E402


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
    Path(args.run, layout.DOCS).mkdir(parents=True)
    rows = [{"doc_id": doc_id, "text": text} for doc_id, text in real_documents(args.data)]
    table = pa.Table.from_pylist(rows, schema=pa.schema([("doc_id", pa.string()), ("text", pa.string())]))
    pq.write_table(table, Path(args.run, layout.DOCS, sinks.shard_name("docs", 0, 1)))
    Path(args.run, layout.PLACED_DOCS).touch()  # a corpus made here, not by the crawl stage
    if webtext(["tokenizer", str(args.run), "--from-gpt2", str(args.data / "gpt2-tokenizer")]) != 0:
        return 1
    if webtext(["shards", str(args.run), "--shard-tokens", "250000", "--val-fraction", "0.02"]) != 0:
        return 1
    manifest = Manifest.load(Path(args.run, layout.SHARDS))
    tokens = sum(info.tokens for info in manifest.shards)
    print(f"{args.run}: {table.num_rows} documents, {tokens:,} tokens in {len(manifest.shards)} shards")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
