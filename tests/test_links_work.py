"""The links stage keeps its payloads in work files: only small Sections cross its shuffles, its merge and its rejects
writer sort in spilled runs, and the output is the same bytes whatever the runs' size."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from webtext.pipeline import layout, links_stage, storage
from webtext.pipeline.demo_dump import make_sample_dump
from webtext.pipeline.external_sort import ExternalSort


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dumps") / "RS_2016-04.zst"
    make_sample_dump(path, n=3000, seed=11)
    return path


def output_bytes(run: Path) -> dict[str, bytes]:
    files = sorted(Path(run, layout.LINKS).glob("*.parquet")) + sorted(Path(run, layout.REJECTS, "links").glob("*"))
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in files}


def success_files(run: Path) -> list[str]:
    return list(json.loads(Path(run, layout.LINKS, layout.SUCCESS).read_text())["files"])


def test_spilled_merge_runs_give_the_same_bytes(dump, tmp_path, webtext_cli, beam_args, monkeypatch):
    assert webtext_cli("links", tmp_path / "whole", "--reddit-dumps", str(dump), "--links-shards", "2", *beam_args) == 0
    monkeypatch.setattr(links_stage, "SORT_RUN", 97)  # dozens of runs and reject flushes
    monkeypatch.setattr(links_stage.MergeAndWriteShard, "ROWS_PER_TABLE", 13)
    monkeypatch.setattr(ExternalSort, "FRAME_ITEMS", 10)
    run = tmp_path / "spilled"
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), "--links-shards", "2", *beam_args) == 0
    whole, spilled = output_bytes(tmp_path / "whole"), output_bytes(run)
    assert len(whole) == 2 + layout.REJECT_SHARDS and spilled == whole
    assert not Path(run, layout.LINKS_WORK).exists()  # the work files are gone, and not among the stage's outputs
    assert not any("_work" in name for name in success_files(run))


def test_what_crosses_the_shuffles_is_a_section_not_a_payload(dump, tmp_path):
    config = {f.name: f.default for f in dataclasses.fields(links_stage.LinksOptions)}
    work = str(tmp_path / "work")
    os.makedirs(work)
    chunks = list(links_stage.ReadDumpChunks(work).process(str(dump)))
    assert chunks[0][:2] == (str(dump), 1) and all(len(pickle.dumps(chunk)) < 300 for chunk in chunks)
    parse = links_stage.ParseAndFilter(config, work)
    parse.setup()
    out = [o for chunk in chunks for o in parse.process(chunk)]
    kept = [o for o in out if not hasattr(o, "tag")]
    rejects = [o.value for o in out if getattr(o, "tag", None) == "rejects"]
    assert {shard for shard, _ in kept} == set(range(config["links_shards"]))
    assert {shard for shard, _ in rejects} == set(range(layout.REJECT_SHARDS))
    for shard, section in kept + rejects:
        path, offset, size = section
        assert path.startswith(work) and len(pickle.dumps((shard, section))) < 200  # whatever the chunk holds
    submissions = sum(len(links_stage.read_section(section)) for _, section in kept)
    rejected = sum(len(links_stage.read_section(section)) for _, section in rejects)
    assert submissions + rejected == 3000


def test_external_sort_spills_and_merges_in_key_order():
    items = [(random.Random(i).randrange(500), i) for i in range(5_000)]
    ordered = ExternalSort(key=lambda item: item[0], limit=333)
    ordered.extend(items)
    assert len(ordered) == len(items) and len(ordered.runs) == 15
    folder = ordered.folder.name
    result = list(ordered.sorted())
    assert [k for k, _ in result] == sorted(k for k, _ in items) and sorted(result) == sorted(items)
    assert not os.path.exists(folder)  # the runs are removed once merged
    small = ExternalSort(key=lambda item: item, limit=10)
    small.extend([3, 1, 2])
    assert list(small.sorted()) == [1, 2, 3] and small.folder is None  # nothing spilled under the limit


@pytest.mark.parametrize("rows", [0, 1, 99, 100, 350])
def test_parquet_written_as_a_stream_is_the_same_file_as_written_whole(tmp_path, rows):
    schema = pa.schema([("n", pa.int64()), ("text", pa.string())])
    table = pa.table([list(range(rows)), [f"row {i}" for i in range(rows)]], schema=schema)
    storage.write_parquet_table(str(tmp_path / "whole.parquet"), table, row_group_rows=100)
    pieces = [table.slice(start, 37) for start in range(0, rows, 37)]
    assert storage.write_parquet_stream(str(tmp_path / "stream.parquet"), schema, pieces, row_group_rows=100) == rows
    assert (tmp_path / "stream.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "stream.parquet").metadata.num_row_groups == max(1, -(-rows // 100))
