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
OUTPUT_SIZE = 1 << 20  # decompressed bytes handed on at a time, whatever the compression ratio
ZSTD_SLICE = 1 << 8  # zstd input fed at a time: 256 bytes decode to 8 MiB at most (one 128 KiB RLE block per 4 bytes)
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


def _raw_chunks(fileobj: BinaryIO, position: list[int]) -> Iterator[bytes]:
    """The file's bytes, READ_SIZE at a time; `position[0]` counts those read so far."""
    while True:
        try:
            chunk = fileobj.read(READ_SIZE)
        except OSError as exc:
            raise _Truncated(f"read error: {exc}") from None
        if not chunk:
            return
        position[0] += len(chunk)
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
    """Decompressed bytes of a stream of one or more concatenated frames/members: what each input chunk gives,
    in blocks of about `OUTPUT_SIZE` at most however far the input expands, so a small bomb never sits in memory.

    Raises `_Truncated` when the input ends inside a frame or does not decode."""
    if codec == "plain":
        yield from chunks
        return
    decode = _zstd_pieces if codec == "zst" else _bounded_pieces
    make = _decompressor_factory(codec)
    state = {"decoder": make(), "in_frame": False}
    pending: list[bytes] = []
    pending_size = 0
    for chunk in chunks:
        try:
            for piece in decode(state, make, chunk):
                pending.append(piece)
                pending_size += len(piece)
                if pending_size >= OUTPUT_SIZE:
                    yield b"".join(pending)
                    pending, pending_size = [], 0
        except (zstandard.ZstdError, lzma.LZMAError, OSError, EOFError, zlib.error) as exc:
            if pending:
                yield b"".join(pending)
            raise _Truncated(f"corrupt {codec} stream: {exc}") from None
        if pending:  # what one input chunk gave goes on at once: lines are not held back behind the next read
            yield b"".join(pending)
            pending, pending_size = [], 0
    if state["in_frame"]:
        raise _Truncated(f"{codec} stream ends inside a frame")


def _zstd_pieces(state: dict, make: Callable[[], Any], chunk: bytes) -> Iterator[bytes]:
    """zstd's decompressobj returns all a call's output at once, so its input goes in `ZSTD_SLICE` pieces."""
    view = memoryview(chunk)
    for start in range(0, len(view), ZSTD_SLICE):
        data = view[start:start + ZSTD_SLICE]
        while data:
            decoder = state["decoder"]
            state["in_frame"] = True
            out = decoder.decompress(data)
            if out:
                yield out
            data = b""
            if decoder.eof:
                data = decoder.unused_data
                state["decoder"], state["in_frame"] = make(), False


def _bounded_pieces(state: dict, make: Callable[[], Any], chunk: bytes) -> Iterator[bytes]:
    """xz, bz2 and gz output at most `OUTPUT_SIZE` bytes a call (their decompressors take `max_length`)."""
    data = chunk
    while True:
        decoder = state["decoder"]
        state["in_frame"] = state["in_frame"] or bool(data)
        out = decoder.decompress(data, OUTPUT_SIZE)
        if out:
            yield out
        if decoder.eof:
            data = decoder.unused_data
            state["decoder"], state["in_frame"] = make(), False
            if not data:
                return
        elif hasattr(decoder, "unconsumed_tail"):  # zlib keeps input it had no room to decode
            data = decoder.unconsumed_tail
            if not data and len(out) < OUTPUT_SIZE:
                return
        elif decoder.needs_input:  # lzma and bz2 keep input themselves
            return
        else:
            data = b""


def iter_dump_blocks(fileobj: BinaryIO, name: str, max_line_bytes: int | None = None
                     ) -> Iterator[tuple[int, list[bytes | DumpLine]]]:
    """Stream one dump file opened in binary mode as blocks of consecutive raw lines: (first line number, lines).

    Blank lines stay in (as empty or white-space bytes) so numbering is positional; a line over
    `max_line_bytes` (default `MAX_LINE_BYTES`) is a `bad-json` DumpLine, never held whole; a truncated or corrupt
    compressed stream ends with a block holding one `truncated-file` DumpLine that says how far the file was read.
    Nothing is raised for bad content; parsing is left to the caller."""
    limit = MAX_LINE_BYTES if max_line_bytes is None else max_line_bytes
    position = [0]
    chunks = _raw_chunks(fileobj, position)
    codec = dump_codec(name)
    if codec is None:
        codec, chunks = _sniff(chunks)
    line_no = 0
    try:
        for batch in _line_batches(_decompressed_chunks(chunks, codec), limit):
            if None in batch:
                batch = [DumpLine(name, line_no + i + 1, None, "bad-json",
                                  f"{name}:{line_no + i + 1}: line longer than {limit} bytes")
                         if line is None else line for i, line in enumerate(batch)]
            yield line_no + 1, batch
            line_no += len(batch)
    except _Truncated as exc:
        yield line_no + 1, [DumpLine(name, line_no + 1, None, "truncated-file",
                                     f"{name}: readable up to line {line_no} ({position[0]:,} bytes of the file "
                                     f"read); {exc}")]


def iter_dump_lines(fileobj: BinaryIO, name: str, max_line_bytes: int | None = None
                    ) -> Iterator[tuple[int, bytes | DumpLine]]:
    """The raw, non-blank lines of one dump file with their line numbers (see `iter_dump_blocks`)."""
    for first, block in iter_dump_blocks(fileobj, name, max_line_bytes):
        for offset, line in enumerate(block):
            if isinstance(line, DumpLine) or (line and not line.isspace()):
                yield first + offset, line


def parse_dump_line(name: str, line_no: int, line: bytes) -> DumpLine:
    """One raw dump line as a record, or a `bad-json` DumpLine saying why not."""
    try:
        record = json.loads(line)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return _bad_json(name, line_no, exc)
    except RecursionError:
        return DumpLine(name, line_no, None, "bad-json", f"{name}:{line_no}: nested too deep to parse")
    if type(record) is dict:
        return DumpLine(name, line_no, record)
    return DumpLine(name, line_no, None, "bad-json", f"{name}:{line_no}: a JSON {type(record).__name__}, not an object")


def iter_dump_records(fileobj: BinaryIO, name: str, max_line_bytes: int | None = None) -> Iterator[DumpLine]:
    """Stream the records of one dump file opened in binary mode; `name` picks the decompression.

    Never raises for bad content: a line that is not a JSON object gives a `bad-json` DumpLine, and
    a truncated or corrupt compressed stream ends with one `truncated-file` DumpLine. Blank lines
    are skipped (they still count for line numbers)."""
    for line_no, line in iter_dump_lines(fileobj, name, max_line_bytes):
        yield line if isinstance(line, DumpLine) else parse_dump_line(name, line_no, line)


def _line_batches(blocks: Iterable[bytes], limit: int) -> Iterator[list[bytes | None]]:
    """Complete lines of a byte stream, a list per block; None stands for a line over `limit` bytes, which is
    dropped as it streams by (at most `limit` of it is held).

    A last line without a newline is kept when the stream ends cleanly and dropped when the
    stream raises (it is cut off)."""
    pending: list[bytes] = []  # the start of a line that goes on in the next block
    pending_size = 0
    skipping = False  # inside a line already over the limit
    for block in blocks:
        lines: list[bytes | None] = block.split(b"\n")  # type: ignore[assignment]
        tail = lines.pop()
        if lines:
            if skipping:
                lines[0] = None
            elif pending:
                lines[0] = b"".join(pending) + lines[0] if pending_size + len(lines[0]) <= limit else None
            if len(block) > limit:
                lines = [None if line is not None and len(line) > limit else line for line in lines]
            pending, pending_size, skipping = [], 0, False
            yield lines
        if not skipping:
            pending.append(tail)
            pending_size += len(tail)
            if pending_size > limit:
                pending, pending_size, skipping = [], 0, True
    if skipping:
        yield [None]
    elif pending_size:
        yield [b"".join(pending)]


def _bad_json(name: str, line_no: int, exc: ValueError) -> DumpLine:
    if isinstance(exc, json.JSONDecodeError):
        why = f"{exc.msg} at column {exc.colno}"
    elif isinstance(exc, UnicodeDecodeError):
        why = f"not UTF-8 ({exc})"
    else:  # e.g. an integer of more digits than Python converts
        why = str(exc)
    return DumpLine(name, line_no, None, "bad-json", f"{name}:{line_no}: {why}")
