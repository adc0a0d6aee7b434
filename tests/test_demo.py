"""The README's main job: `webtext demo RUN` builds the generated sample end to end, and `webtext stats` explains it."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from webtext.pipeline import layout
from webtext.pipeline.layout import RunDir


def count_rows(folder, pattern: str) -> int:
    return sum(pq.ParquetFile(path).metadata.num_rows for path in folder.glob(pattern))


@pytest.mark.slow
def test_demo_builds_every_stage_and_trains(tmp_path, webtext_cli, capfd):
    run = tmp_path / "demo"
    assert webtext_cli("demo", run) == 0  # the README's command: the pinned local runner, a process per core
    for stage in layout.DATA_STAGES:
        assert Path(RunDir(str(run)).success_path(stage)).exists(), stage
    links = count_rows(run, layout.LINKS_GLOB)
    docs = count_rows(Path(run, layout.DOCS), "docs-*.parquet")
    crawl_rejects = count_rows(Path(run, layout.REJECTS, "crawl"), "*.parquet")
    assert links > 50 and docs > 40
    assert links == docs + crawl_rejects  # every link is a document or a reject
    survivors = count_rows(run, layout.DEDUP_DOCS_GLOB)
    dedup_rejects = count_rows(Path(run, layout.REJECTS, "dedup"), "*.parquet")
    assert survivors + dedup_rejects == docs and dedup_rejects >= 2  # the sample plants an exact and a near copy
    manifest = json.loads(Path(run, layout.SHARDS_MANIFEST).read_text())
    assert {s["split"] for s in manifest["shards"]} == {"train", "val"}
    assert sum(s["documents"] for s in manifest["shards"]) == survivors
    log = [json.loads(line) for line in Path(run, layout.TRAINING, "demo", "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 20 and log[-1]["loss"] < log[0]["loss"]
    summary = json.loads(Path(run, layout.STATS, "stats.json").read_text())
    funnel = {row["step"]: row["count"] for row in summary["funnel"]}
    assert funnel["qualifying links"] == links and funnel["dedup survivors"] == survivors
    assert summary["rejects"]["crawl"]
    assert Path(run, layout.STATS, "report.html").read_text().startswith("<!doctype html>")
    out, err = capfd.readouterr()  # the worker processes' output too
    assert "rejected self-post" in out
    assert "RS_demo.zst: 400 lines read" in err  # our workers' progress is shown ...
    for beam_set_up_note in ("Pipeline_options:", "Discarding unparseable args", "semi_persistent_directory"):
        assert beam_set_up_note not in err  # ... Beam's worker start-up notes are not

    assert webtext_cli("stats", run) == 0
    assert "links" in capfd.readouterr().out

    assert webtext_cli("demo", run) == 0  # the README's command again, on the same directory
    log = [json.loads(line) for line in Path(run, layout.TRAINING, "demo", "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 20
