"""Reading submission dumps (all codecs, truncation, bad lines), parsing records of every era, and
the synthetic dump writer; on the real Pushshift dumps and API listings in ../shared/data."""
from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import zstandard

from tests.conftest import REPO_ROOT
from tests.dump_files import line_bomb, raw_records
from webtext.crawl.reddit import dumps
from webtext.crawl.reddit.dumps import DumpLine, dump_codec, iter_dump_records
from webtext.crawl.reddit.submissions import BadSubmission, Submission, parse_submission
from webtext.pipeline.demo_dump import make_sample_dump

DUMP_LINES = {"RS_v2_2005-06.xz": 103, "RS_2005-06.zst": 103, "RS_v2_2005-07.xz": 1079, "RS_2005-07.zst": 1079,
              "mixed-eras_submissions.ndjson": 31}  # from reddit-dumps/MANIFEST.md


def read_all(path: Path, name: str | None = None) -> list[DumpLine]:
    with open(path, "rb") as handle:
        return list(iter_dump_records(handle, name or path.name))


def read_bytes(data: bytes, name: str) -> list[DumpLine]:
    return list(iter_dump_records(io.BytesIO(data), name))


# ---- real dumps ----------------------------------------------------------------------------------

@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(DUMP_LINES))
def test_real_dump_reads_every_line(shared_data: Path, name: str) -> None:
    path = shared_data / "reddit-dumps" / name
    lines = read_all(path)
    assert len(lines) == DUMP_LINES[name]
    assert [line.error for line in lines] == [None] * len(lines)
    assert [line.line_no for line in lines] == list(range(1, len(lines) + 1))
    assert {line.source for line in lines} == {name}
    assert [line.record for line in lines] == raw_records(path)


@pytest.mark.realdata
def test_real_zst_needs_the_2gib_window(shared_data: Path) -> None:
    data = (shared_data / "reddit-dumps" / "RS_2005-06.zst").read_bytes()
    assert zstandard.get_frame_parameters(data).window_size == 2**31
    with pytest.raises(zstandard.ZstdError):
        zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert len(read_bytes(data, "RS_2005-06.zst")) == 103


@pytest.mark.realdata
def test_real_2005_submissions_parse(shared_data: Path) -> None:
    for name, month_karma in (("RS_v2_2005-06.xz", 83), ("RS_v2_2005-07.xz", 757)):
        path = shared_data / "reddit-dumps" / name
        raw = raw_records(path)
        subs = [parse_submission(line.record) for line in read_all(path)]
        assert [s.id for s in subs] == [r["id"] for r in raw]
        assert [s.created_utc for s in subs] == [r["created_utc"] for r in raw]
        assert sum(s.score >= 3 for s in subs) == month_karma  # MANIFEST.md
        assert not any(s.is_self or s.over_18 for s in subs)
        escaped = [r["url"] for r in raw if "&amp;" in r["url"]]
        assert escaped and all("&amp;" not in s.url for s in subs)
        assert sorted(s.url for s in subs if "&" in s.url) == sorted(u.replace("&amp;", "&") for u in escaped)
        assert all(s.subreddit == "reddit.com" and s.permalink.startswith("/r/reddit.com/comments/") for s in subs)


@pytest.mark.realdata
def test_real_mixed_eras_parse(shared_data: Path) -> None:
    path = shared_data / "reddit-dumps" / "mixed-eras_submissions.ndjson"
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = Counter(type(r["created_utc"]).__name__ for r in raw)
    assert kinds == {"int": 16, "str": 5, "float": 10}  # MANIFEST.md: str in 2014, float in 2024
    subs = [parse_submission(line.record) for line in read_all(path)]
    assert [s.created_utc for s in subs] == [int(float(r["created_utc"])) for r in raw]
    assert all(type(s.created_utc) is int for s in subs)
    assert sum(s.over_18 for s in subs) == sum(r["over_18"] for r in raw) == 6
    assert sum(s.is_self for s in subs) == sum(r["is_self"] for r in raw)
    assert sum("_meta" in r for r in raw) == 10
    crosspost = next(s for s, r in zip(subs, raw) if "crosspost_parent_list" in r)
    assert crosspost.url == "https://v.redd.it/74ah6jubbvec1"
    june_ids = {record["id"] for record in raw_records(shared_data / "reddit-dumps" / "RS_v2_2005-06.xz")}
    assert {s.id for s in subs} & june_ids == {"87", "88", "89", "90", "91"}


@pytest.mark.realdata
def test_real_api_listings_parse(shared_data: Path) -> None:
    folder = shared_data / "reddit-api"
    index = json.loads((folder / "index.json").read_text())
    assert len(index) == 19
    for entry in index:
        listing = json.loads((folder / entry["file"]).read_text())
        children = [child["data"] for child in listing["data"]["children"]]
        subs = [parse_submission(child) for child in children]
        # figures recorded by the collector in index.json
        assert len(subs) == entry["children"], entry["file"]
        assert sum(not s.is_self for s in subs) == entry["link_posts"], entry["file"]
        assert sum(s.is_self for s in subs) == entry["self_posts"], entry["file"]
        assert [s.created_utc for s in subs] == [int(c["created_utc"]) for c in children]
        assert [s.url for s in subs] == [c["url"] for c in children]  # raw_json=1: nothing to unescape
        assert [s.subreddit for s in subs] == [c["subreddit"] for c in children]


# ---- truncated and corrupt streams ----------------------------------------------------------------

@pytest.mark.realdata
@pytest.mark.parametrize("name", ["RS_2005-07.zst", "RS_v2_2005-07.xz"])
def test_truncated_stream_yields_what_was_readable_then_one_error(shared_data: Path, name: str) -> None:
    data = (shared_data / "reddit-dumps" / name).read_bytes()
    full = [line.record for line in read_bytes(data, name)]
    for cut in (20, len(data) // 3, len(data) // 2, len(data) - 3):
        lines = read_bytes(data[:cut], name)
        last = lines[-1]
        assert last.error == "truncated-file" and last.record is None
        assert name in last.detail and f"line {last.line_no - 1}" in last.detail
        good = lines[:-1]
        assert all(line.error is None for line in good)
        assert [line.record for line in good] == full[: len(good)]
        assert last.line_no == len(good) + 1


@pytest.mark.realdata
def test_corrupt_stream_ends_with_truncated_file(shared_data: Path) -> None:
    data = bytearray((shared_data / "reddit-dumps" / "RS_2005-07.zst").read_bytes())
    data[len(data) // 2] ^= 0xFF
    lines = read_bytes(bytes(data), "RS_2005-07.zst")
    assert lines[-1].error == "truncated-file"
    assert "corrupt zst stream" in lines[-1].detail
    assert sum(line.error is not None for line in lines) == 1


def test_unreadable_file_object_ends_with_truncated_file() -> None:
    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise OSError("connection reset")
            return b'{"id": "a"}\n{"id": "b"}\n{"id"'

    lines = list(iter_dump_records(Failing(), "remote.ndjson"))
    assert [line.record for line in lines[:2]] == [{"id": "a"}, {"id": "b"}]
    assert lines[2].error == "truncated-file" and "connection reset" in lines[2].detail


# ---- codecs, line handling -----------------------------------------------------------------------

SAMPLE_LINES = [json.dumps({"id": f"x{i}", "url": f"http://example.com/{i}?a=1&amp;b=2", "created_utc": 1119552233 + i}) for i in range(50)]
SAMPLE_BYTES = ("\n".join(SAMPLE_LINES) + "\n").encode()


@pytest.mark.parametrize(("name", "compress"), [
    ("a.ndjson", lambda b: b),
    ("a.jsonl", lambda b: b),
    ("a.json", lambda b: b),
    ("a.gz", gzip.compress),
    ("a.bz2", bz2.compress),
    ("a.xz", lzma.compress),
    ("a.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
    ("RS_2005-06", lzma.compress),  # unknown extension: the content's magic bytes decide
    ("RS_2005-07", lambda b: zstandard.ZstdCompressor().compress(b)),
    ("RS_2005-08", gzip.compress),
    ("RS_2005-09", bz2.compress),
    ("RS_2005-10", lambda b: b),
])
def test_every_codec(name: str, compress) -> None:
    lines = read_bytes(compress(SAMPLE_BYTES), name)
    assert [line.record for line in lines] == [json.loads(s) for s in SAMPLE_LINES]


def test_codec_is_chosen_by_name() -> None:
    assert dump_codec("gs://bucket/RS_2019-01.zst") == "zst"
    assert dump_codec("RS_v2_2005-06.XZ") == "xz"
    assert dump_codec("x.ndjson") == "plain"
    assert dump_codec("RS_2005-06") is None


def test_concatenated_members_and_frames_are_read_whole() -> None:
    half = len(SAMPLE_BYTES) // 2
    cut = SAMPLE_BYTES.rindex(b"\n", 0, half) + 1
    parts = (SAMPLE_BYTES[:cut], SAMPLE_BYTES[cut:])
    cctx = zstandard.ZstdCompressor()
    for name, compress in (("m.gz", gzip.compress), ("m.zst", cctx.compress), ("m.xz", lzma.compress), ("m.bz2", bz2.compress)):
        lines = read_bytes(compress(parts[0]) + compress(parts[1]), name)
        assert len(lines) == 50 and all(line.error is None for line in lines), name


def test_bad_lines_become_rejects_with_their_line_numbers() -> None:
    text = (
        b'{"id": "a"}\r\n'
        b"\n"
        b"   \n"
        b'{"id": "b", "title": "caf\xc3\xa9"}\n'
        b'{"id": "c", "url": "http://x\n'
        b"[1, 2]\n"
        b'"just a string"\n'
        b'{"id": "\xff\xfe"}\n'
        b'{"id": "d"} trailing\n'
        b'{"id": "e"}'  # no final newline
    )
    lines = read_bytes(text, "bad.ndjson")
    summary = [(line.line_no, line.error, line.record and line.record["id"]) for line in lines]
    assert summary == [
        (1, None, "a"), (4, None, "b"), (5, "bad-json", None), (6, "bad-json", None), (7, "bad-json", None),
        (8, "bad-json", None), (9, "bad-json", None), (10, None, "e"),
    ]
    assert lines[1].record["title"] == "café"
    assert lines[2].detail.startswith("bad.ndjson:5: ")
    assert "not an object" in lines[3].detail
    assert "not UTF-8" in lines[5].detail


def test_deep_nesting_and_huge_numbers_are_bad_json_not_a_crash() -> None:
    text = (b'{"id": "a"}\n' + b'{"id": "deep", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}\n"
            + b'{"score": 1' + b"0" * 5000 + b"}\n" + b'{"id": "b"}\n')
    lines = read_bytes(text, "deep.ndjson")
    assert [(line.line_no, line.error) for line in lines] == [(1, None), (2, "bad-json"), (3, "bad-json"), (4, None)]
    assert lines[1].detail == "deep.ndjson:2: nested too deep to parse"
    assert lines[2].detail.startswith("deep.ndjson:3: Exceeds the limit")


def test_overlong_line_is_skipped_not_buffered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dumps, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(dumps, "READ_SIZE", 256)
    text = b'{"id": "a"}\n' + b"x" * 5000 + b'\n{"id": "b"}\n' + b"y" * 3000
    lines = read_bytes(text, "long.ndjson")
    assert [(line.line_no, line.error) for line in lines] == [(1, None), (2, "bad-json"), (3, None), (4, "bad-json")]
    assert "longer than 1000 bytes" in lines[1].detail


READ_IN_A_CHILD = """
import json, sys
from tests.dump_files import peak_rss
from webtext.crawl.reddit import dumps
dumps.MAX_LINE_BYTES = int(sys.argv[2])
with open(sys.argv[1], "rb") as handle:
    lines = [(line.line_no, line.error, line.detail) for line in dumps.iter_dump_records(handle, sys.argv[1])]
print(json.dumps({"lines": lines, "peak_rss": peak_rss()}))
"""


@pytest.mark.parametrize("codec", ["zst", "gz"])
def test_a_huge_line_is_cut_at_the_limit_in_bounded_memory(tmp_path: Path, codec: str) -> None:
    line_bytes, limit = 512 << 20, 1 << 20
    path = tmp_path / f"bomb.{codec}"
    line_bomb(path, line_bytes)
    assert path.stat().st_size < line_bytes // 200
    child = subprocess.run([sys.executable, "-c", READ_IN_A_CHILD, str(path), str(limit)],
                           capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    result = json.loads(child.stdout)
    assert [line[:2] for line in result["lines"]] == [[1, None], [2, "bad-json"], [3, None]]
    assert result["lines"][1][2] == f"{path}:2: line longer than {limit} bytes"
    assert result["peak_rss"] < line_bytes // 4


def json_line(size: int) -> bytes:
    return b'{"id": "' + b"x" * (size - 10) + b'"}'


@pytest.mark.parametrize("read_size", [7, 64, 100, 101, 4096])
@pytest.mark.parametrize("name", ["limit.ndjson", "limit.gz", "limit.zst"])
def test_the_line_limit_is_exact_and_numbers_stay_right_across_block_edges(monkeypatch: pytest.MonkeyPatch,
                                                                           read_size: int, name: str) -> None:
    monkeypatch.setattr(dumps, "READ_SIZE", read_size)
    monkeypatch.setattr(dumps, "ZSTD_SLICE", min(read_size, 16))
    text = b"\n".join(json_line(size) for size in (100, 101, 50, 250, 30, 101))  # the last has no newline
    data = {"limit.ndjson": text, "limit.gz": gzip.compress(text), "limit.zst": zstandard.ZstdCompressor().compress(text)}
    lines = list(iter_dump_records(io.BytesIO(data[name]), name, max_line_bytes=100))
    assert [(line.line_no, line.error) for line in lines] == [
        (1, None), (2, "bad-json"), (3, None), (4, "bad-json"), (5, None), (6, "bad-json")]
    assert [line.detail for line in lines if line.error] == [f"{name}:{n}: line longer than 100 bytes" for n in (2, 4, 6)]


def test_reading_is_streamed(tmp_path: Path) -> None:
    path = tmp_path / "big.zst"
    make_sample_dump(path, 20_000, seed=3)

    class CountingReader(io.FileIO):
        bytes_read = 0

        def read(self, size: int = -1) -> bytes:
            data = super().read(size)
            CountingReader.bytes_read += len(data)
            return data

    with CountingReader(path, "rb") as handle:
        lines = iter_dump_records(handle, path.name)
        next(lines)
        assert CountingReader.bytes_read <= dumps.READ_SIZE < path.stat().st_size
        assert sum(1 for _ in lines) == 20_000 - 1
    assert CountingReader.bytes_read == path.stat().st_size


# ---- parse_submission edge cases ------------------------------------------------------------------

BASE = {"id": "abc", "url": "http://example.com/?a=1&amp;b=2", "score": 5, "created_utc": 1500000000,
        "is_self": False, "over_18": False, "subreddit": "news", "title": "A &amp; B", "permalink": "/r/news/comments/abc/x/",
        "domain": "example.com"}


def with_fields(**changes) -> dict:
    record = dict(BASE)
    for key, value in changes.items():
        if value is ...:
            record.pop(key, None)
        else:
            record[key] = value
    return record


def test_parse_complete_record() -> None:
    assert parse_submission(BASE) == Submission(
        id="abc", url="http://example.com/?a=1&b=2", score=5, created_utc=1500000000, is_self=False, over_18=False,
        subreddit="news", title="A & B", permalink="/r/news/comments/abc/x/", domain="example.com")


@pytest.mark.parametrize(("changes", "field", "value"), [
    ({"created_utc": "1409529600"}, "created_utc", 1409529600),
    ({"created_utc": " 1409529600.0 "}, "created_utc", 1409529600),
    ({"created_utc": 1706745600.7}, "created_utc", 1706745600),
    ({"score": ...}, "score", 0),
    ({"score": None, "ups": 7}, "score", 7),
    ({"score": "12"}, "score", 12),
    ({"score": -4}, "score", -4),
    ({"id": 87}, "id", "87"),
    ({"id": ..., "name": "t3_zz9"}, "id", "zz9"),
    ({"is_self": "true"}, "is_self", True),
    ({"is_self": ...}, "is_self", False),
    ({"over_18": 1}, "over_18", True),
    ({"over_18": None}, "over_18", False),
    ({"subreddit": None}, "subreddit", ""),
    ({"title": 1984}, "title", "1984"),
    ({"url": None}, "url", ""),
    ({"url": ...}, "url", ""),
    ({"permalink": ..., "domain": ...}, "domain", ""),
])
def test_parse_tolerates_dump_quirks(changes: dict, field: str, value) -> None:
    assert getattr(parse_submission(with_fields(**changes)), field) == value


@pytest.mark.parametrize(("record", "reason"), [
    ([1, 2], "not-object"),
    ("text", "not-object"),
    (with_fields(id=...), "missing-id"),
    (with_fields(id=""), "missing-id"),
    (with_fields(id=None, name="t1_comment"), "missing-id"),
    (with_fields(id=[1]), "bad-field"),
    (with_fields(created_utc=...), "missing-field"),
    (with_fields(created_utc=None), "missing-field"),
    (with_fields(created_utc="yesterday"), "bad-field"),
    (with_fields(created_utc=float("nan")), "bad-field"),
    (with_fields(created_utc=True), "bad-field"),
    (with_fields(score="lots"), "bad-field"),
    (with_fields(title={"text": "x"}), "bad-field"),
    (with_fields(score=10**30), "score-out-of-range"),
    (with_fields(score=-(2**31) - 1), "score-out-of-range"),
    (with_fields(score=1e300), "score-out-of-range"),
    (with_fields(score="1e300"), "score-out-of-range"),
    (with_fields(score=..., ups=2**63), "score-out-of-range"),
    (with_fields(created_utc=10**20), "created-out-of-range"),
    (with_fields(created_utc="1e20"), "created-out-of-range"),
    (with_fields(created_utc=-1), "created-out-of-range"),
    (with_fields(url="https://example.com/\ud800"), "bad-unicode"),
    (with_fields(title="a \udfff title"), "bad-unicode"),
    (with_fields(id="ab\ud800"), "bad-unicode"),
    (with_fields(id=None, name="t3_\ud800"), "bad-unicode"),
    (with_fields(subreddit="news\udc80"), "bad-unicode"),
    (with_fields(permalink="/r/\ud800/"), "bad-unicode"),
])
def test_parse_rejects_with_a_reason(record, reason: str) -> None:
    with pytest.raises(BadSubmission) as caught:
        parse_submission(record)
    assert caught.value.reason == reason
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.reason, copy.detail) == (caught.value.reason, caught.value.detail)


# ---- the synthetic dump writer -------------------------------------------------------------------

def test_sample_zst_has_the_2gib_window(tmp_path: Path) -> None:
    path = tmp_path / "RS_sample.zst"
    counts = make_sample_dump(path, 2_000, seed=1)
    data = path.read_bytes()
    assert zstandard.get_frame_parameters(data).window_size == 2**31
    with pytest.raises(zstandard.ZstdError, match="too much memory"):
        zstandard.ZstdDecompressor().decompressobj().decompress(data)
    text = zstandard.ZstdDecompressor(max_window_size=2**31).decompressobj().decompress(data)
    assert text.count(b"\n") == counts["lines"] == 2_000


@pytest.mark.parametrize("suffix", [".zst", ".xz", ".gz", ".bz2", ".ndjson"])
def test_sample_dump_reads_back(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"RS_sample{suffix}"
    counts = make_sample_dump(path, 3_000, seed=5)
    lines = read_all(path)
    assert len(lines) == counts["lines"] == 3_000
    errors = Counter(line.error for line in lines)
    assert errors["bad-json"] == counts["bad-json"]
    assert errors[None] == counts["submissions"] == 3_000 - counts["bad-json"]


def test_sample_dump_is_messy_like_the_real_ones(tmp_path: Path) -> None:
    path = tmp_path / "RS_sample.ndjson"
    counts = make_sample_dump(path, 20_000, seed=9)
    text = path.read_text(encoding="utf-8")
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    assert len(records) == counts["submissions"]
    kinds = Counter(type(r.get("created_utc")).__name__ for r in records)
    assert kinds["int"] == counts["created_int"] and kinds["str"] == counts["created_str"] and kinds["float"] == counts["created_float"]
    assert min(kinds["int"], kinds["str"], kinds["float"]) > 1_000
    assert sum("&amp;" in r.get("url", "") for r in records) >= counts["amp_urls"] > 1_000
    assert "\\/" in text  # the old eras escape slashes
    assert sum(r.get("is_self") is True for r in records) > 0.15 * len(records)
    assert sum(r.get("over_18") is True for r in records) == counts["nsfw"]
    assert sum("id" not in r for r in records) == counts["missing-id"] > 0
    assert sum("score" not in r for r in records) == counts["missing_score"] > 0
    ids = Counter(r["id"] for r in records if "id" in r)
    assert sum(n - 1 for n in ids.values()) == counts["duplicate-submission"] > 0
    assert any("wikipedia.org" in r.get("url", "") for r in records)
    assert any("imgur.com" in r.get("url", "") for r in records)
    assert any("youtu" in r.get("url", "") for r in records)


def test_sample_dump_is_deterministic(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a.ndjson", tmp_path / "b.ndjson", tmp_path / "c.ndjson"
    assert make_sample_dump(first, 5_000, seed=2) == {**make_sample_dump(second, 5_000, seed=2), "path": str(first)}
    assert first.read_bytes() == second.read_bytes()
    make_sample_dump(other, 5_000, seed=3)
    assert other.read_bytes() != first.read_bytes()
    zst_a, zst_b = tmp_path / "a.zst", tmp_path / "b.zst"
    make_sample_dump(zst_a, 5_000, seed=2)
    make_sample_dump(zst_b, 5_000, seed=2)
    assert zst_a.read_bytes() == zst_b.read_bytes()


def test_sample_dump_left_as_it_is_when_unchanged(tmp_path: Path) -> None:
    """The links stage fingerprints its dumps by size and mtime: regenerating the same dump must not touch it."""
    dump = tmp_path / "RS_demo.zst"
    assert not make_sample_dump(dump, 2_000, seed=2)["unchanged"]
    os.utime(dump, ns=(1_000_000_000, 1_000_000_000))
    same = make_sample_dump(dump, 2_000, seed=2)
    assert dump.stat().st_mtime_ns == 1_000_000_000 and same["path"] == str(dump) and same["unchanged"]
    assert not make_sample_dump(dump, 2_000, seed=3)["unchanged"]  # other bytes replace the file
    assert dump.stat().st_mtime_ns != 1_000_000_000
    make_sample_dump(tmp_path / "fresh.zst", 2_000, seed=3)
    assert dump.read_bytes() == (tmp_path / "fresh.zst").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RS_demo.zst", "fresh.zst"]  # no temporary file left
