"""Reddit dump files read with the standard decompressors, independently of webtext's own reader."""
from __future__ import annotations

import json
import lzma
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
