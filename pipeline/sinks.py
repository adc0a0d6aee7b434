"""Deterministic Parquet output from Beam (same input, same files, same rows), and the counting and writing of rejects."""
from __future__ import annotations

import hashlib
import itertools
import logging
from typing import Any, Callable, Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from . import layout, storage
from .external_sort import ExternalSort

log = logging.getLogger(__name__)


def stable_shard(key: str, num_shards: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big") % num_shards


def shard_name(prefix: str, index: int, num_shards: int) -> str:
    return f"{prefix}-{index:05d}-of-{num_shards:05d}.parquet"


def write_shard(directory: str, prefix: str, index: int, num_shards: int, rows: Iterable[dict], schema: pa.Schema,
                sort_key: Callable[[dict], Any]) -> str:
    """One shard file of rows sorted by `sort_key`; returns its path."""
    path = storage.join(directory, shard_name(prefix, index, num_shards))
    storage.write_parquet_rows(path, sorted(rows, key=sort_key), schema)
    return path


class _WriteShard(beam.DoFn):
    def __init__(self, directory: str, prefix: str, num_shards: int, schema: pa.Schema, sort_key: Callable[[dict], Any]):
        self.directory, self.prefix, self.num_shards = directory, prefix, num_shards
        self.schema, self.sort_key = schema, sort_key

    def process(self, element):
        index, rows = element
        yield write_shard(self.directory, self.prefix, index, self.num_shards, rows, self.schema, self.sort_key)


class WriteParquet(beam.PTransform):
    """Rows keyed by a stable hash into `num_shards` files `prefix-NNNNN-of-MMMMM.parquet`, each sorted by `sort_key`.

    Beam's own file sinks give no deterministic shard contents; grouping by an explicit shard index does.
    Call `fill_empty_shards` after the pipeline so every shard file exists even when some got no rows.
    """

    def __init__(self, directory: str, prefix: str, schema: pa.Schema, num_shards: int,
                 shard_key: Callable[[dict], str], sort_key: Callable[[dict], Any]):
        super().__init__()
        self.directory, self.prefix, self.schema, self.num_shards = directory, prefix, schema, num_shards
        self.shard_key, self.sort_key = shard_key, sort_key

    def expand(self, rows):
        num_shards, shard_key = self.num_shards, self.shard_key
        return (rows
                | "KeyByShard" >> beam.Map(lambda row: (stable_shard(shard_key(row), num_shards), row))
                     .with_output_types(tuple[int, dict])
                | "GroupShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(_WriteShard(self.directory, self.prefix, num_shards, self.schema, self.sort_key)))


def fill_empty_shards(directory: str, prefix: str, schema: pa.Schema, num_shards: int) -> list[str]:
    """Writes an empty, schema-bearing file for each shard that got no rows; returns all shard paths."""
    paths = [storage.join(directory, shard_name(prefix, i, num_shards)) for i in range(num_shards)]
    for path in paths:
        if not storage.exists(path):
            storage.write_parquet_rows(path, [], schema)
    return paths


# A reject crosses the shuffle as (reason, detail, url, item_id): its stage is the writer's.
RejectTuple = tuple[str, Any, Any, Any]


def reject_shard(reason: str, url: str | None, item_id: str | None) -> int:
    """The rejects file a reject goes to."""
    return stable_shard(f"{reason}|{url or ''}|{item_id or ''}", layout.REJECT_SHARDS)


def keyed_reject(row: dict) -> tuple[int, RejectTuple]:
    return (reject_shard(row["reason"], row.get("url"), row.get("item_id")),
            (row["reason"], row.get("detail"), row.get("url"), row.get("item_id")))


def reject_order(reject: RejectTuple) -> tuple:
    """The order of a rejects file's rows: by reason, URL, id and detail."""
    return reject[0], reject[2] or "", reject[3] or "", reject[1] or ""


def write_reject_shard(directory: str, stage: str, index: int, rejects: Iterable[RejectTuple],
                       sort_run: int = ExternalSort.LIMIT) -> str:
    """One rejects file in reject_order. A stage may reject millions: they are sorted in runs of `sort_run` spilled to
    the worker's local disk and written a chunk of rows at a time, so a worker never holds a whole shard of them."""
    ordered = ExternalSort(key=reject_order, limit=sort_run)
    try:
        ordered.extend(rejects)
        return write_sorted_reject_shard(directory, stage, index, ordered.sorted())
    finally:
        ordered.close()


def write_sorted_reject_shard(directory: str, stage: str, index: int, rejects: Iterable[RejectTuple],
                              chunk_rows: int = 16 * 1024) -> str:
    """write_reject_shard for rejects already in reject_order, streamed a chunk of rows at a time."""
    def tables() -> Iterator[pa.Table]:
        iterator = iter(rejects)
        while rows := list(itertools.islice(iterator, chunk_rows)):
            reasons, details, urls, item_ids = (list(column) for column in zip(*rows))
            yield pa.table([[stage] * len(rows), reasons, details, urls, item_ids], schema=layout.REJECT_SCHEMA)

    path = storage.join(directory, shard_name("rejects", index, layout.REJECT_SHARDS))
    storage.write_parquet_stream(path, layout.REJECT_SCHEMA, tables())
    return path


class WriteRejects(beam.PTransform):
    """Rejects (dicts from layout.reject) of one stage into RUN/rejects/<stage>/rejects-*.parquet."""

    def __init__(self, directory: str, stage: str):
        super().__init__()
        self.directory, self.stage = directory, stage

    def expand(self, rejects):
        directory, stage = self.directory, self.stage
        return (rejects
                | "KeyByRejectShard" >> beam.Map(keyed_reject).with_output_types(tuple[int, RejectTuple])
                | "GroupRejectShard" >> beam.GroupByKey()
                | "WriteRejectShard" >> beam.MapTuple(lambda index, rows: write_reject_shard(directory, stage, index, rows)))


class RejectCounters:
    """The `reject.<reason>` counters of one stage, each made on first use (reasons are open-ended)."""

    def __init__(self, stage: str):
        self.stage = stage
        self._counters: dict[str, Any] = {}

    def inc(self, reason: str, count: int = 1) -> None:
        if reason not in self._counters:
            self._counters[reason] = Metrics.counter(self.stage, f"reject.{reason}")
        self._counters[reason].inc(count)


class CountRejects(beam.DoFn):
    """Counts each reject under `reject.<reason>` of its stage and passes it on."""

    def __init__(self, stage: str):
        self.stage = stage

    def setup(self):
        self.counters = RejectCounters(self.stage)

    def process(self, row: dict) -> Iterable[dict]:
        self.counters.inc(row["reason"])
        yield row
