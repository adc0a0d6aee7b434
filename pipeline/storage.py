"""Files of a run on any Beam filesystem (local, gs://…): globbing, atomic writes, and reading/writing Parquet."""
from __future__ import annotations

import contextlib
import io
import uuid
from dataclasses import dataclass
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


class StageError(RuntimeError):
    """A problem the user can fix (bad input, missing file, bad option); printed without a traceback."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    mtime: float = 0.0


def join(base: str, *parts: str) -> str:
    path = base
    for part in parts:
        path = FileSystems.join(path, part)
    return path


def match(pattern: str) -> list[FileEntry]:
    """Files matching a glob, sorted by path; an empty list when nothing matches."""
    results = FileSystems.match([pattern])[0].metadata_list
    entries = (FileEntry(m.path, m.size_in_bytes, m.last_updated_in_seconds or 0.0) for m in results)
    return sorted(entries, key=lambda e: e.path)


def match_each(patterns: Iterable[str], option: str) -> list[FileEntry]:
    """The files of several globs given to `option`, without repeats; a glob that matches nothing is an error."""
    files: dict[str, FileEntry] = {}
    for pattern in patterns:
        matched = match(pattern)
        if not matched:
            raise StageError(f"{option} {pattern}: no file matches")
        files.update((entry.path, entry) for entry in matched)
    return sorted(files.values(), key=lambda e: e.path)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def open_read(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def open_write(path: str, mime_type: str = "application/octet-stream"):
    """A file opened for streaming writes (no temporary name: for files written once, or appended as work goes on)."""
    return FileSystems.create(path, mime_type=mime_type, compression_type=CompressionTypes.UNCOMPRESSED)


def open_warc_write(path: str):
    """A WARC file opened for streaming writes (records are appended as they come)."""
    return open_write(path, mime_type="application/warc")


def read_bytes(path: str) -> bytes:
    with open_read(path) as handle:
        return handle.read()


def write_bytes(path: str, data: bytes) -> None:
    """Writes to a temporary name and renames, so readers never see a half-written file.

    The temporary name is unique, so two attempts at the same file (a retried bundle on Dataflow) cannot collide."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


@contextlib.contextmanager
def open_write_atomic(path: str) -> Iterator:
    """A stream for a file too large to build in memory: written under a unique temporary name, renamed on success."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    handle = FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        yield handle
    except BaseException:
        handle.close()
        FileSystems.delete([tmp])
        raise
    handle.close()
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def delete(paths: Iterable[str]) -> None:
    paths = [p for p in paths if FileSystems.exists(p)]
    if paths:
        FileSystems.delete(paths)


# -- Parquet ---------------------------------------------------------------------------------------------------------

def write_parquet_table(path: str, table: pa.Table) -> None:
    """One Parquet file (zstd) written whole and renamed into place."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", row_group_size=64 * 1024)
    write_bytes(path, buffer.getvalue())


def write_parquet_rows(path: str, rows: list[dict], schema: pa.Schema) -> None:
    write_parquet_table(path, pa.Table.from_pylist(rows, schema=schema))


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """A Parquet file opened for streaming; a file that is not Parquet is a StageError naming it."""
    with open_read(path) as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except (pa.ArrowInvalid, OSError) as error:
            raise StageError(f"{path}: not a readable Parquet file ({error})") from None
        yield parquet


def iter_batches(files: Iterable[FileEntry | str], columns: list[str] | None = None,
                 batch_rows: int = 2048) -> Iterator[pa.RecordBatch]:
    """Record batches of every file in order, streamed (never a whole file in memory)."""
    for entry in files:
        with open_parquet(getattr(entry, "path", entry)) as parquet:
            yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)


def iter_rows(pattern: str, columns: list[str] | None = None) -> Iterator[dict]:
    """Rows of every file matching a glob, a batch at a time."""
    for batch in iter_batches(match(pattern), columns):
        yield from batch.to_pylist()


def read_rows(path: str) -> list[dict]:
    """Every row of one (small) Parquet file; for tests, stats and the driver."""
    return pq.read_table(io.BytesIO(read_bytes(path))).to_pylist()


def count_rows(files: Iterable[FileEntry]) -> int:
    """Rows in all the files, from their footers."""
    total = 0
    for entry in files:
        with open_parquet(entry.path) as parquet:
            total += parquet.metadata.num_rows
    return total
