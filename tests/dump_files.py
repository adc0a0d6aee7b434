"""Reddit dump files read with the standard decompressors, independently of webtext's own reader, and a hostile one."""
from __future__ import annotations

import json
import lzma
import zlib
from pathlib import Path

import zstandard


def raw_records(path: Path) -> list[dict]:
    """The file's non-blank lines as JSON, decompressed by lzma or zstandard (2 GiB window) by its suffix."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        data = lzma.decompress(data)
    elif path.suffix == ".zst":
        data = zstandard.ZstdDecompressor(max_window_size=2**31).decompressobj().decompress(data)
    return [json.loads(line) for line in data.split(b"\n") if line.strip()]


def line_bomb(path: Path, line_bytes: int) -> None:
    """A .zst or .gz of three lines, the second `line_bytes` of "x" between two good submissions: a few KB on disk
    (zstd packs repeated bytes ~30,000:1), compressed as it is made so the test never holds it."""
    if path.suffix == ".zst":
        compressor = zstandard.ZstdCompressor(level=1).compressobj()
    else:
        compressor = zlib.compressobj(1, wbits=16 + zlib.MAX_WBITS)
    good = '{"id": "%s", "url": "https://example.com/%s", "score": 5, "created_utc": 1400000000}'
    block = b"x" * (1 << 20)
    with open(path, "wb") as out:
        out.write(compressor.compress((good % ("a", "a") + "\n").encode()))
        for _ in range(line_bytes // len(block)):
            out.write(compressor.compress(block))
        out.write(compressor.compress(("\n" + good % ("b", "b") + "\n").encode()))
        out.write(compressor.flush())


def peak_rss() -> int:
    """This process's peak resident memory in bytes: VmHWM, which (unlike ru_maxrss) a child started by a big
    process does not inherit from it across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
