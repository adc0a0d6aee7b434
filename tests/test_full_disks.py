"""A full or read-only disk is one clear line naming what was being written (no traceback) and exit 2; the
temporary files of the refused write are gone, and earlier outputs and checkpoints are intact."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.disk_limits import run_on_full_disk, run_on_read_only, snapshot, temp_files
from tests.tokenizer_corpus import place_docs
from tests.train_support import make_run
from webtext.pipeline import layout
from webtext.pipeline.demo_dump import make_sample_dump
from webtext.train.shard_format import RUN_TRAINING

WEBTEXT = [sys.executable, "-m", "webtext.pipeline.cli"]
FNAPI = "--runner=FnApiRunner"
TINY = ["--model", "tiny", "--block-size", "32", "--micro-batch", "4", "--warmup", "2", "--device", "cpu",
        "--eval-every", "10", "--eval-batches", "2", "--ckpt-every", "10", "--name", "tiny"]


def webtext(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([*WEBTEXT, *map(str, argv)], capture_output=True, text=True, timeout=600)


def error_line(done: subprocess.CompletedProcess, command: str) -> str:
    """The command's one error line; it failed with exit 2 and printed no traceback."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if " error: " in line or " ERROR " in line]
    assert len(errors) == 1, done.stderr[-3000:]
    if command in layout.TRAIN_COMMANDS:
        assert re.match(r"^\S+ \S+ ERROR webtext\.train: ", errors[0]), errors[0]
    else:
        assert errors[0].startswith(f"webtext {command}: error: "), errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dump") / "RS_2016-03.zst"
    make_sample_dump(path, n=300, seed=7)
    return path


@pytest.fixture(scope="module")
def docs_run(tmp_path_factory) -> Path:
    """A RUN with documents and a tokenizer: what the shards stage reads."""
    run = tmp_path_factory.mktemp("docs") / "run"
    rows = [{"doc_id": f"d{i}", "text": f"document {i} says something about {i % 7} things " * 20, "url": None}
            for i in range(300)]
    place_docs(run, rows)
    assert webtext("tokenizer", run, "--vocab-size", "300").returncode == 0
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A RUN with shards and a training directory with ckpt-00000010."""
    run = tmp_path_factory.mktemp("trained") / "run"
    make_run(run)
    done = webtext("train", run, *TINY, "--max-steps", "10")
    assert done.returncode == 0, done.stderr[-3000:]
    return run


# -- full disks ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_links_on_a_full_disk_is_one_line_from_the_workers(dump, tmp_path):
    """On the default local runner the write fails in a worker process: still one line, and no temp files."""
    done, after = run_on_full_disk(tmp_path / "run", [*WEBTEXT, "links", str(tmp_path / "run"), "--reddit-dumps",
                                                      str(dump), "--direct_num_workers=2"])
    line = error_line(done, "links")
    assert re.search(rf"error: no space left on device while writing {tmp_path / 'run'}/"
                     r"((links|rejects)/\S+\.parquet|links/_work/\S+\.zst)$", line), line  # an output or a work file
    assert temp_files(after) == []
    assert not (after / "links" / layout.SUCCESS).exists()


def test_shards_on_a_full_disk_keep_the_documents_and_leave_no_partial_shard(docs_run, tmp_path):
    before = snapshot(docs_run)
    run = tmp_path / "run"
    done, after = run_on_full_disk(run, [*WEBTEXT, "shards", str(run), "--shard-tokens", "20000", FNAPI],
                                   source=docs_run)
    line = error_line(done, "shards")
    assert re.search(rf"error: no space left on device while writing {run}/\S+$", line), line
    assert temp_files(after) == []
    assert not (after / layout.SHARDS / layout.SUCCESS).exists()
    for name in before:  # the stage's inputs, and the tokenizer stage's outputs, as they were
        if not name.startswith(("config.toml", "stats")):
            assert (after / name).read_bytes() == before[name], name


def test_train_on_a_full_disk_keeps_the_last_checkpoint(trained, tmp_path):
    run = tmp_path / "run"
    checkpoint = Path(RUN_TRAINING, "tiny", "ckpt-00000010")
    before = snapshot(trained / checkpoint)
    done, after = run_on_full_disk(run, [*WEBTEXT, "train", str(run), *TINY, "--max-steps", "20", "--resume"],
                                   source=trained, free="64k")
    line = error_line(done, "train")
    assert re.search(rf"no space left on device while writing {run}/{RUN_TRAINING}/tiny/\S+$", line), line
    assert "unexpected pos" not in done.stderr
    assert temp_files(after) == []
    assert snapshot(after / checkpoint) == before
    assert not (after / RUN_TRAINING / "tiny" / "ckpt-00000020").exists()


# -- read-only disks ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def read_only_run(trained, dump) -> Path:
    """A RUN with links, shards, a training directory and a checkpoint, to be mounted read-only."""
    done = webtext("links", trained, "--reddit-dumps", dump, FNAPI)
    assert done.returncode == 0, done.stderr[-3000:]
    return trained


@pytest.mark.parametrize("command, argv, written", [
    ("stats", [], "stats/stats.json"),
    ("links", ["--force", "--reddit-dumps", "DUMP", FNAPI], "config.toml"),
    ("dedup", ["--input-docs", "RUN/links/*.parquet", FNAPI], "config.toml"),
    ("shards", ["--force", FNAPI], "config.toml"),
    ("train", TINY + ["--max-steps", "20", "--resume"], f"{RUN_TRAINING}/tiny/"),
    ("export-hf", ["RUN/hf"], "hf"),
])
def test_a_read_only_run_is_one_line_and_changes_nothing(command, argv, written, read_only_run, dump):
    run = read_only_run
    before = snapshot(run)
    args = [str(a).replace("RUN", str(run)).replace("DUMP", str(dump)) for a in argv]
    target = [str(run / RUN_TRAINING / "tiny")] if command == "export-hf" else [str(run)]
    done = run_on_read_only(run, [*WEBTEXT, command, *target, *args])
    line = error_line(done, command)
    assert "read-only file system" in line and f"{run}/{written}" in line, line
    assert snapshot(run) == before
