"""WARC archiving of HTTP exchanges (warcio, .warc.gz rotated by size) and reading them back for offline replay."""
from __future__ import annotations

import datetime as dt
import io
import logging
import threading
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator
from urllib.parse import urlsplit

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

log = logging.getLogger(__name__)

# Headers that describe the transfer, not the stored payload (which is de-chunked); renamed like Common Crawl does.
_TRANSFER_HEADERS = {"transfer-encoding": "X-Crawler-Transfer-Encoding"}


@dataclass
class HttpExchange:
    """One HTTP request and its response as received: the body is de-chunked but still content-encoded."""

    url: str
    status: int
    reason_phrase: str = ""
    http_version: str = "HTTP/1.1"
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    method: str = "GET"
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    ip: str | None = None
    started_at: float = 0.0  # epoch seconds
    truncated: str | None = None  # WARC-Truncated: length, time, disconnect or unspecified
    warc_file: str | None = None
    warc_offset: int | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.response_headers:
            if key.lower() == name:
                return value
        return default


def warc_date(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_warc_date(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _open_local(path: str) -> BinaryIO:
    return open(path, "wb")


class _CountingFile:
    """Counts the bytes written so each record's offset in the (compressed) file is known."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.position = 0

    def write(self, data: bytes) -> int:
        self.handle.write(data)
        self.position += len(data)
        return len(data)

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class WarcWriter:
    """Writes exchanges as request + response records into `directory/prefix-NNNNN.warc.gz`, starting a new file
    once one passes `max_file_bytes`. Thread-safe; `open_file(path)` lets the caller write to any filesystem."""

    def __init__(self, directory: str, prefix: str, max_file_bytes: int = 1_000_000_000,
                 open_file: Callable[[str], BinaryIO] = _open_local, software: str = "webtext"):
        self.directory = directory.rstrip("/")
        self.prefix = prefix
        self.max_file_bytes = max_file_bytes
        self.open_file = open_file
        self.software = software
        # Host threads write concurrently: _lock guards files, _out and _writer (a record is written whole under it).
        self.files: list[str] = []
        self._lock = threading.Lock()
        self._out: _CountingFile | None = None
        self._writer: WARCWriter | None = None

    def write(self, exchange: HttpExchange) -> tuple[str, int]:
        """Archives one exchange; returns the WARC file and the offset of its response record."""
        with self._lock:
            if self._out is None or self._out.position >= self.max_file_bytes:
                self._rotate()
            assert self._out is not None and self._writer is not None
            path = self.files[-1]
            offset = self._out.position
            response = self._response_record(exchange)
            self._writer.write_record(response)
            self._writer.write_record(self._request_record(exchange, response.rec_headers.get_header("WARC-Record-ID")))
            self._out.flush()  # a kill now leaves the record whole (a no-op where files appear only once closed)
            return path, offset

    def close(self) -> None:
        """Closes the current file; a later `write` starts the next one."""
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = self._writer = None

    def _rotate(self) -> None:
        if self._out is not None:
            self._out.close()
        path = f"{self.directory}/{self.prefix}-{len(self.files):05d}.warc.gz"
        self._out = _CountingFile(self.open_file(path))
        self._writer = WARCWriter(self._out, gzip=True)
        self.files.append(path)
        info = {"software": self.software, "format": "WARC File Format 1.0",  # warcio writes WARC/1.0 records
                "conformsTo": "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.0/"}
        self._writer.write_record(self._writer.create_warcinfo_record(path.rsplit("/", 1)[-1], info))

    def _response_record(self, exchange: HttpExchange):
        headers = [(_TRANSFER_HEADERS.get(k.lower(), k), v) for k, v in exchange.response_headers]
        http_headers = StatusAndHeaders(f"{exchange.status} {exchange.reason_phrase}".strip(), headers,
                                        protocol=exchange.http_version)
        warc_headers = {"WARC-Date": warc_date(exchange.started_at)}
        if exchange.ip:
            warc_headers["WARC-IP-Address"] = exchange.ip
        if exchange.truncated:
            warc_headers["WARC-Truncated"] = exchange.truncated
        assert self._writer is not None
        return self._writer.create_warc_record(exchange.url, "response", payload=io.BytesIO(exchange.body),
                                               length=None, http_headers=http_headers, warc_headers_dict=warc_headers)

    def _request_record(self, exchange: HttpExchange, response_id: str):
        parts = urlsplit(exchange.url)
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        http_headers = StatusAndHeaders(f"{exchange.method} {target} {exchange.http_version}",
                                        exchange.request_headers, protocol=exchange.http_version, is_http_request=True)
        warc_headers = {"WARC-Date": warc_date(exchange.started_at), "WARC-Concurrent-To": response_id}
        assert self._writer is not None
        return self._writer.create_warc_record(exchange.url, "request", payload=io.BytesIO(b""), length=None,
                                               http_headers=http_headers, warc_headers_dict=warc_headers)


def _exchange_from_record(record, path: str | None, offset: int | None, with_body: bool = True) -> HttpExchange:
    http = record.http_headers
    headers = list(http.headers) if http else []
    status = int(http.get_statuscode() or 0) if http else 0
    status_line = http.statusline if http else ""
    reason = status_line.split(" ", 1)[1] if " " in status_line else ""
    return HttpExchange(
        url=record.rec_headers.get_header("WARC-Target-URI") or "",
        status=status, reason_phrase=reason, http_version=(http.protocol if http else "") or "HTTP/1.1",
        response_headers=headers, body=record.raw_stream.read() if with_body else b"",
        ip=record.rec_headers.get_header("WARC-IP-Address"),
        started_at=parse_warc_date(record.rec_headers.get_header("WARC-Date")),
        truncated=record.rec_headers.get_header("WARC-Truncated"),
        warc_file=path, warc_offset=offset)


def iter_responses(stream: BinaryIO, path: str | None = None, with_body: bool = True) -> Iterator[HttpExchange]:
    """Every HTTP response record of a WARC stream (ours or Common Crawl's), with its offset; `with_body=False`
    skips the payloads (for building an index)."""
    records = ArchiveIterator(stream, arc2warc=True)
    for record in records:
        if record.rec_type != "response" or not (record.http_headers and record.http_headers.get_statuscode()):
            continue
        exchange = _exchange_from_record(record, path, None, with_body)
        exchange.warc_offset = records.get_record_offset()  # reads to the record's end: after the body
        yield exchange


def read_response_at(stream: BinaryIO, path: str | None, offset: int) -> HttpExchange:
    """The response record at `offset` of a WARC file opened for reading (seekable)."""
    stream.seek(offset)
    for record in ArchiveIterator(stream, arc2warc=True):
        if record.rec_type == "response":
            return _exchange_from_record(record, path, offset)
        break
    raise ValueError(f"no response record at offset {offset} of {path}")
