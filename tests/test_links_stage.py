"""End-to-end tests of `webtext links` over generated and real dump files: figures, accounting, determinism, errors."""
from __future__ import annotations

import json
import lzma
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zstandard

from webtext.crawl.reddit.linkrules import SUBMISSION_REASONS
from webtext.pipeline import layout, sinks
from tests.conftest import REPO_ROOT
from tests.dump_files import line_bomb
from webtext.pipeline.demo_dump import make_sample_dump

LINK_COLUMNS = {"url", "url_key", "domain", "score", "score_sum", "num_submissions", "created_utc", "subreddits",
                "submission_ids", "title"}


def table_rows(folder: Path, pattern: str) -> list[dict]:
    rows = []
    for path in sorted(folder.glob(pattern)):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def links_of(run: Path) -> list[dict]:
    return table_rows(run, layout.LINKS_GLOB)


def rejects_of(run: Path) -> list[dict]:
    return table_rows(Path(run, layout.REJECTS, "links"), "*.parquet")


def counters_of(run: Path) -> dict:
    return json.loads(Path(run, layout.STATS, "links.json").read_text())["counters"]


def tables_by_name(folder: Path) -> dict[str, list[dict]]:
    return {path.name: pq.read_table(path).to_pylist() for path in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def sample_dump(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("dumps") / "RS_2016-03.zst"
    planted = make_sample_dump(path, n=3000, seed=7)
    return path, planted


def test_generated_zst_dump_gives_the_planted_links_and_rejects(sample_dump, tmp_path, webtext_cli, beam_args):
    dump, planted = sample_dump
    with pytest.raises(zstandard.ZstdError):  # the 2 GiB window really needs the larger decoder limit
        zstandard.ZstdDecompressor().decompressobj().decompress(dump.read_bytes())
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), *beam_args) == 0
    links, rejects = links_of(run), rejects_of(run)
    assert len(links) == planted["links"]
    assert set(pq.read_schema(next(Path(run, layout.LINKS).glob("*.parquet"))).names) >= LINK_COLUMNS
    assert dict(Counter(r["reason"] for r in rejects)) == planted["expected_rejects"]
    assert sum(row["num_submissions"] for row in links) == planted["merged_submissions"]
    # accounting: every line is in exactly one place
    assert len(rejects) + planted["merged_submissions"] == planted["lines"]
    counters = counters_of(run)
    assert counters["submissions.read"] == planted["lines"]
    assert counters["links.written"] == len(links)
    assert {r["stage"] for r in rejects} == {"links"} and all(r["detail"] for r in rejects)
    # one row per url_key, and the merge fields are consistent
    assert len({row["url_key"] for row in links}) == len(links)
    for row in links:
        assert row["score"] >= 3 and row["score_sum"] >= row["score"]
        assert row["num_submissions"] == len(row["submission_ids"]) and row["subreddits"] == sorted(set(row["subreddits"]))
        assert "&amp;" not in row["url"]


def test_sum_rule_follows_openwebtext2(sample_dump, tmp_path, webtext_cli, beam_args):
    dump, planted = sample_dump
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), "--karma-rule", "sum", *beam_args) == 0
    assert len(links_of(run)) == planted["links_sum_rule"]
    assert Counter(r["reason"] for r in rejects_of(run))["low-karma"] == planted["low_karma_sum_rule"]


def test_same_posts_in_two_files_and_formats_merge_once(sample_dump, tmp_path, webtext_cli, beam_args):
    dump, planted = sample_dump
    plain = tmp_path / "dumps" / "RS_copy.ndjson"
    plain.parent.mkdir()
    plain.write_bytes(zstandard.ZstdDecompressor(max_window_size=2**31).decompressobj().decompress(dump.read_bytes()))
    xz = tmp_path / "dumps" / "RS_copy2.xz"
    xz.write_bytes(lzma.compress(plain.read_bytes()))
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), str(tmp_path / "dumps" / "RS_copy*"), *beam_args) == 0
    links = links_of(run)
    assert len(links) == planted["links"]
    rejects = rejects_of(run)
    reasons = Counter(r["reason"] for r in rejects)
    for reason, count in planted["expected_rejects"].items():
        if reason == "low-karma":  # decided once per URL, over the copies that survive de-duplication
            assert reasons[reason] == count
        elif reason != "duplicate-submission":
            assert reasons[reason] == 3 * count, reason
    assert sum(row["num_submissions"] for row in links) == planted["merged_submissions"]
    assert len(rejects) + planted["merged_submissions"] == 3 * planted["lines"]
    assert reasons["duplicate-submission"] >= 2 * planted["merged_submissions"]


def test_output_is_deterministic_across_runners_and_workers(sample_dump, tmp_path, webtext_cli, beam_args):
    dump, _ = sample_dump
    runs = {"fnapi": beam_args,
            "multiprocess": ["--direct_num_workers=2"]}  # the default local runner, 2 worker processes
    outputs = {}
    for name, args in runs.items():
        run = tmp_path / name
        assert webtext_cli("links", run, "--reddit-dumps", str(dump), "--links-shards", "3", *args) == 0
        outputs[name] = (tables_by_name(Path(run, layout.LINKS)), tables_by_name(Path(run, layout.REJECTS, "links")))
    assert outputs["fnapi"] == outputs["multiprocess"]
    assert sorted(outputs["fnapi"][0]) == [sinks.shard_name("links", i, 3) for i in range(3)]


def test_rerun_is_skipped_until_inputs_or_options_change(sample_dump, tmp_path, webtext_cli, beam_args, capsys):
    dump, _ = sample_dump
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), *beam_args) == 0
    capsys.readouterr()
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), *beam_args) == 0
    assert "links: up to date, skipped" in capsys.readouterr().err
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), "--min-karma", "10", *beam_args) == 0
    assert "links counters" in capsys.readouterr().err
    assert min(row["score"] for row in links_of(run)) >= 10


def test_config_file_and_flags_and_resolved_config(sample_dump, tmp_path, webtext_cli, beam_args):
    dump, _ = sample_dump
    config = tmp_path / "webtext.toml"
    config.write_text(f'[links]\nreddit_dumps = ["{dump}"]\nmin_karma = 50\nbefore = "2017-12-01"\n')
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--config", config, "--min-karma", "20", *beam_args) == 0
    import tomllib
    saved = tomllib.loads(Path(run, layout.CONFIG).read_text())
    assert saved["links"]["min_karma"] == 20 and saved["links"]["before"] == 1512086400
    assert saved["run"]["beam_args"] == beam_args
    assert min(row["score"] for row in links_of(run)) >= 20


def test_date_window_and_nsfw_flags(sample_dump, tmp_path, webtext_cli, beam_args):
    dump, planted = sample_dump
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), "--keep-nsfw", "--after", "2012-01-01",
                       "--before", "2014-01-01", *beam_args) == 0
    reasons = Counter(r["reason"] for r in rejects_of(run))
    assert "nsfw" not in reasons
    assert reasons["too-old"] > 0 and reasons["too-new"] > 0
    for row in links_of(run):
        assert 1325376000 <= row["created_utc"] < 1388534400


def test_missing_dump_is_a_clear_error_before_the_pipeline(tmp_path, webtext_cli, beam_args, capsys):
    assert webtext_cli("links", tmp_path / "run", "--reddit-dumps", str(tmp_path / "nope" / "RS_*.zst"), *beam_args) == 2
    err = capsys.readouterr().err
    assert "no file matches" in err and "RS_*.zst" in err and "Traceback" not in err
    assert webtext_cli("links", tmp_path / "run", *beam_args) == 2
    assert "--reddit-dumps" in capsys.readouterr().err


def test_too_many_bad_lines_fail_naming_file_and_line(tmp_path, webtext_cli, beam_args, capsys):
    dump = tmp_path / "RS_bad.ndjson"
    good = {"id": "a1", "url": "https://example.com/a", "score": 10, "created_utc": 1400000000, "subreddit": "x",
            "title": "t", "is_self": False, "over_18": False}
    lines = [json.dumps(dict(good, id=f"a{i}", url=f"https://example.com/{i}")) for i in range(60)]
    lines[41] = '{"id": "broken", "url": '
    lines[50] = "[1, 2, 3]"
    dump.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), *beam_args) == 2
    err = capsys.readouterr().err
    assert str(dump) in err and "line 42" in err and "--max-bad-fraction" in err
    assert not Path(run, layout.LINKS, layout.SUCCESS).exists()
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), "--max-bad-fraction", "0.05", *beam_args) == 0
    rejects = rejects_of(run)
    assert sorted(r["item_id"] for r in rejects) == [f"{dump}:42", f"{dump}:51"]
    assert len(links_of(run)) == 58


GOOD = {"id": "g0", "url": "https://example.com/g0", "score": 10, "created_utc": 1400000000, "subreddit": "x",
        "title": "t", "is_self": False, "over_18": False}
HOSTILE_LINES = {  # line number: (raw line, item_id of its reject or None for the line's own place, reason)
    2: ('{"id": "deep", "x": ' + "[" * 2000 + "]" * 2000 + "}", None, "bad-json"),
    3: (json.dumps(dict(GOOD, id="huge", score=10**30)), "huge", "score-out-of-range"),
    4: (json.dumps(dict(GOOD, id="float", score=1e300)), "float", "score-out-of-range"),
    5: (json.dumps(dict(GOOD, id="future", created_utc=10**20)), "future", "created-out-of-range"),
    6: (json.dumps(dict(GOOD, id="surl", url="https://example.com/\ud800")), "surl", "bad-unicode"),
    7: (json.dumps(dict(GOOD, id="stitle", title="a \ud800 title")), "stitle", "bad-unicode"),
    8: (json.dumps(dict(GOOD, id="\ud800x")), "\\ud800x", "bad-unicode"),
    9: (json.dumps(dict(GOOD, id="schemeless", url="//schemeless.com/")), "schemeless", "schemeless-url"),
    10: (json.dumps(dict(GOOD, id="nullurl", url=None)), "nullurl", "missing-url"),
}


def test_hostile_lines_are_each_one_reject_with_its_reason(tmp_path, webtext_cli, beam_args):
    dump = tmp_path / "RS_hostile.ndjson"
    lines = [json.dumps(dict(GOOD, id=f"g{i}", url=f"https://example.com/{i}")) for i in range(1, 41)]
    for line_no, (text, _, _) in HOSTILE_LINES.items():
        lines[line_no - 1] = text
    dump.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), "--max-bad-fraction", "0.1", *beam_args) == 0
    rejects = {r["item_id"]: r for r in rejects_of(run)}
    for line_no, (_, item_id, reason) in HOSTILE_LINES.items():
        reject = rejects[item_id or f"{dump}:{line_no}"]
        assert reject["reason"] == reason, (line_no, reject)
        if reason not in SUBMISSION_REASONS:  # a record's own faults name its line; rule rejects its submission id
            assert reject["detail"].startswith(f"{dump}:{line_no}: "), (line_no, reject)
    assert len(rejects) == len(HOSTILE_LINES)
    assert rejects["surl"]["url"] == "https://example.com/\\ud800"
    counters = counters_of(run)
    assert counters["submissions.read"] == 40 == counters["submissions.merged"] + len(rejects)
    assert len(links_of(run)) == 40 - len(HOSTILE_LINES)


def test_truncated_file_fails_unless_allowed_and_says_how_far_it_got(sample_dump, tmp_path, webtext_cli, beam_args,
                                                                    capsys):
    dump, planted = sample_dump
    cut = tmp_path / "RS_cut.zst"
    cut.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--reddit-dumps", str(cut), "--max-bad-fraction", "0.05", *beam_args) == 2
    err = capsys.readouterr().err
    assert f"{cut}: " in err and "the stream is truncated or corrupt after line " in err
    assert "--max-bad-fraction 1 keeps the " in err
    assert "Traceback" not in err and not Path(run, layout.LINKS, layout.SUCCESS).exists()
    assert webtext_cli("links", run, "--reddit-dumps", str(cut), "--max-bad-fraction", "1", *beam_args) == 0
    truncated = [r for r in rejects_of(run) if r["reason"] == "truncated-file"]
    counters = counters_of(run)
    assert 0 < counters["submissions.read"] < planted["lines"]
    assert len(truncated) == 1 and truncated[0]["item_id"] == f"{cut}:{counters['submissions.read'] + 1}"
    assert truncated[0]["detail"].startswith(
        f"{cut}: readable up to line {counters['submissions.read']} ({cut.stat().st_size:,} bytes of the file read); "
        f"zst stream ends inside a frame")
    assert f"after line {counters['submissions.read']:,};" in err
    assert 0 < len(links_of(run)) < planted["links"]


@pytest.mark.parametrize(("name", "content"), [
    ("RS_random.zst", random.Random(0).randbytes(4096)),
    ("RS_plain.zst", b'{"id": "a", "url": "https://example.com/", "score": 5, "created_utc": 1400000000}\n' * 50),
    ("RS_garbage.ndjson", b"\x00\x01 not json\n" * 50),
])
def test_a_file_with_no_readable_line_is_an_error(tmp_path, webtext_cli, beam_args, capsys, name, content):
    dump = tmp_path / name
    dump.write_bytes(content)
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), "--max-bad-fraction", "1", *beam_args) == 2
    err = capsys.readouterr().err
    assert f"{dump}: no readable line: " in err and "Traceback" not in err
    assert not Path(run, layout.LINKS, layout.SUCCESS).exists()


def test_empty_dump_is_named_and_an_overlong_line_rejected_at_the_limit(tmp_path, webtext_cli, beam_args, capsys):
    empty = tmp_path / "RS_empty.zst"
    empty.write_bytes(b"")
    long = tmp_path / "RS_long.zst"
    lines = [json.dumps(dict(GOOD, id=f"g{i}", url=f"https://example.com/{i}")) for i in range(200)]
    lines[100] = json.dumps(dict(GOOD, id="long", title="x" * 5000))
    long.write_bytes(zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode()))
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--reddit-dumps", str(empty), str(long), "--max-line-bytes", "4096",
                       *beam_args) == 0
    assert f"{empty}: empty dump file (0 bytes)" in capsys.readouterr().err
    assert [(r["reason"], r["item_id"], r["detail"]) for r in rejects_of(run)] == [
        ("bad-json", f"{long}:101", f"{long}:101: line longer than 4096 bytes")]
    assert counters_of(run)["submissions.read"] == 200 and len(links_of(run)) == 199


RUN_LINKS_IN_A_CHILD = """
import json, sys
from tests.dump_files import peak_rss
from webtext.pipeline.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "peak_rss": peak_rss()}))
"""


@pytest.mark.slow
def test_a_small_zst_holding_a_huge_line_runs_in_bounded_memory(tmp_path, beam_args):
    """The issue's 131 KB .zst holding a 4 GiB line peaked at 12.7 GB; here 1 GiB of line under a 1 MiB limit."""
    line_bytes = 1 << 30
    bomb = tmp_path / "RS_bomb.zst"
    line_bomb(bomb, line_bytes)
    run = tmp_path / "run"
    child = subprocess.run([sys.executable, "-c", RUN_LINKS_IN_A_CHILD, "links", str(run), "--reddit-dumps", str(bomb),
                            "--max-line-bytes", str(1 << 20), "--max-bad-fraction", "0.5", *beam_args],
                           capture_output=True, text=True, cwd=REPO_ROOT)
    result = json.loads(child.stdout.splitlines()[-1])
    assert result["code"] == 0, child.stderr[-2000:]
    assert result["peak_rss"] < line_bytes // 2
    assert [(r["reason"], r["item_id"]) for r in rejects_of(run)] == [("bad-json", f"{bomb}:2")]
    assert counters_of(run)["submissions.read"] == 3


@pytest.mark.realdata
def test_real_pushshift_dumps_zst_and_xz_agree(shared_data, tmp_path, webtext_cli, beam_args):
    dumps = shared_data / "reddit-dumps"
    results = {}
    for suffix in ("zst", "xz"):
        run = tmp_path / suffix
        pattern = str(dumps / ("RS_2005-0*.zst" if suffix == "zst" else "RS_v2_2005-0*.xz"))
        assert webtext_cli("links", run, "--reddit-dumps", pattern, *beam_args) == 0
        results[suffix] = (links_of(run), rejects_of(run), counters_of(run))
    zst_links, zst_rejects, counters = results["zst"]
    assert [r["url_key"] for r in zst_links] == [r["url_key"] for r in results["xz"][0]]
    # independent count: lines in the files, every one either merged or rejected
    lines = sum(1 for name in ("RS_v2_2005-06.xz", "RS_v2_2005-07.xz")
                for line in lzma.open(dumps / name, "rt") if line.strip())
    assert counters["submissions.read"] == lines == 103 + 1079
    assert sum(r["num_submissions"] for r in zst_links) + len(zst_rejects) == lines
    assert all("wikipedia.org" not in r["url_key"] for r in zst_links)
    assert all(r["score"] >= 3 for r in zst_links)


@pytest.mark.realdata
def test_mixed_era_submissions(shared_data, tmp_path, webtext_cli, beam_args):
    source = shared_data / "reddit-dumps" / "mixed-eras_submissions.ndjson"
    dump = tmp_path / "mixed.ndjson"
    shutil.copy(source, dump)
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), "--max-bad-fraction", "0.5", *beam_args) == 0
    records = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    assert counters_of(run)["submissions.read"] == len(records)
    links = links_of(run)
    assert sum(r["num_submissions"] for r in links) + len(rejects_of(run)) == len(records)
    assert all(isinstance(r["created_utc"], int) and r["created_utc"] > 1_100_000_000 for r in links)

