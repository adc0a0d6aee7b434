"""Files of a run on any Beam filesystem (local, gs://…): globbing, atomic writes, and reading/writing Parquet."""
from __future__ import annotations

import contextlib
import errno
import importlib.util
import io
import os
import re
import uuid
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


class StageError(RuntimeError):
    """A problem the user can fix (bad input, missing file, bad option); printed without a traceback."""


class DiskError(StageError):
    """A write the file system refused (full, read-only, not allowed): `<why> while <doing> <path>`, one line."""


DISK_REFUSALS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                 errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "not permitted"}
# A DiskError's message, found again in the text of an error that a Beam worker sent back.
_DISK_ERROR_LINE = re.compile(rf"((?:{'|'.join(DISK_REFUSALS.values())}) while \w+ .+?)(?: \[while running .*)?$", re.M)
# What the runner left of a plain OSError raised in a worker: "[Errno 28] No space left on device: '/path'".
_OS_ERROR_TEXT = re.compile(r"\[Errno (\d+)\] [^:\n]+: '([^'\n]+)'")


def _refused_os_error(error: BaseException | None) -> OSError | None:
    """The disk-refusal OSError in an error's causes (and in a BeamIOError's per-path exceptions)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_REFUSALS:
            return error
        for inner in (getattr(error, "exception_details", None) or {}).values():
            found = _refused_os_error(inner)
            if found is not None:
                return found
        error = error.__cause__ or error.__context__
    return None


def disk_error(error: BaseException, path: str, doing: str = "writing") -> DiskError | None:
    """A DiskError naming `path` when `error` is the file system refusing a write; None for any other error."""
    found = _refused_os_error(error)
    return DiskError(f"{DISK_REFUSALS[found.errno]} while {doing} {path}") if found is not None else None


def raise_if_refused(error: BaseException, path: str, doing: str = "writing") -> None:
    """Raises the DiskError of `error` (see disk_error), without the original's traceback; returns otherwise."""
    problem = disk_error(error, path, doing)
    if problem is not None:
        raise problem from None


def disk_problem(error: BaseException) -> str | None:
    """The one line to print for a refused write, also for one raised in a Beam worker and sent back as text."""
    line = _DISK_ERROR_LINE.search(str(error))
    if line:
        return line.group(1)
    found = _refused_os_error(error)
    if found is not None:
        return f"{DISK_REFUSALS[found.errno]} while writing {found.filename or 'a file'}"
    for number, path in _OS_ERROR_TEXT.findall(str(error)):
        if int(number) in DISK_REFUSALS:
            return f"{DISK_REFUSALS[int(number)]} while writing {path}"
    return None


_STAGE_ERROR_TEXT = re.compile(r"\bwebtext\.pipeline\.storage\.(?:StageError|DiskError): (.+?)(?: \[while running .*)?$", re.M)


def error_line(error: BaseException) -> str | None:
    """The one line to print for an error the user can act on: a StageError (also one raised in a Beam worker and
    sent back as text, without Beam's note of the step), or a refused write; None for anything else (a bug)."""
    if isinstance(error, StageError):
        return disk_problem(error) or re.sub(r" \[while running '[^']*'\]$", "", str(error))
    found = _STAGE_ERROR_TEXT.search(str(error))
    return found.group(1) if found else disk_problem(error)


# Beam file systems by URL scheme: the module each needs, its package, and how to install it.
FILESYSTEM_PACKAGES = {
    "gs": ("google.cloud.storage", "google-cloud-storage", "pip install 'webtext[gcp]'"),
    "s3": ("boto3", "boto3", "pip install 'apache-beam[aws]'"),
    "hdfs": ("hdfs", "hdfs", "pip install 'apache-beam[hadoop]'"),
}


def check_filesystem(path: str) -> None:
    """Fails at once, saying what to install, when `path` is on a file system whose Beam module is missing."""
    scheme, sep, _ = path.partition("://")
    if not sep:
        return
    if scheme in FILESYSTEM_PACKAGES:
        module, package, install = FILESYSTEM_PACKAGES[scheme]
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            raise StageError(f"{path}: {scheme}:// needs the {package} package: {install}")
        return
    try:
        FileSystems.get_filesystem(path)
    except ValueError:
        raise StageError(f"{path}: Beam has no file system for {scheme}:// "
                         f"(it knows local paths, {', '.join(s + '://' for s in FILESYSTEM_PACKAGES)})") from None


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
    try:
        return FileSystems.create(path, mime_type=mime_type, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as error:
        raise_if_refused(error, path)
        raise


def open_warc_write(path: str):
    """A WARC file opened for streaming writes (records are appended as they come)."""
    return open_write(path, mime_type="application/warc")


def read_bytes(path: str) -> bytes:
    with open_read(path) as handle:
        return handle.read()


TEMP_INFIX = ".tmp-"  # a file being written: `NAME.tmp-RANDOM`, renamed to NAME when whole


def write_bytes(path: str, data: bytes) -> None:
    """Writes to a temporary name and renames, so readers never see a half-written file.

    The temporary name is unique, so two attempts at the same file (a retried bundle on Dataflow) cannot collide.
    A refused write (disk full, read-only) removes the temporary file and raises a DiskError naming `path`."""
    tmp = f"{path}{TEMP_INFIX}{uuid.uuid4().hex[:12]}"
    try:
        with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            handle.write(data)
        if FileSystems.exists(path):
            FileSystems.delete([path])
        FileSystems.rename([tmp], [path])
    except Exception as error:
        discard(tmp)
        raise_if_refused(error, path)
        raise


def discard(path: str) -> None:
    """Deletes a file if it is there, quietly: cleaning up after a failed write must not hide its error."""
    try:
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except Exception:  # noqa: BLE001 — the write's own error is the one to report
        pass


def create_new(path: str, data: bytes) -> None:
    """Writes a small file only if nothing is at `path`, else FileExistsError (for locks).

    On gs:// the create is atomic (if-generation-match=0: of two writers exactly one succeeds); the exists check
    before it is for stores that ignore the precondition. Locally, O_EXCL."""
    if FileSystems.exists(path):
        raise FileExistsError(path)
    if path.startswith("gs://"):
        from apache_beam.io.gcp import gcsio
        from google.api_core.exceptions import PreconditionFailed

        bucket, name = gcsio.parse_gcs_path(path)
        try:
            gcsio.GcsIO().client.bucket(bucket).blob(name).upload_from_string(data, if_generation_match=0)
        except PreconditionFailed:
            raise FileExistsError(path) from None
    elif "://" not in path:
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb") as handle:
            handle.write(data)
    else:  # other Beam filesystems offer no create-if-absent: the check above is all there is
        with open_write(path) as handle:
            handle.write(data)


@contextlib.contextmanager
def open_write_atomic(path: str) -> Iterator:
    """A stream for a file too large to build in memory: written under a unique temporary name, renamed on success."""
    tmp = f"{path}{TEMP_INFIX}{uuid.uuid4().hex[:12]}"
    try:
        handle = FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED)
        try:
            yield handle
        except BaseException:
            with contextlib.suppress(Exception):
                handle.close()
            raise
        handle.close()
        if FileSystems.exists(path):
            FileSystems.delete([path])
        FileSystems.rename([tmp], [path])
    except BaseException as error:
        discard(tmp)
        raise_if_refused(error, path)
        raise


class AppendFile:
    """A file of one worker's bundle that records are appended to (e.g. in a stage's work folder), created on the
    first write under a unique name; `append` returns where each record starts. A refused write is a DiskError."""

    def __init__(self, folder: str, prefix: str):
        self.folder, self.prefix, self.handle = folder, prefix, None
        self.name, self.offset = "", 0

    def append(self, data: bytes) -> int:
        if self.handle is None:
            self.name, self.offset = f"{self.prefix}-{uuid.uuid4().hex[:16]}", 0
        try:
            if self.handle is None:
                self.handle = FileSystems.create(join(self.folder, self.name),
                                                 compression_type=CompressionTypes.UNCOMPRESSED)
            self.handle.write(data)
        except OSError as error:
            raise_if_refused(error, join(self.folder, self.name))
            raise
        start, self.offset = self.offset, self.offset + len(data)
        return start

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError as error:
                raise_if_refused(error, join(self.folder, self.name))
                raise


def delete(paths: Iterable[str]) -> None:
    paths = [p for p in paths if FileSystems.exists(p)]
    if paths:
        try:
            FileSystems.delete(paths)
        except Exception as error:
            raise_if_refused(error, paths[0] if len(paths) == 1 else f"{paths[0]} (and {len(paths) - 1} more)",
                             "deleting")
            raise


# -- Parquet ---------------------------------------------------------------------------------------------------------

def write_parquet_table(path: str, table: pa.Table, row_group_rows: int = 64 * 1024) -> None:
    """One Parquet file (zstd) written whole and renamed into place; a reader decodes a row group at a time."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", row_group_size=row_group_rows)
    write_bytes(path, buffer.getvalue())


def write_parquet_stream(path: str, schema: pa.Schema, tables: Iterable[pa.Table], row_group_rows: int = 64 * 1024) -> int:
    """A Parquet file written from tables as they come, never whole in memory: the same row groups (and bytes) as
    write_parquet_table gives the concatenated tables. Returns its row count."""
    pending: list[pa.Table] = []
    held = written = 0
    with open_write_atomic(path) as handle, pq.ParquetWriter(handle, schema, compression="zstd") as writer:
        for table in tables:
            pending.append(table)
            held += table.num_rows
            while held >= row_group_rows:
                whole = pa.concat_tables(pending)
                writer.write_table(whole.slice(0, row_group_rows), row_group_size=row_group_rows)
                pending, held, written = [whole.slice(row_group_rows)], held - row_group_rows, written + row_group_rows
        if held or not written:
            writer.write_table(pa.concat_tables(pending) if pending else schema.empty_table(),
                               row_group_size=row_group_rows)
    return written + held


def write_parquet_rows(path: str, rows: list[dict], schema: pa.Schema) -> None:
    write_parquet_table(path, pa.Table.from_pylist(rows, schema=schema))


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """A Parquet file opened for streaming; a file that is not Parquet is a StageError naming it."""
    with open_read(path) as handle:
        try:
            parquet = pq.ParquetFile(handle, buffer_size=1 << 20)  # column chunks read a MiB at a time
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


def _may_overlap(row_group: pq.RowGroupMetaData, column: int, low, high) -> bool:
    """False only when the row group's statistics show that `column` holds no value in [low, high]."""
    stats = row_group.column(column).statistics
    if stats is None or not stats.has_min_max:
        return True
    try:
        return stats.min <= high and low <= stats.max
    except TypeError:  # statistics of another type than the values': no help
        return True


def scan_parquet(files: Iterable[FileEntry | str], columns: list[str] | None,
                 keep: Callable[[pa.RecordBatch], pa.Array] | None = None, keep_columns: Iterable[str] = (),
                 within: tuple[str, object, object] | None = None, batch_rows: int = 2048) -> Iterator[pa.RecordBatch]:
    """The rows of every file that `keep` (a batch of `keep_columns` -> a boolean mask) accepts, as batches of the
    `columns` each file has (None: all), streamed a row group at a time. A row group whose statistics show that
    column `within[0]` holds no value from `within[1]` to `within[2]` is skipped unread, and one where no row passes
    is read no further than `keep_columns`."""
    for entry in files:
        path = getattr(entry, "path", entry)
        with open_parquet(path) as parquet:
            names = parquet.schema_arrow.names
            wanted = names if columns is None else [c for c in columns if c in names]
            tested = [c for c in keep_columns if c in names]
            bounded = names.index(within[0]) if within and within[0] in names else None
            for group in range(parquet.num_row_groups):
                if bounded is not None and not _may_overlap(parquet.metadata.row_group(group), bounded, *within[1:]):
                    continue
                if keep is None:
                    yield from parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=wanted)
                    continue
                masks = [pc.fill_null(keep(batch), False)
                         for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=tested)]
                mask = pa.chunked_array(masks, pa.bool_()).combine_chunks()
                if not pc.any(mask).as_py():
                    continue
                start = 0
                for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=wanted):
                    part, start = mask.slice(start, len(batch)), start + len(batch)
                    if pc.any(part).as_py():
                        yield batch.filter(part)
