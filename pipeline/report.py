"""`webtext stats RUN`: a run's funnel, rejects, distributions, domains, contamination, training and provenance,
streamed from its files into RUN/stats/stats.json, RUN/stats/report.html and a terminal summary."""
from __future__ import annotations

import json
import logging
import os
import random
import sys
import zlib
from collections import Counter
from datetime import datetime, timezone
from importlib import metadata, resources

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tld

from webtext.crawl.extract import quality

from . import layout, storage
from .layout import RunDir
from .storage import StageError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

SAMPLE_SIZE = 20_000  # values kept per distribution (a reservoir); counts and means are exact
JOIN_SAMPLE = 5_000  # URLs whose extraction yield is measured (chosen by a hash of the URL, so both sides agree)
EXAMPLES_PER_REASON = 3
TOP_REASONS = 3
TOP_DOMAINS = 50
FILTER_REASONS = frozenset(quality.RULES) | {"language"}  # the crawl's quality rules; the rest are fetch/extraction
VERSIONED = ("webtext", "apache-beam", "pyarrow", "trafilatura", "datasketch", "tokenizers", "torch")


# -- streamed aggregates ---------------------------------------------------------------------------------------------

class Distribution:
    """Count, mean, min and max of a stream of numbers, and a fixed-size uniform sample of it for quantiles/plots."""

    def __init__(self, seed: int = 0):
        self.count, self.total, self.sample = 0, 0.0, []
        self.low, self.high = float("inf"), float("-inf")
        self._random = random.Random(seed)

    def add(self, values) -> None:
        for value in values:
            if value is None:
                continue
            self.count += 1
            self.total += value
            self.low, self.high = min(self.low, value), max(self.high, value)
            if len(self.sample) < SAMPLE_SIZE:
                self.sample.append(value)
            else:
                slot = self._random.randrange(self.count)
                if slot < SAMPLE_SIZE:
                    self.sample[slot] = value

    def summary(self) -> dict:
        if not self.count:
            return {"count": 0}
        ordered = sorted(self.sample)
        quantiles = {f"p{q}": ordered[min(len(ordered) - 1, q * len(ordered) // 100)] for q in (10, 50, 90)}
        return {"count": self.count, "mean": round(self.total / self.count, 4), "min": self.low, "max": self.high,
                **quantiles, "sampled": len(self.sample), "sample": ordered}


def _in_join_sample(key: str, every: int) -> bool:
    return zlib.crc32(key.encode()) % every == 0


def _stage_stats(run: RunDir) -> dict:
    stages = {}
    for stage in layout.DATA_STAGES:
        found = run.files(f"{layout.STATS}/{stage}.json")
        if found:
            stats = json.loads(storage.read_bytes(found[0].path))
            finished = datetime.fromtimestamp(found[0].mtime, timezone.utc).isoformat(timespec="seconds") \
                if found[0].mtime else None
            stages[stage] = {"seconds": stats.get("seconds"), "counters": stats.get("counters", {}),
                             "finished": finished}
    return stages


def collect_rejects(run: RunDir, stage: str) -> dict[str, dict]:
    """Per reason: how many rows the rejects Parquet holds, and the first few as examples (URL, detail)."""
    reasons: dict[str, dict] = {}
    for batch in storage.iter_batches(run.files(f"{layout.REJECTS}/{stage}/*.parquet"), ["reason", "detail", "url"]):
        for row in batch.to_pylist():
            entry = reasons.setdefault(row["reason"], {"count": 0, "examples": []})
            entry["count"] += 1
            if len(entry["examples"]) < EXAMPLES_PER_REASON:
                entry["examples"].append({"url": row["url"], "detail": row["detail"]})
    return dict(sorted(reasons.items(), key=lambda kv: (-kv[1]["count"], kv[0])))


def collect_fetch_log(run: RunDir) -> tuple[dict, dict, Counter]:
    """Status codes and fetch times of every fetch, bytes received of the sampled pages, and the fetch-side reasons."""
    files = run.files(f"{layout.FETCH_LOG}/*.parquet")
    every = max(1, storage.count_rows(files) // JOIN_SAMPLE) if files else 1
    statuses: Counter = Counter()
    elapsed = Distribution()
    page_bytes: dict[str, int] = {}
    fetch_reasons: Counter = Counter()
    for batch in storage.iter_batches(files, ["url_key", "outcome", "status", "bytes", "elapsed", "reason"]):
        statuses.update("no response" if s is None else str(s) for s in batch.column("status").to_pylist())
        elapsed.add(batch.column("elapsed").to_pylist())
        for row in batch.to_pylist():
            if row["outcome"] == "page":
                if _in_join_sample(row["url_key"], every) and row["bytes"]:
                    page_bytes[row["url_key"]] = row["bytes"]
            elif row["reason"]:
                fetch_reasons[row["reason"]] += 1
    return {"statuses": dict(sorted(statuses.items())), "elapsed": elapsed}, \
        {"every": every, "bytes": page_bytes}, fetch_reasons


def collect_documents(run: RunDir, join: dict) -> dict:
    """Distributions of the crawl's documents (yield: text bytes / bytes received) and of the final corpus."""
    dists = {name: Distribution() for name in ("words", "language_score", "score", "extraction_yield")}
    crawled = run.files(layout.DOCS_GLOB) if join["bytes"] else []  # without a fetch log there is nothing to join
    for batch in storage.iter_batches(crawled, ["url_key", "text"]):
        text_bytes = pc.binary_length(batch.column("text")).to_pylist()
        for key, size in zip(batch.column("url_key").to_pylist(), text_bytes):
            html_bytes = join["bytes"].get(key) if key and _in_join_sample(key, join["every"]) else None
            if html_bytes and size is not None:
                dists["extraction_yield"].add([size / html_bytes])
    domains: Counter | None = None  # stays None for documents without a domain column
    source = layout.find_documents(run)
    if source is not None:
        wanted = ["n_words", "language_score", "score", "domain"]
        names = set(layout.check_documents(source.files, [])[0].names)
        for batch in storage.iter_batches(source.files, [c for c in wanted if c in names]):
            for column, name in (("n_words", "words"), ("language_score", "language_score"), ("score", "score")):
                if column in names:
                    dists[name].add(batch.column(column).to_pylist())
            if "domain" in names:
                domains = domains if domains is not None else Counter()
                domains.update(registered_name(d) for d in batch.column("domain").to_pylist())
    return {"dists": dists, "domains": domains, "source": source.stage if source else None}


def collect_shard_tokens(run: RunDir) -> Distribution:
    tokens = Distribution()
    for entry in run.files(f"{layout.SHARDS}/*.arrow"):
        with storage.open_read(entry.path) as handle:
            reader = pa.ipc.open_file(handle)
            for index in range(reader.num_record_batches):
                tokens.add(pc.list_value_length(reader.get_batch(index).column("tokens")).to_pylist())
    return tokens


def collect_cluster_sizes(run: RunDir) -> dict[str, int]:
    members: Counter = Counter()
    for batch in storage.iter_batches(run.files(f"{layout.DEDUP}/clusters-*.parquet"), ["cluster_id"]):
        members.update(batch.column("cluster_id").to_pylist())
    return {str(size): count for size, count in sorted(Counter(members.values()).items())}


def collect_training(run: RunDir) -> dict[str, list[dict]]:
    runs = {}
    for entry in run.files(f"{layout.TRAINING}/*/log.jsonl"):
        name = entry.path.rstrip("/").split("/")[-2]
        runs[name] = [json.loads(line) for line in storage.read_bytes(entry.path).decode().splitlines() if line.strip()]
    return runs


# -- domains ---------------------------------------------------------------------------------------------------------

def registered_name(host: str | None) -> str:
    """A host as WebText's domain list names it: the registrable label without its public suffix (news.bbc.co.uk ->
    bbc); hosts with no public suffix (IP addresses, localhost) stay whole."""
    if not host:
        return "(none)"
    parsed = tld.get_tld(host, fix_protocol=True, as_object=True, fail_silently=True)
    return parsed.domain if parsed and parsed.domain else host


def webtext_domains() -> list[tuple[str, int]]:
    """OpenAI's WebText top domains, shipped as package data (see its header for the source)."""
    text = resources.files("webtext.pipeline").joinpath("data/webtext_domains.txt").read_text()
    rows = [line.split(maxsplit=1) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [(row[1].strip() if len(row) > 1 else "(none)", int(row[0])) for row in rows]  # one row has no name


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i], reverse=True)
    ranks = [0.0] * len(values)
    for rank, index in enumerate(order):
        ranks[index] = float(rank)
    return ranks


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    ra, rb = np.array(_ranks(a)), np.array(_ranks(b))
    if ra.std() == 0 or rb.std() == 0:
        return None
    return round(float(np.corrcoef(ra, rb)[0, 1]), 4)


def compare_domains(domains: Counter) -> dict:
    ours = domains.most_common(TOP_DOMAINS)
    theirs = webtext_domains()
    their_counts = dict(theirs)
    shared = [d for d in domains if d in their_counts]
    return {
        "corpus_top": ours, "webtext_top": theirs[:TOP_DOMAINS], "corpus_domains": len(domains),
        "overlap_with_webtext_top1000": len(shared),
        "documents_on_shared_domains": sum(domains[d] for d in shared),
        "spearman_on_shared_domains": spearman([domains[d] for d in shared], [their_counts[d] for d in shared]),
        "wikipedia_documents": domains.get("wikipedia", 0),
    }


# -- the funnel ------------------------------------------------------------------------------------------------------

def _top(reasons: dict[str, int], stage: str) -> list[dict]:
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
    return [{"stage": stage, "reason": r, "count": c} for r, c in ranked]


def funnel(stages: dict, rejects: dict, fetch_reasons: Counter, manifest: dict | None) -> list[dict]:
    counters = {name: info["counters"] for name, info in stages.items()}
    crawl_rejects = {r: e["count"] for r, e in rejects.get("crawl", {}).items()}
    filtered = {r: c for r, c in crawl_rejects.items() if r in FILTER_REASONS}
    fetch = {r: c for r, c in crawl_rejects.items() if r in fetch_reasons and r not in filtered}
    extraction = {r: c for r, c in crawl_rejects.items() if r not in filtered and r not in fetch}

    def count(stage: str, name: str) -> int | None:
        return counters[stage].get(name) if stage in counters else None

    fetched = count("crawl", "pages.fetched")
    steps = [
        ("submissions read", count("links", "submissions.read"), []),
        ("qualifying links", count("links", "links.written"),
         _top({r: e["count"] for r, e in rejects.get("links", {}).items()}, "links")),
        ("fetched", fetched, _top(fetch, "crawl")),
        ("extracted", None if fetched is None else fetched - sum(extraction.values()), _top(extraction, "crawl")),
        ("passed filters", count("crawl", "docs.written"), _top(filtered, "crawl")),
        ("dedup survivors", count("dedup", "docs.written"),
         _top({r: e["count"] for r, e in rejects.get("dedup", {}).items()}, "dedup")),
    ]
    shard_rejects = {r: e["count"] for s in ("tokenizer", "shards") for r, e in rejects.get(s, {}).items()}
    in_shards = None
    if manifest is not None:
        in_shards = sum(s.get("documents", 0) for s in manifest.get("shards", []))
    steps.append(("documents in shards", in_shards, _top(shard_rejects, "shards")))
    rows, previous = [], None
    for name, value, top in steps:
        share = round(value / previous, 4) if value is not None and previous else None
        rows.append({"step": name, "count": value, "share_of_previous": share, "top_rejects": top})
        previous = value if value is not None else previous
    if manifest is not None:
        rows[-1]["tokens"] = sum(s.get("tokens", 0) for s in manifest.get("shards", []))
    return rows


# -- provenance ------------------------------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def provenance(run: RunDir, stages: dict) -> dict:
    config_path = run.path(layout.CONFIG)
    config = tomllib.loads(storage.read_bytes(config_path).decode()) if storage.exists(config_path) else {}
    return {"config": config, "versions_at_report_time": versions(),
            "report_written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "stages": {name: {"seconds": info["seconds"], "finished": info["finished"]}
                       for name, info in stages.items()}}


# -- everything ------------------------------------------------------------------------------------------------------

def collect(run: RunDir) -> dict:
    """The whole report as one dict; distributions carry their sample (dropped from stats.json)."""
    if "://" not in run.root and not os.path.isdir(run.root):
        what = "is a file" if os.path.exists(run.root) else "does not exist"
        raise StageError(f"{run.root}: {what}: not a run directory (give the RUN of a build or demo)")
    stages = _stage_stats(run)
    if not stages and not storage.exists(run.path(layout.CONFIG)) and layout.find_documents(run) is None:
        raise StageError(f"{run.root}: nothing to report (no stats/<stage>.json, no config.toml, no documents): "
                         "is it a run directory?")
    rejects = {stage: collect_rejects(run, stage) for stage in layout.DATA_STAGES}
    fetches, join, fetch_reasons = collect_fetch_log(run)
    documents = collect_documents(run, join)
    manifest_path = run.path(layout.SHARDS_MANIFEST)
    manifest = json.loads(storage.read_bytes(manifest_path)) if storage.exists(manifest_path) else None
    lsh_path = run.path(layout.DEDUP, "lsh.json")
    contamination_path = run.stats("contamination.json")
    dists = {
        "document_words": documents["dists"]["words"], "document_tokens": collect_shard_tokens(run),
        "language_score": documents["dists"]["language_score"], "reddit_score": documents["dists"]["score"],
        "fetch_seconds": fetches["elapsed"], "extraction_yield": documents["dists"]["extraction_yield"],
    }
    return {
        "run": run.root,
        "funnel": funnel(stages, rejects, fetch_reasons, manifest),
        "stages": stages,
        "rejects": rejects,
        "documents_from": documents["source"],
        "distributions": {name: dist.summary() for name, dist in dists.items()},
        "fetch_status_codes": fetches["statuses"],
        "duplicate_cluster_sizes": collect_cluster_sizes(run),
        "lsh": json.loads(storage.read_bytes(lsh_path)) if storage.exists(lsh_path) else None,
        "domains": None if documents["domains"] is None else compare_domains(documents["domains"]),
        "contamination": json.loads(storage.read_bytes(contamination_path))
        if storage.exists(contamination_path) else None,
        "training": collect_training(run),
        "provenance": provenance(run, stages),
    }


def machine_readable(summary: dict) -> dict:
    """The summary without the distributions' samples (stats.json keeps their count/mean/quantiles)."""
    out = dict(summary)
    out["distributions"] = {name: {k: v for k, v in dist.items() if k != "sample"}
                            for name, dist in summary["distributions"].items()}
    return out


def print_stats(root: str) -> int:
    from .report_html import render_html
    from .report_terminal import print_summary

    run = RunDir(root)
    summary = collect(run)
    run.write_json(machine_readable(summary), layout.STATS, "stats.json")
    storage.write_bytes(run.stats("report.html"), render_html(summary).encode())
    print_summary(summary)
    print(f"\nwritten: {run.stats('stats.json')}, {run.stats('report.html')}")
    return 0
