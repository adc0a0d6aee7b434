"""Where the tokenizer and shards stages find documents: RUN/dedup/docs-*.parquet, else RUN/docs/*.parquet."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from webtext.pipeline.rundir import FileEntry, RunDir
from webtext.pipeline.stage import StageError

log = logging.getLogger(__name__)

COLUMNS = ["doc_id", "text"]
# (stage that writes them, glob under RUN), in order of preference.
SOURCES = [("dedup", "dedup/docs-*.parquet"), ("crawl", "docs/*.parquet")]


@dataclass(frozen=True)
class DocumentSource:
    stage: str  # the upstream stage whose output this is
    pattern: str  # glob of the Parquet files (a full path or URL)
    files: list[FileEntry]


def find_documents(run: RunDir) -> DocumentSource | None:
    """The deduplicated documents when the dedup stage wrote any, else the crawl's documents; None if neither.

    Output of a stage of ours that started but did not finish (its folder has files but no _SUCCESS) is refused
    rather than read: it may be partial. Documents put in RUN/docs by hand (a corpus made elsewhere) are fine."""
    for stage, pattern in SOURCES:
        files = run.stage_files(pattern)
        if not files:
            continue
        if run.read_success(stage) is None and run.stage_files(f"{stage}/*"):
            raise StageError(f"{run.path(stage)} holds output of a {stage} run that did not finish (no _SUCCESS): "
                             f"run `webtext {stage}` again, or delete {run.path(stage)}")
        return DocumentSource(stage, run.path(pattern), files)
    return None


def require_documents(run: RunDir) -> DocumentSource:
    source = find_documents(run)
    if source is None:
        wanted = " nor ".join(run.path(pattern) for _, pattern in SOURCES)
        raise StageError(f"no documents to read: neither {wanted} exists (run the dedup or crawl stage first)")
    return source


def _open(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _is_text(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def check_files(files: list[FileEntry]) -> int:
    """Checks every file is Parquet with string columns doc_id and text; returns the total number of rows."""
    rows = 0
    for entry in files:
        try:
            with _open(entry.path) as handle:
                parquet = pq.ParquetFile(handle)
                schema, rows_here = parquet.schema_arrow, parquet.metadata.num_rows
        except (pa.ArrowInvalid, OSError) as error:
            raise StageError(f"{entry.path}: not a readable Parquet file ({error})") from None
        for column in COLUMNS:
            if column not in schema.names:
                raise StageError(f"{entry.path}: has no column {column!r} (columns: {', '.join(schema.names)})")
            if not _is_text(schema.field(column).type):
                raise StageError(f"{entry.path}: column {column!r} is {schema.field(column).type}, expected string")
        rows += rows_here
    return rows


def iter_batches(files: list[FileEntry], batch_rows: int = 2048) -> Iterator[pa.RecordBatch]:
    """Record batches of doc_id and text, file after file in path order, streamed through Beam's filesystems."""
    for entry in files:
        with _open(entry.path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=COLUMNS):
                yield batch
