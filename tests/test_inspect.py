"""`webtext inspect RUN …` on the demo's run (built once, on the in-process runner) and on a copy of it on gs://."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import BEAM_TEST_ARGS
from webtext.pipeline import layout
from webtext.pipeline.cli import available_stages, build_parser, main
from webtext.pipeline.corpus_inspect import SUBCOMMANDS
from webtext.train import shard_format


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("inspect") / "demo"
    assert main(["demo", str(run), *BEAM_TEST_ARGS]) == 0
    return run


def table(run: Path, pattern: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(run.glob(pattern))])


def rows(run: Path, pattern: str) -> list[dict]:
    return table(run, pattern).to_pylist()


def inspect(capsys, run, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["inspect", str(run), *args])
    out, err = capsys.readouterr()
    return code, out, err


def inspect_json(capsys, run, *args: str):
    code, out, err = inspect(capsys, run, *args, "--json")
    assert code == 0, err
    return out


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def reject(run: Path, stage: str, reason: str) -> dict:
    return next(r for r in rows(run, f"rejects/{stage}/*.parquet") if r["reason"] == reason)


# -- docs ------------------------------------------------------------------------------------------------------------

def test_docs_lists_the_deduplicated_corpus_as_its_parquet_holds_it(demo_run, capsys):
    corpus = {r["doc_id"]: r for r in rows(demo_run, layout.DEDUP_DOCS_GLOB)}
    listed = json_lines(inspect_json(capsys, demo_run, "docs", "--limit", "0"))
    assert [d["doc_id"] for d in listed] == [r["doc_id"] for r in rows(demo_run, layout.DEDUP_DOCS_GLOB)]
    for item in listed:
        row = corpus[item["doc_id"]]
        for name in ("url", "domain", "score", "language", "language_score", "n_words"):
            assert item[name] == row[name], name
        assert item["text_start"] == row["text"][:300]
    assert len(json_lines(inspect_json(capsys, demo_run, "docs"))) == 20  # --limit's default


def test_docs_filters_by_domain_words_and_regular_expression(demo_run, capsys):
    corpus = rows(demo_run, layout.DEDUP_DOCS_GLOB)
    long_ones = json_lines(inspect_json(capsys, demo_run, "docs", "--limit", "0", "--min-words", "400"))
    assert {d["doc_id"] for d in long_ones} == {r["doc_id"] for r in corpus if r["n_words"] >= 400}
    assert 0 < len(long_ones) < len(corpus)
    assert len(json_lines(inspect_json(capsys, demo_run, "docs", "--limit", "0", "--domain", "127.0.0.1"))) == \
        len(corpus)
    assert json_lines(inspect_json(capsys, demo_run, "docs", "--domain", "27.0.0.1")) == []  # a label, not a substring
    matched = json_lines(inspect_json(capsys, demo_run, "docs", "--limit", "0", "--grep", r"(?i)\bsymlinks?\b"))
    expected = [r for r in corpus if "symlink" in r["text"].lower()]
    assert {d["doc_id"] for d in matched} == {r["doc_id"] for r in expected} and matched
    assert all("symlink" in d["match"]["context"].lower() for d in matched)


def test_docs_sample_is_a_seeded_reservoir(demo_run, capsys):
    corpus = [r["doc_id"] for r in rows(demo_run, layout.DEDUP_DOCS_GLOB)]
    sample = lambda seed: [d["doc_id"] for d in json_lines(  # noqa: E731
        inspect_json(capsys, demo_run, "docs", "--sample", "5", "--seed", str(seed)))]
    first = sample(1)
    assert len(set(first)) == 5 and set(first) <= set(corpus)
    assert first == sorted(first, key=corpus.index)  # in corpus order
    assert sample(1) == first
    assert any(sample(seed) != first for seed in (2, 3, 4))
    code, out, _ = inspect(capsys, demo_run, "docs", "--sample", "3")
    assert code == 0 and "3 document(s)" in out


# -- doc -------------------------------------------------------------------------------------------------------------

def test_doc_shows_the_document_whole_with_its_provenance_and_tokens(demo_run, capsys):
    row = rows(demo_run, layout.DEDUP_DOCS_GLOB)[0]
    doc = json.loads(inspect_json(capsys, demo_run, "doc", row["doc_id"]))
    assert {k: doc[k] for k in row} == row  # every column, the text whole
    assert doc["fetch_log"]["url_key"] == row["url_key"] and doc["fetch_log"]["outcome"] == "page"
    record = doc["warc_record"]
    assert record["target_uri"] == row["final_url"] and record["status"] == 200 and "error" not in record
    assert record["payload_bytes"] == doc["fetch_log"]["bytes"]
    in_shards = {}
    for path in sorted(Path(demo_run, layout.SHARDS).glob("*.arrow")):
        shard = shard_format.Shard(path)
        in_shards.update((doc_id, len(tokens)) for doc_id, tokens in shard)
    assert doc["tokens"]["tokens"] == in_shards[row["doc_id"]] and doc["tokens"]["same_tokenizer_as_shards"]
    assert doc["corpus"] == {"dedup": {"outcome": "kept"}, "shards": {"outcome": "kept"}}
    code, out, _ = inspect(capsys, demo_run, "doc", row["doc_id"])
    assert code == 0 and row["submission_ids"][0] in out and "WARC record" in out and row["text"][:40] in out


def test_doc_of_a_removed_duplicate_names_its_cluster(demo_run, capsys):
    removed = reject(demo_run, "dedup", "near-duplicate")
    doc = json.loads(inspect_json(capsys, demo_run, "doc", removed["item_id"]))
    assert doc["corpus"]["dedup"] == {"outcome": "dropped", "reason": "near-duplicate", "detail": removed["detail"]}
    assert doc["corpus"].get("shards") is None
    cluster = {r["doc_id"]: r for r in rows(demo_run, layout.DEDUP_CLUSTERS_GLOB)}
    assert {m["doc_id"] for m in doc["cluster"]} == set(cluster)


# -- rejects ---------------------------------------------------------------------------------------------------------

def test_rejects_lists_a_stage_s_rejects_and_filters_by_reason(demo_run, capsys):
    expected = rows(demo_run, "rejects/crawl/*.parquet")
    assert json_lines(inspect_json(capsys, demo_run, "rejects", "--stage", "crawl")) == expected
    links = json_lines(inspect_json(capsys, demo_run, "rejects", "--stage", "links", "--reason", "wikipedia",
                                    "--limit", "0"))
    assert links == [r for r in rows(demo_run, "rejects/links/*.parquet") if r["reason"] == "wikipedia"] and links
    code, out, _ = inspect(capsys, demo_run, "rejects", "--stage", "crawl")
    assert code == 0 and "http-404" in out and f"{len(expected)} reject(s)" in out


# -- cluster ---------------------------------------------------------------------------------------------------------

def test_cluster_shows_survivor_and_members_with_jaccard_and_word_diff(demo_run, capsys):
    clusters = rows(demo_run, layout.DEDUP_CLUSTERS_GLOB)
    survivor = next(r["doc_id"] for r in clusters if r["kept"])
    near = reject(demo_run, "dedup", "near-duplicate")["item_id"]
    by_survivor = json.loads(inspect_json(capsys, demo_run, "cluster", survivor))
    assert json.loads(inspect_json(capsys, demo_run, "cluster", near)) == {**by_survivor, "doc_id": near}
    assert by_survivor["survivor"]["doc_id"] == survivor
    members = {m["doc_id"]: m for m in by_survivor["members"]}
    assert {m["reason"] for m in members.values()} == {"exact-duplicate", "near-duplicate"}
    for row in clusters:
        if not row["kept"]:
            assert members[row["doc_id"]]["jaccard_estimated"] == row["jaccard"]
    pair = rows(demo_run, "dedup/pairs-*.parquet")[0]  # dedup's exact Jaccard of the survivor and the near copy
    assert {pair["doc_id_a"], pair["doc_id_b"]} == {survivor, near}
    assert members[near]["jaccard"] == round(pair["jaccard"], 4)
    changes = [op for op in members[near]["diff"] if op["op"] != "equal"]
    assert changes and all(op["survivor"] or op["member"] for op in changes)
    texts = {r["doc_id"]: r["text"] for r in rows(demo_run, layout.DOCS_GLOB)}
    rebuilt = " ".join(op["text"] if op["op"] == "equal" else op["member"] for op in members[near]["diff"])
    assert rebuilt.split() == texts[near].split()  # the diff, applied to the survivor, gives the member
    code, out, _ = inspect(capsys, demo_run, "cluster", near)
    assert code == 0 and "near-duplicate" in out and "{+" in out


def test_cluster_of_a_unique_document_says_it_has_no_copy(demo_run, capsys):
    in_clusters = {r["doc_id"] for r in rows(demo_run, layout.DEDUP_CLUSTERS_GLOB)}
    unique = next(r["doc_id"] for r in rows(demo_run, layout.DEDUP_DOCS_GLOB) if r["doc_id"] not in in_clusters)
    assert json.loads(inspect_json(capsys, demo_run, "cluster", unique)) == {
        "doc_id": unique, "cluster_id": None, "survivor": None, "members": []}


# -- url -------------------------------------------------------------------------------------------------------------

def trace(capsys, run, url: str) -> dict:
    return json.loads(inspect_json(capsys, run, "url", url))


def outcomes(found: dict) -> list[str]:
    return [step["outcome"] for step in found["stages"]]


def test_url_of_a_kept_document_pasted_raw(demo_run, capsys):
    row = rows(demo_run, layout.DEDUP_DOCS_GLOB)[0]
    scheme, rest = row["url"].split("://", 1)
    pasted = f"{scheme.upper()}://{rest}?utm_source=reddit#top"  # what a browser's address bar may hold
    found = trace(capsys, demo_run, pasted)
    assert found["url_key"] == row["url_key"] and found["doc_id"] == row["doc_id"]
    assert found["outcome"] == "kept" and found["dropped_at"] is None
    assert outcomes(found) == ["kept"] * 4
    assert found["stages"][0]["link"]["submission_ids"] == row["submission_ids"]
    code, out, _ = inspect(capsys, demo_run, "url", pasted)
    assert code == 0 and f"kept by every stage that has run: document {row['doc_id']}" in out


@pytest.mark.parametrize("stage, reason, step", [
    ("links", "wikipedia", None), ("links", "invalid-url", None), ("crawl", "http-404", "fetch"),
    ("crawl", "robots-disallowed", "fetch"), ("crawl", "too-few-words", "quality filter"),
    ("crawl", "language", "quality filter"), ("crawl", "binary-body", "extraction"),
    ("dedup", "near-duplicate", None), ("dedup", "exact-duplicate", None)])
def test_url_dropped_names_the_stage_step_and_reason(demo_run, capsys, stage, reason, step):
    rejected = reject(demo_run, stage, reason)
    found = trace(capsys, demo_run, rejected["url"])
    assert found["outcome"] == "dropped"
    assert found["dropped_at"] == {"stage": stage, "step": step, "reason": reason, "detail": rejected["detail"]}
    index = layout.DATA_STAGES.index(stage) if stage != "dedup" else 2
    assert outcomes(found)[:index] == ["kept"] * index and outcomes(found)[index] == "dropped"
    assert set(outcomes(found)[index + 1:]) <= {"not reached"}
    if stage == "dedup":
        assert found["doc_id"] == rejected["item_id"]
    if stage == "crawl" and step == "fetch":
        assert found["stages"][1]["fetch_log"]["reason"] == reason


def test_url_kept_at_links_lists_its_rejected_submissions(demo_run, capsys):
    duplicate = reject(demo_run, "links", "duplicate-submission")
    found = trace(capsys, demo_run, duplicate["url"])
    assert found["stages"][0]["outcome"] == "kept"
    assert {"reason": "duplicate-submission", "detail": duplicate["detail"], "url": duplicate["url"],
            "submission_id": duplicate["item_id"]} in found["stages"][0]["rejected_submissions"]


# -- errors and help -------------------------------------------------------------------------------------------------

def one_line_error(capsys, run, *args: str) -> str:
    code, out, err = inspect(capsys, run, *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    return err


def test_what_is_not_there_is_a_one_line_error(demo_run, tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert "not a run directory" in one_line_error(capsys, missing, "docs")
    assert not missing.exists()  # nothing created there
    assert "not a run directory" in one_line_error(capsys, tmp_path, "url", "http://x.example/")
    assert "no document 'feedface'" in one_line_error(capsys, demo_run, "doc", "feedface")
    assert "no document 'feedface'" in one_line_error(capsys, demo_run, "cluster", "feedface")
    nowhere = "http://nowhere.example/page"
    assert f"{nowhere}: not in" in one_line_error(capsys, demo_run, "url", nowhere)
    err = one_line_error(capsys, demo_run, "rejects", "--stage", "crawl", "--reason", "no-such-reason")
    assert "its reasons: binary-body, http-404" in err
    assert "not a regular expression" in one_line_error(capsys, demo_run, "docs", "--grep", "(")
    started = tmp_path / "started"
    started.mkdir()
    (started / layout.CONFIG).write_text("[links]\nmin_karma = 3\n")
    assert "the dedup stage has not finished" in one_line_error(capsys, started, "rejects", "--stage", "dedup")
    assert "the dedup stage has not finished" in one_line_error(capsys, started, "cluster", "feedface")
    assert "no documents to read" in one_line_error(capsys, started, "docs")
    with pytest.raises(SystemExit) as stop:
        main(["inspect", str(demo_run), "rejects", "--stage", "nowhere"])
    assert stop.value.code == 2


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_subcommand_has_help_for_every_option(capsys):
    whats = subparsers(subparsers(build_parser(available_stages()))["inspect"])
    assert set(whats) == set(SUBCOMMANDS)
    for name, parser in whats.items():
        assert parser.description, name
        for action in parser._actions:
            assert action.help, (name, action.dest)
        with pytest.raises(SystemExit) as stop:
            main(["inspect", "RUN", name, "--help"])
        assert stop.value.code == 0 and "print JSON for scripts" in capsys.readouterr().out


# -- a run on gs:// --------------------------------------------------------------------------------------------------

COPY_THEN_INSPECT = """
import contextlib, io, json, sys
from pathlib import Path
from webtext.pipeline import storage
from webtext.pipeline.cli import available_stages, build_parser, main

local, remote, commands = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
for path in sorted(p for p in local.rglob("*") if p.is_file() and "train" not in p.parts and "sample" not in p.parts):
    storage.write_bytes(f"{remote}/{path.relative_to(local).as_posix()}", path.read_bytes())
results = []
for command in commands:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["inspect", remote, *command])
    results.append({"code": code, "out": out.getvalue()})
print(json.dumps(results))
"""


@pytest.mark.slow
def test_inspect_of_a_run_on_gcs(demo_run, tmp_path, capsys):
    pytest.importorskip("google.cloud.storage", reason="needs the gcp extra (apache-beam[gcp])")
    from tests.cloud_peers import google_env, isolated_env, metadata_server, public_names_resolved, storage_emulator

    survivor = next(r["doc_id"] for r in rows(demo_run, layout.DEDUP_CLUSTERS_GLOB) if r["kept"])
    kept_url = rows(demo_run, layout.DEDUP_DOCS_GLOB)[0]["url"]
    commands = [["docs", "--limit", "0"], ["docs", "--sample", "4", "--seed", "7"], ["doc", survivor],
                ["rejects", "--stage", "crawl"], ["cluster", survivor], ["url", kept_url],
                ["url", reject(demo_run, "crawl", "http-404")["url"]]]
    commands = [[*command, "--json"] for command in commands]
    with storage_emulator(tmp_path / "gcs") as emulator, metadata_server() as metadata:
        env = isolated_env(tmp_path, **google_env(emulator, metadata))
        done = subprocess.run([sys.executable, "-c", COPY_THEN_INSPECT, str(demo_run), "gs://bucket/run",
                               json.dumps(commands)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert public_names_resolved(tmp_path) == []
    remote = json.loads(done.stdout.splitlines()[-1])
    for command, result in zip(commands, remote):
        assert result["code"] == 0, command
        ours = inspect_json(capsys, demo_run, *command[:-1])
        if command[0] == "doc":  # the WARC record and the tokenizer are read from the run on gs://
            theirs, mine = json.loads(result["out"]), json.loads(ours)
            assert theirs["warc_record"]["file"].startswith("gs://bucket/run/crawl/warc/")
            assert theirs["tokens"]["tokenizer"] == "gs://bucket/run/tokenizer/tokenizer.json"
            for found in (theirs, mine):
                found["warc_record"].pop("file"), found["tokens"].pop("tokenizer")
            assert theirs == mine
        else:
            assert result["out"] == ours, command
