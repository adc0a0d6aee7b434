"""The crawl's journal: a finished link's row comes after its WARC records; WARC and journal files close together."""
from __future__ import annotations

import io

from webtext.crawl.fetch.journal import CrawlArchive, read_journal
from webtext.crawl.fetch.warc import HttpExchange, iter_responses


class Store:
    """Files that appear only once closed, as on gs://; `events` is what happened, in order."""

    def __init__(self):
        self.closed: dict[str, bytes] = {}
        self.events: list[str] = []

    def open(self, path: str):
        store = self

        class File(io.BytesIO):
            def close(self):
                if not self.closed:
                    store.closed[path] = self.getvalue()
                    store.events.append(f"close {path}")
                super().close()

        self.events.append(f"open {path}")
        return File()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def exchange(n: int) -> HttpExchange:
    return HttpExchange(url=f"http://a.test/{n}.html", status=200, body=b"<html>%d</html>" % n, started_at=1.7e9)


def test_journal_lines_follow_their_records_and_files_close_warc_first_every_segment():
    store, clock = Store(), Clock()
    archive = CrawlArchive("w", "j", "p", max_file_bytes=10_000_000, max_file_seconds=5, open_file=store.open,
                           clock=clock)
    for n in range(3):
        path, offset = archive.archive(exchange(n))
        archive.record({"url": f"http://a.test/{n}.html", "warc_file": path, "warc_offset": offset})
        clock.now += 2
    assert store.closed == {}  # nothing is out yet: a kill now loses this segment, on gs://
    archive.record({"url": "http://a.test/robots-refused.html", "warc_file": None, "warc_offset": None})  # at 6 s
    assert set(store.closed) == {"w/p-00000.warc.gz", "j/p-00000.jsonl"}
    archive.close()

    assert store.events == ["open w/p-00000.warc.gz", "open j/p-00000.jsonl", "close w/p-00000.warc.gz",
                            "close j/p-00000.jsonl", "open j/p-00001.jsonl", "close j/p-00001.jsonl"]
    rows = [row for path in ("j/p-00000.jsonl", "j/p-00001.jsonl")
            for row in read_journal(iter(store.closed[path].splitlines()), path)]
    assert [row["url"] for row in rows] == [f"http://a.test/{n}.html" for n in range(3)] + [
        "http://a.test/robots-refused.html"]
    for row in rows[:3]:  # every row names a whole record of a WARC file closed no later than its journal
        records = list(iter_responses(io.BytesIO(store.closed[row["warc_file"]]), row["warc_file"]))
        assert row["warc_offset"] in {record.warc_offset for record in records}


def test_a_journal_line_cut_off_by_a_kill_is_skipped():
    lines = [b'{"url": "http://a.test/1.html", "outcome": "page"}', b'{"url": "http://a.test/2.ht']
    assert [row["url"] for row in read_journal(iter(lines), "j/p-00000.jsonl")] == ["http://a.test/1.html"]
