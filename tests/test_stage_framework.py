"""The stage framework: config precedence, skip-if-unchanged, counters and stats, deterministic Parquet, rejects."""
from __future__ import annotations

import json
import logging
import random
import tempfile

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from webtext.pipeline import layout, sinks, storage
from webtext.pipeline.cli import build_parser, load_config_file, save_resolved_config
from webtext.pipeline.layout import RunDir
from webtext.pipeline.stage import (Option, Stage, StageError, counter_table, default_beam_args, resolve_config,
                                    run_stage)

SCHEMA = pa.schema([("key", pa.string()), ("value", pa.int64())])


def numbers_stage(calls: list) -> Stage:
    """A small real stage: numbers to Parquet shards, odd ones rejected."""

    def execute(ctx):
        calls.append(dict(ctx.config))
        out = ctx.run.path("numbers")
        n = ctx.config["count"]

        def build(p):
            rows = p | beam.Create(range(n)) | beam.Map(lambda i: {"key": f"k{i:04d}", "value": i})
            evens = rows | beam.Filter(lambda r: r["value"] % 2 == 0)
            evens | sinks.WriteParquet(out, "numbers", SCHEMA, 3, shard_key=lambda r: r["key"], sort_key=lambda r: r["key"])
            (rows | beam.Filter(lambda r: r["value"] % 2 == 1)
             | beam.Map(lambda r: layout.reject("numbers", "odd", f"value {r['value']}", item_id=r["key"]))
             | beam.ParDo(sinks.CountRejects("numbers"))
             | sinks.WriteRejects(ctx.run.rejects("numbers"), "numbers"))

        ctx.run_pipeline(build)
        sinks.fill_empty_shards(out, "numbers", SCHEMA, 3)
        ctx.count("driver.note", 7)

    return Stage("numbers", "numbers to shards", [Option("--count", "how many", int, 10),
                                                  Option("--label", "a label", default="x"),
                                                  Option("--tags", "tags", multiple=True),
                                                  Option("--loud", "a switch", switch=True)],
                 execute, outputs=["numbers"])


def read_rows(pattern: str) -> list[dict]:
    rows = []
    for entry in storage.match(pattern):
        rows.extend(storage.read_rows(entry.path))
    return rows


def test_config_precedence_defaults_file_flags():
    stage = numbers_stage([])
    config = resolve_config(stage, {"numbers": {"count": 12, "label": "file", "tags": "a"}}, {"label": "flag"})
    assert config == {"count": 12, "label": "flag", "tags": ["a"], "loud": False}


def test_unknown_config_key_is_a_clear_error():
    with pytest.raises(StageError, match=r"unknown option\(s\) in \[numbers\].*colour"):
        resolve_config(numbers_stage([]), {"numbers": {"colour": "red"}}, {})


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(StageError, match="not found"):
        load_config_file(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[links\n")
    with pytest.raises(StageError, match="bad.toml is not valid TOML"):
        load_config_file(str(bad))


def test_stage_runs_writes_stats_and_skips_when_unchanged(tmp_path, beam_args, capsys):
    calls: list = []
    stage = numbers_stage(calls)
    run = RunDir(str(tmp_path / "run"))
    config = resolve_config(stage, {}, {})
    assert run_stage(stage, run, config, beam_args) is True
    rows = read_rows(run.path("numbers", "numbers-*.parquet"))
    assert [r["value"] for r in sorted(rows, key=lambda r: r["value"])] == [0, 2, 4, 6, 8]
    written = sorted(entry.path.rsplit("/", 1)[1] for entry in storage.match(run.path("numbers", "*.parquet")))
    assert written == [sinks.shard_name("numbers", i, 3) for i in range(3)]
    rejects = read_rows(run.path(layout.REJECTS, "numbers", "*.parquet"))
    assert sorted(r["item_id"] for r in rejects) == ["k0001", "k0003", "k0005", "k0007", "k0009"]
    assert {r["reason"] for r in rejects} == {"odd"} and {r["stage"] for r in rejects} == {"numbers"}
    stats = json.loads(storage.read_bytes(run.stats("numbers.json")))
    assert stats["counters"] == {"reject.odd": 5, "driver.note": 7}
    assert storage.exists(run.success_path("numbers"))
    assert "reject.odd" in capsys.readouterr().err

    assert run_stage(stage, run, config, beam_args) is False  # unchanged: skipped
    assert len(calls) == 1
    assert run_stage(stage, run, config, beam_args, force=True) is True
    changed = resolve_config(stage, {}, {"count": 4})
    assert run_stage(stage, run, changed, beam_args) is True  # options changed: runs again, stale rows cleared
    assert sorted(r["value"] for r in read_rows(run.path("numbers", "numbers-*.parquet"))) == [0, 2]
    assert len(calls) == 3


def test_a_rejects_file_sorted_in_spilled_runs_is_the_same_file_as_sorted_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "local"))  # where the worker spills its runs
    (tmp_path / "local").mkdir()
    rng = random.Random(3)
    rejects = [(rng.choice(["too-short", "http-error", "robots"]), rng.choice([None, f"detail {rng.randrange(9)}"]),
                rng.choice([None, f"http://127.0.0.1/{rng.randrange(400)}"]), f"id{i:05d}") for i in range(3_000)]
    whole = sinks.write_reject_shard(str(tmp_path / "whole"), "crawl", 1, rejects)
    spilled = sinks.write_reject_shard(str(tmp_path / "spilled"), "crawl", 1, reversed(rejects), sort_run=101)
    assert open(spilled, "rb").read() == open(whole, "rb").read()
    table = pq.read_table(whole)
    assert table.num_rows == 3_000 and set(table.column("stage").to_pylist()) == {"crawl"}
    rows = list(zip(*(table.column(name).to_pylist() for name in ("reason", "detail", "url", "item_id"))))
    assert rows == sorted(rejects, key=sinks.reject_order)
    assert not list((tmp_path / "local").iterdir())  # the spilled runs are removed


def test_a_stage_that_rejects_nothing_writes_no_rejects_file(tmp_path, beam_args):
    stage = numbers_stage([])
    run = RunDir(str(tmp_path / "run"))
    assert run_stage(stage, run, resolve_config(stage, {}, {"count": 1}), beam_args) is True  # 0 only: no odd number
    assert storage.match(run.path(layout.REJECTS, "numbers", "*")) == []
    assert run_stage(stage, run, resolve_config(stage, {}, {"count": 2}), beam_args) is True  # 1 is odd
    assert [r["item_id"] for r in read_rows(run.path(layout.REJECTS, "numbers", "*.parquet"))] == ["k0001"]
    assert len(storage.match(run.path(layout.REJECTS, "numbers", "*"))) == 1  # one file, not one per reject shard
    assert run_stage(stage, run, resolve_config(stage, {}, {"count": 1}), beam_args) is True
    assert storage.match(run.path(layout.REJECTS, "numbers", "*")) == []  # the earlier run's rejects are gone


def test_parquet_output_is_deterministic(tmp_path, beam_args):
    outputs = []
    for attempt in range(2):
        run = RunDir(str(tmp_path / f"run{attempt}"))
        stage = numbers_stage([])
        run_stage(stage, run, resolve_config(stage, {}, {"count": 50}), beam_args)
        outputs.append({e.path.rsplit("/", 1)[1]: pq.read_table(e.path).to_pylist()
                        for e in storage.match(run.path("numbers", "*.parquet"))})
    assert outputs[0] == outputs[1]
    for rows in outputs[0].values():
        assert [r["key"] for r in rows] == sorted(r["key"] for r in rows)


def test_unknown_flags_go_to_beam_and_config_toml_records_the_run(tmp_path):
    stage = numbers_stage([])
    parser = build_parser({"numbers": stage})
    args, beam_args = parser.parse_known_args(["numbers", str(tmp_path), "--count", "3", "--runner=FnApiRunner",
                                               "--direct_num_workers", "2"])
    assert args.count == 3 and not hasattr(args, "label")
    assert beam_args == ["--runner=FnApiRunner", "--direct_num_workers", "2"]
    run = RunDir(str(tmp_path))
    save_resolved_config(run, {"numbers": resolve_config(stage, {}, {"count": 3})}, beam_args)
    saved = load_config_file(run.path(layout.CONFIG))
    assert saved["numbers"]["count"] == 3 and saved["run"]["beam_args"] == beam_args


def test_counter_table_lists_every_counter():
    table = counter_table("links", {"reject.nsfw": 3, "links.written": 1200})
    assert "reject.nsfw" in table and "1,200" in table


def test_local_default_runner_keeps_our_worker_logs_and_quiets_beams():
    ours = logging.getLogger("webtext")
    level, _ = ours.level, ours.setLevel(logging.INFO)  # as `webtext --log-level INFO` sets it
    try:
        local = default_beam_args([])
    finally:
        ours.setLevel(level)
    assert local[0] == "--direct_running_mode=multi_processing"  # on the pinned LocalRunner: no --runner
    assert not any(a.startswith("--runner") for a in local)
    overrides = json.loads(next(a for a in local if a.startswith("--sdk_harness_log_level_overrides=")).split("=", 1)[1])
    assert overrides["webtext"] == "INFO" and "--default_sdk_harness_log_level=WARNING" in local
    custom = default_beam_args(["--default_sdk_harness_log_level=DEBUG"])  # the user's choice stands alone
    assert [a for a in custom if "log_level" in a] == ["--default_sdk_harness_log_level=DEBUG"]
    assert default_beam_args(["--runner=DataflowRunner"]) == ["--runner=DataflowRunner"]
