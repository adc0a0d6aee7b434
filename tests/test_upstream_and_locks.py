"""A stage reads only what a finished upstream wrote, and one writer at a time owns a stage's output or a training dir."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from tests.tokenizer_corpus import write_docs
from webtext.pipeline import layout, sinks, storage
from webtext.pipeline.demo_dump import make_sample_dump
from webtext.pipeline.layout import RunDir

REPO = Path(__file__).resolve().parent.parent


def link(i: int) -> dict:
    return {"url": f"http://127.0.0.1:9/page-{i}", "url_key": f"127.0.0.1:9/page-{i}", "domain": "127.0.0.1",
            "score": 5, "score_sum": 5, "num_submissions": 1, "created_utc": 0, "subreddits": ["test"],
            "submission_ids": [f"s{i}"], "title": f"page {i}"}


def write_links(run: Path, shards: range, total: int = 8) -> None:
    """Link shards as the links stage names them; `shards` of `total` (a killed run wrote only some)."""
    for index in shards:
        storage.write_parquet_rows(str(Path(run, layout.LINKS, sinks.shard_name("links", index, total))),
                                   [link(index * 10 + i) for i in range(10)], layout.LINKS_SCHEMA)


DOCS_SCHEMA = pa.schema([("doc_id", pa.string()), ("url", pa.string()), ("domain", pa.string()), ("text", pa.string()),
                        ("score", pa.int64())])


def docs(count: int) -> list[dict]:
    return [{"doc_id": f"d{i}", "url": f"http://x{i}.example/", "domain": f"x{i}.example",
             "text": f"document {i} says {i * 7} words " * 20, "score": 3} for i in range(count)]


def crawl_docs(run: Path, files: range, total: int = 8) -> None:
    """RUN/docs as the crawl writes it (docs-NNNNN-of-MMMMM.parquet), `files` of `total` of them."""
    rows = docs(total * 5)
    for index in files:
        storage.write_parquet_rows(str(Path(run, layout.DOCS, sinks.shard_name("docs", index, total))),
                                   rows[index::total], DOCS_SCHEMA)


# -- 1. a stage must not consume an unfinished upstream -------------------------------------------------------------

def test_crawl_refuses_the_links_of_a_links_run_that_was_killed(tmp_path, webtext_cli, beam_args, capsys):
    run = tmp_path / "run"
    write_links(run, range(2))  # killed after 2 of 8 files: no links/_SUCCESS
    assert webtext_cli("crawl", run, *beam_args) == 2
    err = capsys.readouterr().err
    assert f"{Path(run, layout.LINKS, layout.SUCCESS)} not found: the links stage has not finished" in err
    assert f"run `webtext links {run}`" in err and "Traceback" not in err
    assert not Path(run, layout.DOCS).exists() and not Path(run, "crawl", layout.SUCCESS).exists()


def test_crawl_refuses_links_that_changed_after_their_run_finished(tmp_path, webtext_cli, beam_args, capsys):
    run = tmp_path / "run"
    write_links(run, range(8))
    RunDir(str(run)).write_success("links", "fp", [layout.LINKS])  # what a finished links run leaves
    extra = Path(run, layout.LINKS, sinks.shard_name("links", 0, 1))
    write_links(run, range(1), total=1)  # a second writer's shard beside the finished run's
    assert webtext_cli("crawl", run, *beam_args) == 2
    assert f"{extra} was not written by it" in capsys.readouterr().err
    extra.unlink()
    Path(run, layout.LINKS, sinks.shard_name("links", 3, 8)).unlink()
    assert webtext_cli("crawl", run, *beam_args) == 2
    assert f"{Path(run, layout.LINKS, sinks.shard_name('links', 3, 8))} is missing" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["dedup", "tokenizer", "shards"])
def test_document_readers_refuse_the_docs_of_a_crawl_that_was_killed(tmp_path, webtext_cli, beam_args, capsys, stage):
    run = tmp_path / "run"
    crawl_docs(run, range(5))  # killed after 5 of 8 docs files: RUN/docs, no crawl/_SUCCESS
    options = ["--vocab-size", "300"] if stage == "tokenizer" else beam_args
    assert webtext_cli(stage, run, *options) == 2
    err = capsys.readouterr().err
    assert f"{Path(run, 'crawl', layout.SUCCESS)} not found: the crawl stage has not finished" in err
    assert f"create {run}/{layout.PLACED_DOCS}" in err  # how to say the documents were placed by hand
    assert not Path(run, stage, layout.SUCCESS).exists()


def test_hand_placed_documents_are_read_only_when_marked(tmp_path, webtext_cli, capsys):
    run = tmp_path / "run"
    write_docs(Path(run, layout.DOCS), docs(20), schema=DOCS_SCHEMA)
    assert webtext_cli("tokenizer", run, "--vocab-size", "300") == 2
    assert "the crawl stage has not finished" in capsys.readouterr().err
    Path(run, layout.PLACED_DOCS).touch()
    assert webtext_cli("tokenizer", run, "--vocab-size", "300") == 0
    assert Path(run, layout.TOKENIZER, layout.SUCCESS).exists()


def test_a_finished_crawls_documents_are_read_and_a_rerun_skips_only_while_its_files_are_intact(tmp_path, webtext_cli,
                                                                                                capsys):
    run = tmp_path / "run"
    crawl_docs(run, range(8))
    RunDir(str(run)).write_success("crawl", "fp", [layout.FETCH_LOG, layout.DOCS])
    assert webtext_cli("tokenizer", run, "--vocab-size", "300") == 0
    assert webtext_cli("tokenizer", run, "--vocab-size", "300") == 0
    assert "tokenizer: up to date, skipped" in capsys.readouterr().err
    Path(run, layout.TOKENIZER, "merges.txt").unlink()
    assert webtext_cli("tokenizer", run, "--vocab-size", "300") == 0
    assert "up to date" not in capsys.readouterr().err and Path(run, layout.TOKENIZER, "merges.txt").exists()


def test_a_stage_fails_when_its_upstream_changes_while_it_runs(tmp_path):
    from webtext.pipeline.stage import Stage, StageError, run_stage

    run = RunDir(str(tmp_path))
    write_links(tmp_path, range(2), total=2)
    run.write_success("links", "fp", [layout.LINKS])

    def execute(ctx):
        write_links(tmp_path, range(1), total=1)  # a links run writing while this stage reads

    reader = Stage("reader", "reads the links", [], execute, upstream=lambda run, config: ["links"],
                   outputs=["reader"], runs_beam=False)
    with pytest.raises(StageError, match=r"links-00000-of-00001.parquet was not written by it"):
        run_stage(reader, run, {}, [])
    assert not Path(tmp_path, "reader", layout.SUCCESS).exists()


# -- 4. one writer per run directory --------------------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from webtext.pipeline import layout, locks
    from webtext.train.dirlock import DirLock
    kind, target = sys.argv[1], sys.argv[2]
    lock = locks.stage_lock(layout.RunDir(target), sys.argv[3]) if kind == "stage" else DirLock(target, "training")
    with lock:
        print("held", flush=True)
        time.sleep(600)
""")


def hold_lock(*args: str) -> subprocess.Popen:
    """Another process that holds a lock, as a running `webtext links` or `webtext train` does."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, *args], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dumps") / "RS_2016-03.zst"
    make_sample_dump(path, n=300, seed=3)
    return path


def test_a_lock_is_held_once_names_its_holder_and_leaves_nothing_when_released(tmp_path):
    from webtext.train.dirlock import DirLock, LockHeld

    path = tmp_path / "out" / layout.LOCK
    with DirLock(path, "out"):
        with pytest.raises(LockHeld, match=rf"{path}: out is being written by pid {os.getpid()} on "):
            DirLock(path, "out").acquire()
    assert not (tmp_path / "out").exists()  # the lock made the folder, and nothing else was written in it


def test_a_second_links_run_on_one_run_is_refused_naming_the_holder(tmp_path, webtext_cli, beam_args, capsys, dump):
    run = tmp_path / "run"
    holder = hold_lock("stage", str(run), "links")
    try:
        assert webtext_cli("links", run, "--reddit-dumps", str(dump), *beam_args) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"webtext links: error: {Path(run, layout.LINKS, layout.LOCK)}")
    assert f"pid {holder.pid} on {socket.gethostname()} since " in err
    assert not list(Path(run, layout.LINKS).glob("*.parquet")) and not Path(run, layout.LINKS, layout.SUCCESS).exists()


def test_the_lock_of_a_killed_links_run_is_taken_over(tmp_path, webtext_cli, beam_args, capsys, dump):
    run = tmp_path / "run"
    holder = hold_lock("stage", str(run), "links")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert Path(run, layout.LINKS, layout.LOCK).exists()  # left behind by the killed process
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), *beam_args) == 0
    assert f"taking over the lock of pid {holder.pid}" in capsys.readouterr().err
    assert Path(run, layout.LINKS, layout.SUCCESS).exists() and not Path(run, layout.LINKS, layout.LOCK).exists()


def test_a_second_training_with_the_same_name_is_refused(tmp_path, caplog):
    pytest.importorskip("torch")
    from tests.train_support import make_run
    from webtext.train.cli import main as train_main
    from webtext.train.shard_format import RUN_TRAINING

    run = tmp_path / "run"
    make_run(run, train_docs=40, val_docs=4)
    train_dir = run / RUN_TRAINING / "x"
    holder = hold_lock("train", str(train_dir / layout.LOCK))
    try:
        assert train_main(["train", str(run), "--name", "x", "--model", "tiny", "--block-size", "32",
                           "--micro-batch", "2", "--max-steps", "2", "--device", "cpu"]) == 2
    finally:
        holder.kill()
        holder.wait()
    assert f"{train_dir / layout.LOCK}: the training directory x is being written by pid {holder.pid}" in caplog.text
    assert sorted(p.name for p in train_dir.iterdir()) == [layout.LOCK]  # no log, config or checkpoint of ours


GS_LOCK = textwrap.dedent("""
    from webtext.pipeline import layout, locks, storage
    run = layout.RunDir("gs://bucket/run")
    with locks.stage_lock(run, "links"):
        print("held:", storage.exists("gs://bucket/run/links/_LOCK"))
        try:
            with locks.stage_lock(run, "links"):
                print("second writer: lock taken")
        except storage.StageError as error:
            print("second writer:", error)
    print("after:", storage.exists("gs://bucket/run/links/_LOCK"))
""")


@pytest.mark.slow
def test_on_gcs_the_lock_is_an_object_a_second_writer_is_refused_and_told_how_to_clear_a_stale_one(tmp_path):
    pytest.importorskip("gcp_storage_emulator", reason="needs the dev extra (gcp-storage-emulator)")
    from tests.cloud_peers import google_env, isolated_env, metadata_server, storage_emulator

    with storage_emulator(tmp_path / "gcs") as emulator, metadata_server() as metadata:
        env = isolated_env(tmp_path / "env", **google_env(emulator, metadata))
        done = subprocess.run([sys.executable, "-c", GS_LOCK], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=300)
    lock = "gs://bucket/run/links/_LOCK"
    held, refusal, after = done.stdout.splitlines()
    assert (held, after) == ("held: True", "after: False"), done.stderr
    assert refusal.startswith(f"second writer: {lock}: the links stage's output is being written by pid ")
    assert refusal.endswith(f"if that process is gone, delete the lock: gsutil rm {lock}")
