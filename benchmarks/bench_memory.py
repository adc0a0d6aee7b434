"""Peak memory of the dedup and shards stages at several corpus sizes, and its growth per 100k documents / 100M tokens;
with --submissions, of the links stage at several dump sizes, and its growth per million submissions.

    python benchmarks/bench_memory.py [--docs 20000 80000 320000] [--submissions 250000 1000000] [--workers N] [--json out.json]

For each size: real-sentence documents with planted exact and near duplicates (bench_dedup_speed's corpus) in
RUN/docs, then `webtext dedup RUN`, `webtext tokenizer RUN --from-gpt2 shared/data/gpt2-tokenizer` and
`webtext shards RUN`, each a child process on the default local runner (one worker process per core unless
--workers), while the resident memory of its whole process tree (driver and workers) is sampled every 0.2 s.
Growth is the least-squares slope of peak memory over documents (dedup) and over tokens (shards). For links: a
generated Pushshift-style dump (pipeline/demo_dump.py, seed 1, as bench_links) read by `webtext links RUN`.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dedup_corpus import REPO, shared_data  # noqa: E402
from bench_dedup_speed import TreeMemory, make_corpus  # noqa: E402

from webtext.pipeline import layout  # noqa: E402
from webtext.pipeline.demo_dump import make_sample_dump  # noqa: E402

MIB = 2**20


def run_stage(run: Path, log: Path, args: list[str], workers: int | None) -> dict:
    """One `webtext` command in a child process: its wall time and the peak RSS of its process tree."""
    command = [sys.executable, "-m", "webtext.pipeline.cli", *args]
    if workers:
        command.append(f"--direct_num_workers={workers}")
    started = time.perf_counter()
    with open(log, "a") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        timeline: list = []
        memory = TreeMemory(process.pid, interval=0.2, timeline=timeline)
        memory.start()
        code = process.wait()
        memory.stopped.set()
        memory.join()
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed ({code}); see {log}")
    with open(log.with_suffix(f".{args[0]}.rss.jsonl"), "w") as samples:  # per-process RSS over time, for profiling
        for at, driver, workers in timeline:
            samples.write(json.dumps({"s": round(at - started, 2), "driver_mib": round(driver / MIB),
                                      "workers_mib": [round(w / MIB) for w in workers]}) + "\n")
    return {"seconds": round(seconds, 1), "peak_tree_mib": round(memory.peak_total / MIB),
            "peak_driver_mib": round(memory.peak_root / MIB), "peak_single_mib": round(memory.peak_single / MIB)}


def slope(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    denominator = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / denominator if denominator else None


def measure(docs: int, workdir: Path, args) -> dict:
    run = workdir / f"run-{docs}"
    planted = make_corpus(Path(run, layout.DOCS), docs, args.seed, args.files)
    Path(run, layout.PLACED_DOCS).touch()  # a corpus made here, not by the crawl stage
    log = workdir / f"run-{docs}.log"
    dedup = run_stage(run, log, ["dedup", str(run), "--force"], args.workers)
    counters = json.loads(Path(run, layout.STATS, "dedup.json").read_text())["counters"]
    run_stage(run, log, ["tokenizer", str(run), "--force", "--from-gpt2", str(shared_data() / "gpt2-tokenizer")], None)
    shards = run_stage(run, log, ["shards", str(run), "--force"], args.workers)
    manifest = json.loads(Path(run, layout.SHARDS_MANIFEST).read_text())
    tokens = sum(shard["tokens"] for shard in manifest["shards"])
    return {"docs": docs, "text_mb": round(planted["chars"] / 1e6, 1),
            "planted": {k: planted[k] for k in ("exact", "near")},
            "dedup": {**dedup, "docs_per_s": round(docs / dedup["seconds"]),
                      "removed": counters.get("docs.read", 0) - counters.get("docs.written", 0)},
            "shards": {**shards, "tokens": tokens, "docs_per_s": round(counters.get("docs.written", 0) / shards["seconds"])}}


def measure_links(submissions: int, workdir: Path, args) -> dict:
    run = workdir / f"links-{submissions}"
    dump = workdir / f"RS_bench-{submissions}.zst"
    make_sample_dump(dump, n=submissions, seed=1)
    links = run_stage(run, workdir / f"links-{submissions}.log",
                      ["links", str(run), "--force", "--reddit-dumps", str(dump)], args.workers)
    counters = json.loads(Path(run, layout.STATS, "links.json").read_text())["counters"]
    return {"submissions": submissions, "dump_mb": round(dump.stat().st_size / 1e6, 1),
            "links": {**links, "written": counters.get("links.written", 0),
                      "submissions_per_s": round(counters.get("submissions.read", 0) / links["seconds"])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, nargs="*", default=[20_000, 80_000, 320_000])
    parser.add_argument("--submissions", type=int, nargs="*", default=[], help="dump sizes for the links stage")
    parser.add_argument("--workers", type=int, help="--direct_num_workers (default: the local runner's, one per core)")
    parser.add_argument("--files", type=int, default=16, help="input Parquet files")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary folder, removed)")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as temp:
        workdir = Path(args.workdir or temp)
        workdir.mkdir(parents=True, exist_ok=True)
        sizes = []
        for docs in args.docs:
            sizes.append(measure(docs, workdir, args))
            print(json.dumps(sizes[-1]), flush=True)
        dumps = []
        for submissions in args.submissions:
            dumps.append(measure_links(submissions, workdir, args))
            print(json.dumps(dumps[-1]), flush=True)
    dedup_growth = slope([s["docs"] / 1e5 for s in sizes], [s["dedup"]["peak_tree_mib"] for s in sizes])
    shards_growth = slope([s["shards"]["tokens"] / 1e8 for s in sizes], [s["shards"]["peak_tree_mib"] for s in sizes])
    links_growth = slope([d["submissions"] / 1e6 for d in dumps], [d["links"]["peak_tree_mib"] for d in dumps])
    figures = {"sizes": sizes, "links": dumps,
               "links_growth_mib_per_1m_submissions": None if links_growth is None else round(links_growth),
               "dedup_growth_mib_per_100k_docs": None if dedup_growth is None else round(dedup_growth),
               "shards_growth_mib_per_100m_tokens": None if shards_growth is None else round(shards_growth),
               "cpus": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
               "load_after": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
