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

from webtext.train import dirlock, shard_format

from . import storage
from .storage import FileEntry, StageError

log = logging.getLogger(__name__)

# The data stages in build order; each lives in webtext.pipeline.<name>_stage and exposes STAGE.
DATA_STAGES = ("links", "crawl", "dedup", "tokenizer", "shards")
# Commands of the torch-only trainer (webtext.train.cli), run after the data stages.
TRAIN_COMMANDS = ("train", "sample", "eval", "export-hf", "import-hf")

CONFIG = "config.toml"
SUCCESS = "_SUCCESS"  # JSON: the stage's fingerprint and the files it wrote (path under RUN -> size)
LOCK = dirlock.LOCK_NAME  # RUN/<stage>/_LOCK while the stage writes (pipeline/locks.py); RUN/train/NAME/_LOCK too
LINKS = "links"  # links-NNNNN-of-MMMMM.parquet
LINKS_GLOB = "links/links-*.parquet"
LINKS_WORK = "links/_work"  # raw dump chunks and parsed submissions, read where they are needed; removed at links' end
WARC = "crawl/warc"
FETCH_LOG = "crawl/fetch-log"
FETCH_LOG_GLOB = "crawl/fetch-log/*.parquet"
FETCH_JOURNAL = "crawl/journal"  # a JSON line per finished link, written as the crawl goes: what a rerun resumes from
FETCH_JOURNAL_GLOB = "crawl/journal/*.jsonl"
DOCS = "docs"  # the crawl's documents (or a corpus placed there by hand, with PLACED_DOCS)
DOCS_GLOB = "docs/*.parquet"
PLACED_DOCS = "docs/_PLACED"  # says RUN/docs holds a corpus made elsewhere, not a crawl's output
DEDUP = "dedup"
DEDUP_DOCS_GLOB = "dedup/docs-*.parquet"
DEDUP_CLUSTERS_GLOB = "dedup/clusters-*.parquet"  # one row per member of each duplicate cluster, sorted by cluster_id
DEDUP_WORK = "dedup/_work"  # Bloom filters, sketch records, n-gram hits, unmerged survivors; removed at dedup's end
TOKENIZER = shard_format.RUN_TOKENIZER.parent.as_posix()
TOKENIZER_JSON = shard_format.RUN_TOKENIZER.as_posix()
SHARDS = shard_format.RUN_SHARDS.as_posix()
SHARDS_MANIFEST = f"{SHARDS}/{shard_format.MANIFEST_NAME}"
SHARDS_WORK = f"{SHARDS}/_work"  # each encoding bundle's tokens while the shards stage runs; removed at its end
TRAINING = shard_format.RUN_TRAINING.as_posix()  # RUN/train/NAME, written by `webtext train`
STATS = "stats"
SAMPLE_DUMP = "sample/RS_demo.zst"  # the demo's generated Reddit dump
SAMPLE_WEB = "sample/web.json"  # the demo's sample web: the port of each site, which a rerun binds again
REJECTS = "rejects"
REJECTS_GLOB = "rejects/{stage}/*.parquet"

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

    def reject_files(self, stage: str) -> list[FileEntry]:
        return self.files(REJECTS_GLOB.format(stage=stage))

    def is_run(self) -> bool:
        """Whether RUN holds what every run has: its config.toml, a stage's _SUCCESS, or documents."""
        return (storage.exists(self.path(CONFIG)) or any(storage.exists(self.success_path(s)) for s in DATA_STAGES)
                or bool(self.files(DOCS_GLOB)))

    def stats(self, name: str) -> str:
        return self.path(STATS, name)

    def read_json(self, *parts: str):
        return json.loads(storage.read_bytes(self.path(*parts)))

    def write_json(self, data, *parts: str) -> None:
        storage.write_bytes(self.path(*parts), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def clear(self, folder: str, patterns: Iterable[str] = ("*",)) -> None:
        """Deletes the files a stage wrote before (not its writer's lock), so a forced rerun leaves no stale shards."""
        doomed = []
        for pattern in patterns:
            doomed.extend(e.path for e in storage.match(self.path(folder, pattern)) if _name(e.path) != LOCK)
        storage.delete(sorted(set(doomed)))

    def output_files(self, folders: Iterable[str]) -> dict[str, int]:
        """The files under `folders` (two levels, as `clear` sees them) by path under RUN, with their sizes."""
        files = {}
        for folder in folders:
            base = self.path(folder)
            for pattern in ("*", "*/*"):
                for entry in storage.match(self.path(folder, pattern)):
                    if _name(entry.path) not in (SUCCESS, LOCK):
                        files[f"{folder}/{entry.path[len(base):].lstrip('/')}"] = entry.size
        return files

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

    def write_success(self, stage: str, fingerprint: str, folders: Iterable[str], info: dict | None = None) -> None:
        """Marks the stage done: its fingerprint, and every file it wrote under `folders` with its size."""
        folders = list(folders)
        record = {"fingerprint": fingerprint, "folders": folders, "files": self.output_files(folders), **(info or {})}
        storage.write_bytes(self.success_path(stage), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())

    def changed_outputs(self, record: dict) -> list[str]:
        """How the files under a _SUCCESS's folders differ from the ones it lists (empty: exactly those)."""
        if "files" not in record:
            return ["it lists no files (written by an older webtext)"]
        wrote, found = record["files"], self.output_files(record.get("folders", []))
        return ([f"{self.path(p)} is missing" for p in sorted(set(wrote) - set(found))]
                + [f"{self.path(p)} was not written by it" for p in sorted(set(found) - set(wrote))]
                + [f"{self.path(p)} has {found[p]} bytes, it wrote {wrote[p]}"
                   for p in sorted(set(wrote) & set(found)) if wrote[p] != found[p]])

    def require_finished(self, stage: str) -> str:
        """The fingerprint of an upstream stage that finished and whose files are still the ones it wrote; otherwise a
        StageError naming the stage to run again."""
        rerun = f"run `webtext {stage} {self.root}`"
        record = self.read_success(stage)
        if record is None:
            raise StageError(f"{self.success_path(stage)} not found: the {stage} stage has not finished (it failed, was "
                             f"stopped, or never ran); {rerun}{UNFINISHED_HINTS.get(stage, '').format(run=self)}")
        problems = self.changed_outputs(record)
        if problems:
            more = f" (and {len(problems) - 1} more differences)" if len(problems) > 1 else ""
            raise StageError(f"{self.success_path(stage)}: {problems[0]}{more}: the {stage} stage's output is not as "
                             f"it finished; {rerun} again")
        return record.get("fingerprint", "")


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


# What else to say when a stage's _SUCCESS is missing.
UNFINISHED_HINTS = {"crawl": f" (or, if {DOCS} holds documents made elsewhere, say so: create {{run.root}}/{PLACED_DOCS})"}


# -- documents: what dedup, the tokenizer and the shards stage read ----------------------------------------------

@dataclass(frozen=True)
class DocumentSource:
    stage: str | None  # the stage whose output this is; None for documents placed by hand (PLACED_DOCS)
    pattern: str  # glob of the Parquet files (a full path or URL)
    files: list[FileEntry]

    @property
    def upstream(self) -> list[str]:
        return [self.stage] if self.stage else []


def docs_stage(run: RunDir) -> str | None:
    """Whose output RUN/docs is: the crawl's, or nobody's (None) when PLACED_DOCS says a corpus was put there by hand."""
    return None if storage.exists(run.path(PLACED_DOCS)) else "crawl"


def find_documents(run: RunDir) -> DocumentSource | None:
    """The deduplicated documents once the dedup stage has run (or started), else RUN/docs; None if neither has any.

    The reading stage checks that DocumentSource.stage finished and wrote exactly these files (stage.run_stage)."""
    if run.read_success("dedup") is not None or run.files(DEDUP_DOCS_GLOB):
        return DocumentSource("dedup", run.path(DEDUP_DOCS_GLOB), run.files(DEDUP_DOCS_GLOB))
    files = run.files(DOCS_GLOB)
    return DocumentSource(docs_stage(run), run.path(DOCS_GLOB), files) if files else None


def require_documents(run: RunDir) -> DocumentSource:
    source = find_documents(run)
    if source is None:
        raise StageError(f"no documents to read: neither {run.path(DEDUP_DOCS_GLOB)} nor {run.path(DOCS_GLOB)} "
                         "exists (run the dedup or crawl stage first)")
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
