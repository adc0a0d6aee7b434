"""Encoding throughput of the whole shards stage against raw `tokenizers` and raw tiktoken on the same text, one run.

    python benchmarks/bench_shards.py --megabytes 100 --files 8 --workers 2 --shard-tokens 5000000

The text is bench_bpe's (shared/data text repeated with variation), written as --files Parquet files; the
tokenizer is GPT-2's own vocabulary (--from-gpt2 shared/data/gpt2-tokenizer), so all three encode with the same
50,257-token BPE. Baselines, in this process: `Tokenizer.encode_batch` (its own thread pool over all cores) and
tiktoken's `encode_ordinary_batch` with --workers threads. The stage runs as `webtext shards` in a child process,
on the DirectRunner with --workers processes (the CLI's default runner) and on the in-process FnApiRunner, timed
from start to exit (start-up, reading, encoding, planning, shuffling, writing and verification included). Token ids
in the shards are checked against the `tokenizers` baseline after each run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bpe import DEFAULT_DATA, varied_documents  # noqa: E402

from webtext.pipeline import gpt2_bpe, layout, sinks  # noqa: E402
from webtext.pipeline.token_encoding import tiktoken_encoding  # noqa: E402
from webtext.train.shard_format import Manifest, Shard  # noqa: E402


def write_corpus(run: Path, megabytes: float, files: int, data: Path) -> tuple[list[str], list[str], int]:
    documents = list(varied_documents(int(megabytes * 1e6), data))
    folder = Path(run, layout.DOCS)
    folder.mkdir(parents=True)
    for index in range(files):
        part = documents[index::files]
        table = pa.table({"doc_id": [d for d, _ in part], "text": [t for _, t in part]})
        pq.write_table(table, folder / sinks.shard_name("docs", index, files), compression="zstd")
    Path(run, layout.PLACED_DOCS).touch()  # a corpus made here, not by the crawl stage
    doc_ids, texts = [d for d, _ in documents], [t for _, t in documents]
    return doc_ids, texts, sum(len(t.encode("utf-8")) for t in texts)


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def webtext(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "webtext.pipeline.cli", *args, "--log-level", "WARNING"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def check_ids(run: Path, expected: dict[str, list[int]]) -> None:
    manifest = Manifest.load(Path(run, layout.SHARDS))
    checked = 0
    for info in manifest.shards:
        shard = Shard(Path(run, layout.SHARDS, info.name))
        for index in range(len(shard)):
            assert np.array_equal(shard.document(index)[:-1], expected[shard.doc_id(index)]), shard.doc_id(index)
            checked += 1
    assert checked == len(expected)
    print(f"  ids identical to tokenizers' for all {checked:,} documents in {len(manifest.shards)} shards")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=100)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-tokens", type=int, default=5_000_000, help="so that 100 MB makes several shards")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--fallback", action="store_true", help="also time the stage with --encoder tokenizers")
    parser.add_argument("--keep", help="build the run in this folder and keep it")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as temp:
        run = Path(args.keep or temp) / "run"
        doc_ids, texts, text_bytes = write_corpus(run, args.megabytes, args.files, Path(args.data))
        mb = text_bytes / 1e6
        print(f"text: {len(texts):,} documents, {mb:.1f} MB in {args.files} Parquet files")
        webtext("tokenizer", str(run), "--from-gpt2", str(Path(args.data) / "gpt2-tokenizer"))
        tokenizer_json = Path(run, layout.TOKENIZER_JSON).read_text()

        tokenizer = gpt2_bpe.tokenizer_from_json(tokenizer_json)
        encodings, seconds = timed(lambda: tokenizer.encode_batch(texts, add_special_tokens=False))
        baseline = [e.ids for e in encodings]
        del encodings
        print(f"tokenizers encode_batch (all cores):        {mb / seconds:6.1f} MB/s  ({seconds:.1f} s)")
        tiktoken = tiktoken_encoding(tokenizer_json)
        fast, seconds = timed(lambda: tiktoken.encode_ordinary_batch(texts, num_threads=args.workers))
        print(f"tiktoken encode_ordinary_batch, {args.workers} threads: {mb / seconds:6.1f} MB/s  ({seconds:.1f} s)")
        assert fast == baseline, "tiktoken and tokenizers disagree"
        del fast

        runners = {"DirectRunner, %d worker processes" % args.workers:
                   ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                    f"--direct_num_workers={args.workers}"],
                   "FnApiRunner, in-process": ["--runner=FnApiRunner"]}
        for engine in ("auto", "tokenizers") if args.fallback else ("auto",):
            for label, runner in runners.items():
                seconds = webtext("shards", str(run), "--force", "--shard-tokens", str(args.shard_tokens),
                                  "--encoder", engine, *runner)
                stage_seconds = json.loads(Path(run, layout.STATS, "shards.json").read_text())["seconds"]
                print(f"webtext shards --encoder {engine} ({label}): {mb / seconds:6.1f} MB/s "
                      f"({seconds:.1f} s; the stage itself {stage_seconds:.1f} s without interpreter start-up)")
                check_ids(run, dict(zip(doc_ids, baseline)))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
