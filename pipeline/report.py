"""`webtext stats RUN`: what a run holds — rows per stage output, rejects by reason, counters — as text, JSON and HTML."""
from __future__ import annotations

import html
import json
import logging
from collections import Counter

from . import layout, storage
from .layout import RunDir

log = logging.getLogger(__name__)

OUTPUTS = {"links": layout.LINKS_GLOB, "docs": layout.DOCS_GLOB, "dedup": layout.DEDUP_DOCS_GLOB}


def rejects_by_reason(run: RunDir, stage: str) -> dict[str, int]:
    reasons: Counter[str] = Counter()
    for batch in storage.iter_batches(run.files(f"{layout.REJECTS}/{stage}/*.parquet"), ["reason"]):
        reasons.update(batch.column("reason").to_pylist())
    return dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


def collect(run: RunDir) -> dict:
    summary: dict = {"run": run.root, "outputs": {}, "stages": {}}
    for name, pattern in OUTPUTS.items():
        files = run.files(pattern)
        if files:
            summary["outputs"][name] = storage.count_rows(files)
    manifest = run.path(layout.SHARDS_MANIFEST)
    if storage.exists(manifest):
        data = json.loads(storage.read_bytes(manifest))
        for split in ("train", "val"):
            shards = [s for s in data.get("shards", []) if s.get("split") == split]
            summary["outputs"][f"{split}_tokens"] = sum(s.get("tokens", 0) for s in shards)
            summary["outputs"][f"{split}_documents"] = sum(s.get("documents", 0) for s in shards)
    for stage in layout.DATA_STAGES:
        stats_path = run.stats(f"{stage}.json")
        if not storage.exists(stats_path):
            continue
        stats = json.loads(storage.read_bytes(stats_path))
        summary["stages"][stage] = {"seconds": stats.get("seconds"), "counters": stats.get("counters", {}),
                                    "rejects": rejects_by_reason(run, stage)}
    return summary


def render_text(summary: dict) -> str:
    lines = [f"run {summary['run']}", ""]
    for name, value in summary["outputs"].items():
        lines.append(f"  {name:<18} {value:>14,}")
    for stage, info in summary["stages"].items():
        lines += ["", f"{stage} ({info['seconds']}s)"]
        for reason, count in info["rejects"].items():
            lines.append(f"  rejected {reason:<28} {count:>12,}")
    return "\n".join(lines)


def render_html(summary: dict) -> str:
    def table(rows) -> str:
        body = "".join(f"<tr><td>{html.escape(str(k))}</td><td style='text-align:right'>{v:,}</td></tr>" for k, v in rows)
        return f"<table>{body}</table>"

    parts = [f"<h1>webtext run {html.escape(summary['run'])}</h1>", "<h2>Outputs</h2>", table(summary["outputs"].items())]
    for stage, info in summary["stages"].items():
        parts += [f"<h2>{html.escape(stage)} ({info['seconds']} s)</h2>", "<h3>Rejects by reason</h3>",
                  table(info["rejects"].items()), "<h3>Counters</h3>", table(sorted(info["counters"].items()))]
    style = "body{font-family:sans-serif;max-width:60em;margin:2em auto}td{padding:2px 12px;border-bottom:1px solid #ddd}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>webtext run</title><style>{style}</style></head>" \
           f"<body>{''.join(parts)}</body></html>\n"


def print_stats(root: str) -> int:
    run = RunDir(root)
    summary = collect(run)
    run.write_json(summary, layout.STATS, "stats.json")
    storage.write_bytes(run.stats("report.html"), render_html(summary).encode())
    print(render_text(summary))
    print(f"\nwritten: {run.stats('stats.json')}, {run.stats('report.html')}")
    return 0
