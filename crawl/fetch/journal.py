"""A worker's WARC files and its journal (a JSON line per finished link), written so that a killed crawl can resume."""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import BinaryIO, Callable, Iterator

from .warc import HttpExchange, WarcWriter, _open_local

log = logging.getLogger(__name__)


class CrawlArchive:
    """Archives a worker's exchanges (`archive`) and counts its finished links (`record`, a fetch-log row each).

    A link's row is written only after every record it names is flushed, and the files go in segments: after
    `max_file_seconds` the WARC file is closed first, then the journal file, so on a store whose files appear only once
    closed (gs://) a journal line never names a record that is not there. A kill loses at most the open segment there;
    on a local disk, where writes are flushed as they come, it loses only the links in flight. Thread-safe."""

    def __init__(self, warc_dir: str, journal_dir: str, prefix: str, max_file_bytes: int, max_file_seconds: float,
                 open_file: Callable[[str], BinaryIO] = _open_local, clock: Callable[[], float] = time.monotonic):
        self.warc = WarcWriter(warc_dir, prefix, max_file_bytes, open_file=open_file)
        self.journal_dir, self.prefix = journal_dir.rstrip("/"), prefix
        self.max_file_seconds, self.open_file, self.clock = max_file_seconds, open_file, clock
        self.journals: list[str] = []
        self._lock = threading.Lock()  # guards the segment: _journal, _opened_at (the WarcWriter locks itself too)
        self._journal: BinaryIO | None = None
        self._opened_at: float | None = None

    def archive(self, exchange: HttpExchange) -> tuple[str, int]:
        """Writes one exchange to the WARC file; returns the file and the offset of its response record."""
        with self._lock:
            self._start_segment()
            return self.warc.write(exchange)

    def record(self, row: dict) -> None:
        """Counts a link as finished: its fetch-log row, after the records it names."""
        line = json.dumps(row, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            self._start_segment()
            if self._journal is None:
                path = f"{self.journal_dir}/{self.prefix}-{len(self.journals):05d}.jsonl"
                self._journal = self.open_file(path)
                self.journals.append(path)
            self._journal.write(line)
            self._journal.flush()

    def close(self) -> None:
        with self._lock:
            self._end_segment()

    def _start_segment(self) -> None:
        if self._opened_at is not None and self.clock() - self._opened_at >= self.max_file_seconds > 0:
            self._end_segment()
        if self._opened_at is None:
            self._opened_at = self.clock()

    def _end_segment(self) -> None:
        self.warc.close()  # before the journal lines that count its records
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self._opened_at = None


def read_journal(lines: Iterator[bytes], path: str) -> Iterator[dict]:
    """The rows of a journal file; a line cut off by a kill (the last one) is skipped with a warning."""
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            log.warning("%s:%d: not a whole journal line (a crawl killed while writing it?); skipped", path, number)
            continue
        if isinstance(row, dict) and row.get("url"):
            yield row
