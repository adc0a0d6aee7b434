"""The README's main job: `webtext demo RUN` builds the generated sample end to end, and `webtext stats` explains it."""
from __future__ import annotations

import hashlib
import json
import shlex
import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from webtext.pipeline import layout
from webtext.pipeline.demo_web import record_ports, recorded_ports, serve_sample_web
from webtext.pipeline.layout import RunDir
from webtext.train.shard_format import Manifest, Shard

STAGE_OUTPUTS = (layout.SAMPLE_DUMP, layout.LINKS, layout.WARC, layout.FETCH_LOG, layout.FETCH_JOURNAL, layout.DOCS,
                 layout.DEDUP, layout.TOKENIZER, layout.SHARDS)


def count_rows(folder, pattern: str) -> int:
    return sum(pq.ParquetFile(path).metadata.num_rows for path in folder.glob(pattern))


def output_hashes(run: Path) -> dict[str, str]:
    """sha256 of every file the stages (and the demo's sample) wrote, by path under RUN."""
    files = [p for name in STAGE_OUTPUTS for p in ([Path(run, name)] + sorted(Path(run, name).rglob("*")))]
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def split_of_documents(run: Path) -> dict[str, set[str]]:
    manifest = Manifest.load(Path(run, layout.SHARDS))
    return {split: {doc_id for info in manifest.split(split)
                    for doc_id in Shard(Path(run, layout.SHARDS, info.name)).doc_ids.to_pylist()}
            for split in ("train", "val")}


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
    banner = next(line for line in err.splitlines() if line.startswith("demo: wrote"))
    assert "qualifying" not in banner.split("(")[0] and f"{count_rows(run, layout.LINKS_GLOB) + 1} distinct URLs" in banner
    steps = out[out.index("What next:"):].splitlines()[1:]
    assert any(line.strip().startswith(f"open {run / layout.STATS / 'report.html'}") for line in steps)
    commands = [shlex.split(line.split("#")[0])[1:] for line in steps if line.strip().startswith("webtext ")]
    assert {c[2] if c[0] == "inspect" else c[0] for c in commands} == {"docs", "doc", "cluster", "url", "rejects", "sample"}
    for command in commands:  # each one pasted as it is works on this run
        assert webtext_cli(*command) == 0, command
    cluster = capfd.readouterr().out
    assert "jaccard" in cluster.lower()  # the demo's doc id is one with duplicates

    assert webtext_cli("stats", run) == 0
    assert "links" in capfd.readouterr().out

    built, split = output_hashes(run), split_of_documents(run)
    assert split["val"] and split["train"]
    ports = recorded_ports(Path(run, layout.SAMPLE_WEB))
    assert sorted(ports) == [f"site{i}" for i in range(4)]
    from webtext.train.checkpoint import WEIGHTS, checkpoint_name
    checkpoint = Path(run, layout.TRAINING, "demo", checkpoint_name(20), WEIGHTS)
    trained = checkpoint.read_bytes()

    assert webtext_cli("demo", run) == 0  # the README's command again, on the same directory: nothing to do
    err = capfd.readouterr().err
    assert "demo: kept (unchanged)" in err
    for stage in layout.DATA_STAGES:
        assert f"{stage}: up to date, skipped" in err, stage
        assert f"{stage}: done in" not in err, stage
    assert "demo: training up to date, skipped" in err
    assert output_hashes(run) == built  # the sample and every stage's output byte for byte
    assert split_of_documents(run) == split
    assert recorded_ports(Path(run, layout.SAMPLE_WEB)) == ports
    assert checkpoint.read_bytes() == trained
    log = [json.loads(line) for line in Path(run, layout.TRAINING, "demo", "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 20

    assert webtext_cli("demo", run, "--force") == 0  # --force rebuilds every stage and trains the model again
    err = capfd.readouterr().err
    for stage in layout.DATA_STAGES:
        assert f"{stage}: done in" in err, stage
    assert "demo: training up to date" not in err
    assert split_of_documents(run) == split


def test_sample_web_binds_recorded_ports_and_moves_off_a_taken_one(tmp_path):
    record = tmp_path / layout.SAMPLE_WEB
    with serve_sample_web(n=4, sites=2, bad_pages=False) as first:
        record_ports(record, first.ports)
        urls = first.urls
    assert recorded_ports(record) == first.ports and not first.moved
    with serve_sample_web(n=4, sites=2, bad_pages=False, ports=recorded_ports(record)) as again:
        assert again.urls == urls and not again.moved
    taken = first.ports["site1"]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        with serve_sample_web(n=4, sites=2, bad_pages=False, ports=recorded_ports(record)) as moved:
            assert moved.ports["site0"] == first.ports["site0"]
            fresh = moved.ports["site1"]
            assert fresh != taken and moved.moved == {"site1": (taken, fresh)}
            assert [u for u in moved.urls if ":%d/" % fresh in u] == [u.replace(f":{taken}/", f":{fresh}/")
                                                                      for u in urls if f":{taken}/" in u]


def test_an_unreadable_port_record_means_fresh_ports(tmp_path, caplog):
    record = tmp_path / "web.json"
    record.write_text('{"ports": {"site0": "eighty"}}')
    assert recorded_ports(record) == {}
    assert str(record) in caplog.text
    assert recorded_ports(tmp_path / "none.json") == {}
