"""Speed of dedup: MinHash signatures per second per core against datasketch in the same run, and the whole stage.

    python benchmarks/bench_dedup_speed.py signatures [--docs 2000]
    python benchmarks/bench_dedup_speed.py stage --docs 100000 [--workers 2]

`signatures` times one process (one core) on documents of about 3,000 characters of real text: the same shingles go
through datasketch's `MinHash.update_batch` loop, `MinHash.bulk` and webtext's batched path, and the signatures are
checked to be identical. `stage` writes a corpus of real-sentence documents with planted exact and near duplicates and
runs `webtext dedup` on the DirectRunner (multi-process), sampling the memory of the whole process tree.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from datasketch import MinHash

from bench_dedup_corpus import REPO, sentence_document, sentences, write_docs
from webtext.dedup.minhash import MinHasher, shingle_hashes, shingles
from webtext.dedup.text import words
from webtext.pipeline import layout

NUM_PERM, SEED, NGRAM = 128, 1, 5


def best_of(repeats: int, function) -> tuple[float, object]:
    """The fastest of `repeats` runs (the least disturbed by other work on a shared machine) and its result."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return min(times), result


def datasketch_loop(shingle_lists: list[list[bytes]]) -> np.ndarray:
    out = []
    for shingle_list in shingle_lists:
        minhash = MinHash(num_perm=NUM_PERM, seed=SEED)
        minhash.update_batch(shingle_list)
        out.append(minhash.hashvalues)
    return np.vstack(out)


def datasketch_bulk(shingle_lists: list[list[bytes]]) -> np.ndarray:
    return np.vstack([m.hashvalues for m in MinHash.bulk(shingle_lists, num_perm=NUM_PERM, seed=SEED)])


def webtext_batched(hasher: MinHasher, shingle_lists: list[list[bytes]]) -> np.ndarray:
    return hasher.signatures([shingle_hashes(s) for s in shingle_lists])


def bench_signatures(args) -> dict:
    rng = random.Random(args.seed)
    pool = sentences()
    texts = [sentence_document(rng, pool) for _ in range(args.docs)]
    hasher = MinHasher()
    tokenise_time, shingle_lists = best_of(args.repeats, lambda: [shingles(words(t), NGRAM) for t in texts])
    loop_time, reference = best_of(args.repeats, lambda: datasketch_loop(shingle_lists))
    bulk_time, bulk = best_of(args.repeats, lambda: datasketch_bulk(shingle_lists))
    ours_time, ours = best_of(args.repeats, lambda: webtext_batched(hasher, shingle_lists))
    assert np.array_equal(ours, reference) and np.array_equal(bulk, reference), "signatures differ from datasketch"
    per_second = lambda seconds: round(args.docs / seconds)  # noqa: E731
    figures = {
        "docs": args.docs, "mean_chars": round(statistics.mean(map(len, texts))),
        "mean_shingles": round(statistics.mean(map(len, shingle_lists))),
        "tokenise_and_shingle_docs_per_s": per_second(tokenise_time),
        "datasketch_update_batch_loop_docs_per_s": per_second(loop_time),
        "datasketch_bulk_docs_per_s": per_second(bulk_time),
        "webtext_batched_docs_per_s": per_second(ours_time),
        "speedup_vs_update_batch_loop": round(loop_time / ours_time, 2),
        "speedup_vs_bulk": round(bulk_time / ours_time, 2),
        "text_to_signature_docs_per_s": {
            "datasketch_update_batch_loop": per_second(tokenise_time + loop_time),
            "webtext_batched": per_second(tokenise_time + ours_time)},
        "identical_signatures": True,
    }
    return figures


# -- the whole stage ------------------------------------------------------------------------------------------------


def make_corpus(folder: Path, docs: int, seed: int, files: int) -> dict:
    """Real-sentence documents; 5% exact copies (case and spacing changed) and 5% near copies (1% of words edited)."""
    rng = random.Random(seed)
    pool = sentences()
    vocabulary = sorted({w for s in pool for w in s.split()})
    rows = []
    planted = {"exact": 0, "near": 0}
    for index in range(docs):
        kind = rng.random()
        if rows and kind < 0.05:
            source = rng.choice(rows)["text"]
            text, planted["exact"] = source.upper().replace(" ", "  "), planted["exact"] + 1
        elif rows and kind < 0.10:
            tokens = rng.choice(rows)["text"].split(" ")
            for i in rng.sample(range(len(tokens)), max(1, len(tokens) // 100)):
                tokens[i] = rng.choice(vocabulary)
            text, planted["near"] = " ".join(tokens), planted["near"] + 1
        else:
            text = sentence_document(rng, pool)
        rows.append({"doc_id": f"doc{index:07d}", "url": f"https://bench.example/{index}", "domain": "bench.example",
                     "text": text, "score": rng.randint(3, 1000)})
    write_docs(folder, rows, files)
    return {**planted, "chars": sum(len(r["text"]) for r in rows)}


class TreeMemory(threading.Thread):
    """Samples the resident memory of a process and all its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.5, timeline: list | None = None):
        super().__init__(daemon=True)
        self.root, self.interval = psutil.Process(pid), interval
        self.peak_total = self.peak_single = self.peak_root = 0
        self.timeline = timeline  # when given, gets (seconds, root RSS, [other processes' RSS]) per sample
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                processes = [self.root] + self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            sizes = []
            for process in processes:
                try:
                    sizes.append(process.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            self.peak_total = max(self.peak_total, sum(sizes))
            self.peak_single = max(self.peak_single, max(sizes, default=0))
            self.peak_root = max(self.peak_root, sizes[0] if sizes else 0)
            if self.timeline is not None and sizes:
                self.timeline.append((round(time.perf_counter(), 2), sizes[0], sizes[1:]))
            self.stopped.wait(self.interval)


def bench_stage(args) -> dict:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-dedup-stage-"))
    run = workdir / "run"
    started = time.perf_counter()
    planted = make_corpus(Path(run, layout.DOCS), args.docs, args.seed, args.files)
    Path(run, layout.PLACED_DOCS).touch()  # a corpus made here, not by the crawl stage
    print(f"generated {args.docs:,} documents ({planted['chars'] / 1e6:.0f} M characters) in "
          f"{time.perf_counter() - started:.0f}s: {planted}", flush=True)
    command = [str(REPO / ".venv" / "bin" / "webtext"), "dedup", str(run), "--force", "--runner=DirectRunner",
               "--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"]
    load_before = os.getloadavg()
    started = time.perf_counter()
    with open(workdir / "stage.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        memory = TreeMemory(process.pid)
        memory.start()
        code = process.wait()
        memory.stopped.set()
        memory.join()
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"webtext dedup failed ({code}); see {workdir / 'stage.log'}")
    counters = json.loads(Path(run, layout.STATS, "dedup.json").read_text())["counters"]
    return {"docs": args.docs, "workers": args.workers, "seconds": round(seconds, 1),
            "docs_per_s": round(args.docs / seconds), "peak_rss_tree_mb": round(memory.peak_total / 2**20),
            "peak_rss_single_process_mb": round(memory.peak_single / 2**20), "planted": planted,
            "counters": counters, "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()], "command": " ".join(command[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    signatures = commands.add_parser("signatures", help="signatures per second per core against datasketch")
    signatures.add_argument("--docs", type=int, default=2000)
    signatures.add_argument("--repeats", type=int, default=3)
    stage = commands.add_parser("stage", help="the whole stage on a generated corpus")
    stage.add_argument("--docs", type=int, default=100_000)
    stage.add_argument("--workers", type=int, default=2)
    stage.add_argument("--files", type=int, default=16, help="input Parquet files")
    stage.add_argument("--workdir")
    for sub in (signatures, stage):
        sub.add_argument("--seed", type=int, default=1)
        sub.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    figures = bench_signatures(args) if args.command == "signatures" else bench_stage(args)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
