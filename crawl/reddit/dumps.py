"""Pushshift / Arctic Shift dump files: streamed decompression (zst, xz, bz2, gz or plain), lines and records."""
from __future__ import annotations

import bz2
import json
import lzma
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, NamedTuple

import zstandard

__all__ = ["DUMP_EXTENSIONS", "DumpLine", "dump_codec", "iter_dump_blocks", "iter_dump_lines", "iter_dump_records",
           "parse_dump_line"]


class DumpLine(NamedTuple):
    """One line of a dump: its number (1-based) and either the parsed record or an error.

    `error` is None, `bad-json` (the line is not a JSON object) or `truncated-file` (the compressed
    stream ended early or is corrupt; always the last item of a file)."""

    source: str
    line_no: int
    record: dict | None
    error: str | None = None
    detail: str = ""


READ_SIZE = 1 << 17  # small enough that a corrupt spot loses little of what precedes it
MAX_LINE_BYTES = 64 << 20  # a longer "line" is garbage, not a submission; it is skipped, not buffered
ZSTD_MAX_WINDOW = 2**31

DUMP_EXTENSIONS: dict[str, str] = {
    ".zst": "zst", ".zstd": "zst", ".xz": "xz", ".lzma": "xz", ".bz2": "bz2", ".gz": "gz",
    ".ndjson": "plain", ".jsonl": "plain", ".json": "plain", ".txt": "plain",
}
_MAGIC = (
    (b"\x28\xb5\x2f\xfd", "zst"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bz2"),
    (b"\x1f\x8b", "gz"),
)


def dump_codec(name: str) -> str | None:
    """The compression of a dump file judged by its name: zst, xz, bz2, gz, plain, or None if unknown."""
    lowered = name.lower()
    for extension, codec in DUMP_EXTENSIONS.items():
        if lowered.endswith(extension):
            return codec
    return None


def _decompressor_factory(codec: str) -> Callable[[], Any]:
    if codec == "zst":
        return zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).decompressobj
    if codec == "xz":
        return lzma.LZMADecompressor
    if codec == "bz2":
        return bz2.BZ2Decompressor
    if codec == "gz":
        return lambda: zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    raise ValueError(f"unknown codec {codec!r}")


class _Truncated(Exception):
    """The compressed stream ended inside a frame or could not be decoded."""


def _raw_chunks(fileobj: BinaryIO) -> Iterator[bytes]:
    while True:
        try:
            chunk = fileobj.read(READ_SIZE)
        except OSError as exc:
            raise _Truncated(f"read error: {exc}") from None
        if not chunk:
            return
        yield chunk


def _sniff(chunks: Iterator[bytes]) -> tuple[str, Iterator[bytes]]:
    """Guess the codec of a file with an unknown extension from its first bytes."""
    first = next(chunks, b"")
    codec = next((name for magic, name in _MAGIC if first.startswith(magic)), "plain")

    def replay() -> Iterator[bytes]:
        if first:
            yield first
        yield from chunks

    return codec, replay()


def _decompressed_chunks(chunks: Iterable[bytes], codec: str) -> Iterator[bytes]:
    """Decompressed bytes of a stream of one or more concatenated frames/members.

    Raises `_Truncated` when the input ends inside a frame or does not decode."""
    if codec == "plain":
        yield from chunks
        return
    make = _decompressor_factory(codec)
    decoder = make()
    in_frame = False
    for chunk in chunks:
        while chunk:
            in_frame = True
            try:
                out = decoder.decompress(chunk)
            except (zstandard.ZstdError, lzma.LZMAError, OSError, EOFError, zlib.error) as exc:
                raise _Truncated(f"corrupt {codec} stream: {exc}") from None
            if out:
                yield out
            if decoder.eof:
                chunk = decoder.unused_data
                decoder = make()
                in_frame = False
            else:
                chunk = b""
    if in_frame:
        raise _Truncated(f"{codec} stream ends inside a frame")


def iter_dump_blocks(fileobj: BinaryIO, name: str) -> Iterator[tuple[int, list[bytes | DumpLine]]]:
    """Stream one dump file opened in binary mode as blocks of consecutive raw lines: (first line number, lines).

    Blank lines stay in (as empty or white-space bytes) so numbering is positional; an overlong line is a
    `bad-json` DumpLine, and a truncated or corrupt compressed stream ends with a block holding one
    `truncated-file` DumpLine. Nothing is raised for bad content; parsing is left to the caller."""
    chunks = _raw_chunks(fileobj)
    codec = dump_codec(name)
    if codec is None:
        codec, chunks = _sniff(chunks)
    line_no = 0
    try:
        for batch in _line_batches(_decompressed_chunks(chunks, codec)):
            if None in batch:
                batch = [DumpLine(name, line_no + i + 1, None, "bad-json",
                                  f"{name}:{line_no + i + 1}: line longer than {MAX_LINE_BYTES} bytes")
                         if line is None else line for i, line in enumerate(batch)]
            yield line_no + 1, batch
            line_no += len(batch)
    except _Truncated as exc:
        yield line_no + 1, [DumpLine(name, line_no + 1, None, "truncated-file",
                                     f"{name}: readable up to line {line_no}; {exc}")]


def iter_dump_lines(fileobj: BinaryIO, name: str) -> Iterator[tuple[int, bytes | DumpLine]]:
    """The raw, non-blank lines of one dump file with their line numbers (see `iter_dump_blocks`)."""
    for first, block in iter_dump_blocks(fileobj, name):
        for offset, line in enumerate(block):
            if isinstance(line, DumpLine) or (line and not line.isspace()):
                yield first + offset, line


def parse_dump_line(name: str, line_no: int, line: bytes) -> DumpLine:
    """One raw dump line as a record, or a `bad-json` DumpLine saying why not."""
    try:
        record = json.loads(line)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return _bad_json(name, line_no, exc)
    if type(record) is dict:
        return DumpLine(name, line_no, record)
    return DumpLine(name, line_no, None, "bad-json", f"{name}:{line_no}: a JSON {type(record).__name__}, not an object")


def iter_dump_records(fileobj: BinaryIO, name: str) -> Iterator[DumpLine]:
    """Stream the records of one dump file opened in binary mode; `name` picks the decompression.

    Never raises for bad content: a line that is not a JSON object gives a `bad-json` DumpLine, and
    a truncated or corrupt compressed stream ends with one `truncated-file` DumpLine. Blank lines
    are skipped (they still count for line numbers)."""
    for line_no, line in iter_dump_lines(fileobj, name):
        yield line if isinstance(line, DumpLine) else parse_dump_line(name, line_no, line)


def _line_batches(blocks: Iterable[bytes]) -> Iterator[list[bytes | None]]:
    """Complete lines of a byte stream, a list per block; None stands for a skipped overlong line.

    A last line without a newline is kept when the stream ends cleanly and dropped when the
    stream raises (it is cut off)."""
    pending: list[bytes] = []
    pending_size = 0
    skipping = False
    for block in blocks:
        if skipping:
            newline = block.find(b"\n")
            if newline == -1:
                continue
            block = block[newline + 1:]
            skipping = False
        lines: list[bytes | None] = block.split(b"\n")  # type: ignore[assignment]
        if len(lines) == 1:
            pending.append(block)
            pending_size += len(block)
            if pending_size > MAX_LINE_BYTES:
                yield [None]
                pending, pending_size, skipping = [], 0, True
            continue
        if pending:
            pending.append(block[: block.find(b"\n")])
            lines[0] = b"".join(pending)
        tail = block[block.rfind(b"\n") + 1:]
        lines.pop()
        pending, pending_size = ([tail], len(tail)) if tail else ([], 0)
        if pending_size > MAX_LINE_BYTES:
            lines.append(None)
            pending, pending_size, skipping = [], 0, True
        yield lines
    if pending and not skipping:
        yield [b"".join(pending)]


def _bad_json(name: str, line_no: int, exc: ValueError) -> DumpLine:
    if isinstance(exc, json.JSONDecodeError):
        why = f"{exc.msg} at column {exc.colno}"
    else:
        why = f"not UTF-8 ({exc})"
    return DumpLine(name, line_no, None, "bad-json", f"{name}:{line_no}: {why}")
