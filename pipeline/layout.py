"""The one description of a run directory: stage order, every path and glob under RUN, and the record schemas.

Every stage, the CLI, the report, the DAG and the tests find RUN's files through this module; the shard files and the
training directories are named by `webtext.train.shard_format`, the contract that train/ reads without Beam.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Iterable

import pyarrow as pa

from webtext.train import shard_format

from . import storage
from .storage import FileEntry, StageError

log = logging.getLogger(__name__)

# The data stages in build order; each lives in webtext.pipeline.<name>_stage and exposes STAGE.
DATA_STAGES = ("links", "crawl", "dedup", "tokenizer", "shards")
# Commands of the torch-only trainer (webtext.train.cli), run after the data stages.
TRAIN_COMMANDS = ("train", "sample", "eval", "export-hf", "import-hf")

CONFIG = "config.toml"
SUCCESS = "_SUCCESS"
LINKS = "links"  # links-NNNNN-of-MMMMM.parquet
LINKS_GLOB = "links/links-*.parquet"
WARC = "crawl/warc"
FETCH_LOG = "crawl/fetch-log"
DOCS = "docs"  # the crawl's documents (or a corpus placed there by hand)
DOCS_GLOB = "docs/*.parquet"
DEDUP = "dedup"
DEDUP_DOCS_GLOB = "dedup/docs-*.parquet"
DEDUP_WORK = "dedup/_work"  # Bloom filters, sketch records, n-gram hits, unmerged survivors; removed at dedup's end
TOKENIZER = shard_format.RUN_TOKENIZER.parent.as_posix()
TOKENIZER_JSON = shard_format.RUN_TOKENIZER.as_posix()
SHARDS = shard_format.RUN_SHARDS.as_posix()
SHARDS_MANIFEST = f"{SHARDS}/{shard_format.MANIFEST_NAME}"
SHARDS_WORK = f"{SHARDS}/_work"  # each encoding bundle's tokens while the shards stage runs; removed at its end
TRAINING = shard_format.RUN_TRAINING.as_posix()  # RUN/train/NAME, written by `webtext train`
STATS = "stats"
REJECTS = "rejects"

# The Parquet records of a run (stages may add columns to docs; these stay).
LINKS_SCHEMA = pa.schema([
    ("url", pa.string()),
    ("url_key", pa.string()),
    ("domain", pa.string()),
    ("score", pa.int64()),
    ("score_sum", pa.int64()),
    ("num_submissions", pa.int64()),
    ("created_utc", pa.int64()),
    ("subreddits", pa.list_(pa.string())),
    ("submission_ids", pa.list_(pa.string())),
    ("title", pa.string()),
])


REDDIT_FIELDS = ("score", "score_sum", "num_submissions", "created_utc", "subreddits", "submission_ids")

DOC_SCHEMA = pa.schema([
    ("doc_id", pa.string()),
    ("url", pa.string()),
    ("url_key", pa.string()),
    ("final_url", pa.string()),
    ("domain", pa.string()),
    ("title", pa.string()),
    ("date", pa.string()),
    ("text", pa.string()),
    ("language", pa.string()),
    ("language_score", pa.float64()),
    *(LINKS_SCHEMA.field(name) for name in REDDIT_FIELDS),  # the link row's Reddit fields travel with the document
    ("reddit_title", pa.string()),
    ("fetched_at", pa.int64()),
    ("n_words", pa.int64()),
    ("charset", pa.string()),
    ("warc_file", pa.string()),
    ("warc_offset", pa.int64()),
])

FETCH_LOG_SCHEMA = pa.schema([
    ("url", pa.string()),
    ("url_key", pa.string()),
    ("final_url", pa.string()),
    ("outcome", pa.string()),  # "page" (went on to extraction) or "rejected"
    ("status", pa.int32()),
    ("bytes", pa.int64()),
    ("elapsed", pa.float64()),
    ("attempts", pa.int32()),
    ("redirects", pa.int32()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("warc_file", pa.string()),
    ("warc_offset", pa.int64()),
    ("fetched_at", pa.int64()),
])

DOC_COLUMNS = {"doc_id": "string", "url": "string", "domain": "string", "text": "string", "score": "integer"}
TEXT_COLUMNS = ("doc_id", "text")  # what the tokenizer and shards stages read

REJECT_SCHEMA = pa.schema([
    ("stage", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("url", pa.string()),
    ("item_id", pa.string()),
])
REJECT_SHARDS = 4


def reject(stage: str, reason: str, detail: str = "", url: str | None = None, item_id: str | None = None) -> dict:
    """A dropped item: which stage, why, and enough to find it again (its URL or its id)."""
    return {"stage": stage, "reason": reason, "detail": detail, "url": url, "item_id": item_id}


class RunDir:
    """Paths and small files of one run; big data goes through Beam transforms."""

    def __init__(self, root: str):
        self.root = root.rstrip("/") if "://" in root else root

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    def files(self, pattern: str) -> list[FileEntry]:
        return storage.match(self.path(pattern))

    def rejects(self, stage: str) -> str:
        return self.path(REJECTS, stage)

    def stats(self, name: str) -> str:
        return self.path(STATS, name)

    def read_json(self, *parts: str):
        return json.loads(storage.read_bytes(self.path(*parts)))

    def write_json(self, data, *parts: str) -> None:
        storage.write_bytes(self.path(*parts), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def clear(self, folder: str, patterns: Iterable[str] = ("*",)) -> None:
        """Deletes the files a stage wrote before, so a forced rerun leaves no stale shards."""
        doomed = []
        for pattern in patterns:
            doomed.extend(e.path for e in storage.match(self.path(folder, pattern)))
        storage.delete(sorted(set(doomed)))

    # -- completion markers ---------------------------------------------------------------------------------

    def success_path(self, stage: str) -> str:
        return self.path(stage, SUCCESS)

    def read_success(self, stage: str) -> dict | None:
        path = self.success_path(stage)
        if not storage.exists(path):
            return None
        try:
            return json.loads(storage.read_bytes(path))
        except ValueError:
            log.warning("%s is not valid JSON; the stage will run again", path)
            return None

    def write_success(self, stage: str, fingerprint: str, info: dict | None = None) -> None:
        storage.write_bytes(self.success_path(stage),
                            (json.dumps({"fingerprint": fingerprint, **(info or {})}, indent=2, sort_keys=True)
                             + "\n").encode())


# -- documents: what dedup, the tokenizer and the shards stage read ----------------------------------------------

# (stage that writes them, glob under RUN), in order of preference.
DOCUMENT_SOURCES = (("dedup", DEDUP_DOCS_GLOB), ("crawl", DOCS_GLOB))


@dataclass(frozen=True)
class DocumentSource:
    stage: str  # the upstream stage whose output this is
    pattern: str  # glob of the Parquet files (a full path or URL)
    files: list[FileEntry]


def find_documents(run: RunDir) -> DocumentSource | None:
    """The deduplicated documents when the dedup stage wrote any, else the crawl's documents; None if neither.

    Output of a stage of ours that started but did not finish (its folder has files but no _SUCCESS) is refused
    rather than read: it may be partial. Documents put in RUN/docs by hand (a corpus made elsewhere) are fine."""
    for stage, pattern in DOCUMENT_SOURCES:
        files = run.files(pattern)
        if not files:
            continue
        if run.read_success(stage) is None and run.files(f"{stage}/*"):
            raise StageError(f"{run.path(stage)} holds output of a {stage} run that did not finish (no _SUCCESS): "
                             f"run `webtext {stage}` again, or delete {run.path(stage)}")
        return DocumentSource(stage, run.path(pattern), files)
    return None


def require_documents(run: RunDir) -> DocumentSource:
    source = find_documents(run)
    if source is None:
        wanted = " nor ".join(run.path(pattern) for _, pattern in DOCUMENT_SOURCES)
        raise StageError(f"no documents to read: neither {wanted} exists (run the dedup or crawl stage first)")
    return source


def _is_kind(arrow_type: pa.DataType, kind: str) -> bool:
    if kind == "integer":
        return pa.types.is_integer(arrow_type)
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def check_documents(files: list[FileEntry], columns: Iterable[str]) -> tuple[pa.Schema, int]:
    """The unified schema and row count of document files, each checked to have `columns` of DOC_COLUMNS' kinds."""
    columns = list(columns)
    schemas, rows = [], 0
    for entry in files:
        with storage.open_parquet(entry.path) as parquet:
            schema = parquet.schema_arrow  # the footer only
            rows += parquet.metadata.num_rows
        for column in columns:
            if column not in schema.names:
                raise StageError(f"{entry.path}: has no column {column!r} (it needs {', '.join(columns)}; "
                                 f"columns: {', '.join(schema.names)})")
            if not _is_kind(schema.field(column).type, DOC_COLUMNS[column]):
                raise StageError(f"{entry.path}: column {column!r} is {schema.field(column).type}, "
                                 f"it must be {DOC_COLUMNS[column]}")
        schemas.append(schema)
    try:
        return pa.unify_schemas(schemas).remove_metadata(), rows
    except pa.ArrowException as error:
        raise StageError(f"the document files' schemas do not agree: {error}") from None
