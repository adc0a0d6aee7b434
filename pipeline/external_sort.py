"""Sorting more items than should be held at once: sorted runs spilled to the worker's local temporary disk, then
merged (heapq.merge over pickled frames). None of our dependencies offers an external sort of Python objects."""
from __future__ import annotations

import heapq
import os
import pickle
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import zstandard

FRAME = struct.Struct("<Q")


class ExternalSort:
    """Collects items, keeps at most `limit` of them in memory, and yields them all sorted by `key`.

    Items with equal keys come out in no particular order, so the caller's result must not depend on it."""

    FRAME_ITEMS = 1024  # items per compressed frame of a run: what a run's reader holds while merging
    LIMIT = 200_000  # items held before a run is spilled, unless the caller says otherwise

    def __init__(self, key: Callable[[Any], Any], limit: int = LIMIT):
        self.key, self.limit = key, limit
        self.buffer: list = []
        self.runs: list[str] = []
        self.spilled = 0
        self.folder: tempfile.TemporaryDirectory | None = None

    def add(self, item) -> None:
        self.buffer.append(item)
        if len(self.buffer) >= self.limit:
            self._spill()

    def extend(self, items: Iterable) -> None:
        for item in items:
            self.add(item)

    def __len__(self) -> int:
        return len(self.buffer) + self.spilled

    def sorted(self) -> Iterator:
        """Every item added, in key order; the runs on disk are removed once read (or at close)."""
        if not self.runs:
            items, self.buffer = sorted(self.buffer, key=self.key), []
            yield from items
            return
        self._spill()
        yield from heapq.merge(*[self._read(path) for path in self.runs], key=self.key)
        self.close()

    def close(self) -> None:
        self.buffer, self.runs = [], []
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None

    def _spill(self) -> None:
        if not self.buffer:
            return
        if self.folder is None:
            self.folder = tempfile.TemporaryDirectory(prefix="webtext-sort-")
        self.buffer.sort(key=self.key)
        path = os.path.join(self.folder.name, f"run-{len(self.runs):05d}")
        compressor = zstandard.ZstdCompressor(level=1)
        with open(path, "wb") as handle:
            for start in range(0, len(self.buffer), self.FRAME_ITEMS):
                frame = compressor.compress(pickle.dumps(self.buffer[start:start + self.FRAME_ITEMS],
                                                         protocol=pickle.HIGHEST_PROTOCOL))
                handle.write(FRAME.pack(len(frame)) + frame)
        self.spilled += len(self.buffer)
        self.runs.append(path)
        self.buffer = []

    @staticmethod
    def _read(path: str) -> Iterator:
        decompressor = zstandard.ZstdDecompressor()
        with open(path, "rb") as handle:
            while header := handle.read(FRAME.size):
                yield from pickle.loads(decompressor.decompress(handle.read(FRAME.unpack(header)[0])))
