"""The `shards` stage, a Beam job: documents encoded with the run's tokenizer into Arrow token shards (train/val by
a hash of doc_id) plus manifest.json; the same documents and tokenizer give the same files on any runner."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.metrics import Metrics

from webtext.pipeline import layout, memory, sinks, storage
from webtext.pipeline.parquet_source import ReadParquetBatches
from webtext.pipeline.token_encoding import ENGINES, Encoder
from webtext.pipeline.progress import Progress
from webtext.pipeline.layout import RunDir
from webtext.pipeline.storage import FileEntry
from webtext.pipeline.stage_options import options_of
from webtext.pipeline.stage import Action, Stage, StageContext, StageError
from webtext.train import shard_format

log = logging.getLogger(__name__)

NAME = "shards"
ENCODE_BATCH_DOCS = 512
WRITE_CHUNK_TOKENS = 4 << 20  # tokens a shard writer reads back from the work folder at a time
SPLITS = ("val", "train")  # val takes the lowest doc_id hashes, train the rest


def doc_hash(doc_id: str) -> int:
    """The 64-bit hash of a document id that places it: split (as train.shard_format.split_for_doc) and shard order."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "big")


# -- records ------------------------------------------------------------------------------------------------------


@dataclass
class TokenRefs:
    """Encoded documents as they cross the shuffle: ids, placement hashes (uint64), token counts and where each
    document's tokens lie in the work folder (file name, byte offset); the tokens themselves stay in the file."""

    doc_ids: list[str]
    hashes: np.ndarray
    lengths: np.ndarray  # int64 tokens, the eot included
    files: list[str]
    offsets: np.ndarray  # int64 bytes

    def __len__(self) -> int:
        return len(self.doc_ids)

    def take(self, indices: Sequence[int]) -> "TokenRefs":
        indices = list(indices)
        return TokenRefs([self.doc_ids[i] for i in indices], self.hashes[indices], self.lengths[indices],
                         [self.files[i] for i in indices], self.offsets[indices])

    @staticmethod
    def concat(batches: Iterable["TokenRefs"]) -> "TokenRefs":
        batches = [b for b in batches if len(b)]
        return TokenRefs([d for b in batches for d in b.doc_ids],
                         np.concatenate([b.hashes for b in batches]).astype(np.uint64) if batches else np.empty(0, np.uint64),
                         np.concatenate([b.lengths for b in batches]).astype(np.int64) if batches else np.empty(0, np.int64),
                         [f for b in batches for f in b.files],
                         np.concatenate([b.offsets for b in batches]).astype(np.int64) if batches else np.empty(0, np.int64))


class TokenWriter:
    """Appends the tokens of one bundle's documents to a file of its own in the work folder."""

    def __init__(self, folder: str):
        self.file = storage.AppendFile(folder, "tokens")

    def add(self, doc_ids: list[str], hashes: np.ndarray, documents: shard_format.TokenBatch) -> TokenRefs:
        start = self.file.append(documents.tokens.tobytes())
        offsets = start + documents.offsets[:-1] * documents.tokens.itemsize
        return TokenRefs(doc_ids, hashes, documents.lengths.astype(np.int64), [self.file.name] * len(doc_ids),
                         offsets.astype(np.int64))

    def close(self) -> None:
        self.file.close()


def read_tokens(folder: str, refs: TokenRefs, dtype: str) -> shard_format.TokenBatch:
    """The documents of `refs`, in their order, read back from the work folder (each file once, in offset order)."""
    np_dtype = np.dtype(shard_format.DTYPES[dtype])
    batch = shard_format.TokenBatch.from_lengths(np.empty(int(refs.lengths.sum()), np_dtype), refs.lengths)
    by_file: dict[str, list[int]] = {}
    for index, name in enumerate(refs.files):
        by_file.setdefault(name, []).append(index)
    for name in sorted(by_file):
        with storage.open_read(storage.join(folder, name)) as handle:
            for index in sorted(by_file[name], key=lambda i: refs.offsets[i]):
                handle.seek(int(refs.offsets[index]))
                start, end = batch.offsets[index], batch.offsets[index + 1]
                batch.tokens[start:end] = np.frombuffer(handle.read(int(end - start) * np_dtype.itemsize), np_dtype)
    return batch


def token_chunks(folder: str, refs: TokenRefs, dtype: str, chunk_tokens: int = WRITE_CHUNK_TOKENS,
                 ) -> Iterator[shard_format.TokenBatch]:
    """The documents of `refs`, in their order, read back as consecutive batches of about `chunk_tokens` tokens."""
    first_tokens = np.cumsum(refs.lengths) - refs.lengths
    firsts = np.flatnonzero(np.diff(first_tokens // chunk_tokens, prepend=-1)).tolist()  # a chunk's first document
    for start, stop in zip(firsts, firsts[1:] + [len(refs)]):
        yield read_tokens(folder, refs.take(range(start, stop)), dtype)


@dataclass(frozen=True)
class ShardPlan:
    """Shard i holds the documents whose hash lies in [starts[i], starts[i+1]); val shards come first."""

    starts: np.ndarray  # uint64, ascending
    names: list[str]
    splits: list[str]

    def locate(self, hashes: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, hashes, side="right") - 1


def _cut(hashes: np.ndarray, lengths: np.ndarray, shard_tokens: int) -> list[int]:
    """Start hashes of near-equal shards of at most about `shard_tokens` tokens, over documents sorted by hash."""
    total = int(lengths.sum())
    count = max(1, min(-(-total // shard_tokens), len(lengths)))  # no more shards than documents
    first_token = np.cumsum(lengths) - lengths
    shard_of_doc = first_token * count // max(total, 1)
    first_doc = np.flatnonzero(np.diff(shard_of_doc, prepend=-1))
    return sorted({int(hashes[i]) for i in first_doc})


def make_plan(sizes: tuple[np.ndarray, np.ndarray], val_fraction: float, shard_tokens: int) -> ShardPlan:
    """Val: documents with hash/2**64 < val_fraction (at least the lowest one); each split cut into shards by tokens."""
    hashes, lengths = sizes
    order = np.argsort(hashes, kind="stable")
    hashes, lengths = hashes[order], lengths[order]
    if len(hashes) == 0:
        return ShardPlan(np.empty(0, np.uint64), [], [])
    in_val = int(np.count_nonzero(hashes.astype(np.float64) / 2.0**64 < val_fraction))
    in_val = max(in_val, int(np.count_nonzero(hashes == hashes[0])))
    starts, names, splits = [], [], []
    for split, part in (("val", slice(0, in_val)), ("train", slice(in_val, None))):
        if len(hashes[part]) == 0:
            continue
        for index, start in enumerate(_cut(hashes[part], lengths[part], shard_tokens)):
            starts.append(start)
            names.append(shard_format.shard_name(split, index))
            splits.append(split)
    return ShardPlan(np.array(starts, dtype=np.uint64), names, splits)


class CollectSizes(beam.CombineFn):
    """All (hash, tokens) pairs of the corpus as two arrays: 16 bytes a document, for planning the shards."""

    def create_accumulator(self):
        return [], []

    def add_input(self, accumulator, batch: TokenRefs):
        accumulator[0].append(batch.hashes)
        accumulator[1].append(batch.lengths)
        return accumulator

    def merge_accumulators(self, accumulators):
        hashes, lengths = [], []
        for h, n in accumulators:
            hashes += h
            lengths += n
        return [np.concatenate(hashes)] if hashes else [], [np.concatenate(lengths)] if lengths else []

    def extract_output(self, accumulator):
        hashes, lengths = accumulator
        return (np.concatenate(hashes).astype(np.uint64) if hashes else np.empty(0, np.uint64),
                np.concatenate(lengths).astype(np.int64) if lengths else np.empty(0, np.int64))


# -- encoding -----------------------------------------------------------------------------------------------------


def batch_lists(batch: pa.RecordBatch) -> tuple[list, list]:
    """(doc_ids, texts) as plain lists, since a pickled Arrow slice drags its whole parent buffer along."""
    return batch.column("doc_id").to_pylist(), batch.column("text").to_pylist()


@beam.typehints.with_output_types(TokenRefs, rejects=dict)
class EncodeDocuments(beam.DoFn):
    """Encodes batches of (doc_ids, texts) into the bundle's token file in the work folder; yields their TokenRefs.
    The tokenizer is loaded once per worker in setup()."""

    def __init__(self, tokenizer_path: str, engine: str, work: str):
        self.tokenizer_path, self.engine, self.work = tokenizer_path, engine, work

    def start_bundle(self):
        self.writer = TokenWriter(self.work)

    def finish_bundle(self):
        self.writer.close()
        memory.release()

    def setup(self):
        self.encoder = Encoder(storage.read_bytes(self.tokenizer_path), engine=self.engine)
        self.cross_checked = False
        self.counters = {name: Metrics.counter(NAME, name)
                         for name in ("docs.read", "docs.encoded", "bytes.encoded", "tokens.encoded", "docs.cross_checked")}
        self.progress = Progress(log, "shards: encoding (this worker)")

    def _rejects(self, doc_ids: list, texts: list) -> tuple[list[int], list[dict]]:
        """Indices of the documents to encode, and a reject for each of the others."""
        kept, rejects = [], []
        for index, (doc_id, text) in enumerate(zip(doc_ids, texts)):
            if not doc_id:
                detail = f"text begins {text[:80]!r}" if text else "no text either"
                rejects.append(layout.reject(NAME, "missing_doc_id", detail))
            elif text is None:
                rejects.append(layout.reject(NAME, "missing_text", "text is null", item_id=doc_id))
            elif not text:
                rejects.append(layout.reject(NAME, "empty_text", "text is empty", item_id=doc_id))
            else:
                kept.append(index)
        return kept, rejects

    def _cross_check(self, texts: list[str], encoded: list[list[int]]) -> None:
        """Once per worker: the fast engine's ids must equal `tokenizers`' on real documents."""
        if self.cross_checked or self.encoder.engine == "tokenizers":
            return
        self.cross_checked = True
        sample = texts[:64]
        expected = [e.ids for e in self.encoder.tokenizer.encode_batch_fast(sample, add_special_tokens=False)]
        if expected != encoded[:len(sample)]:
            raise RuntimeError(f"{self.encoder.engine} and tokenizers give different ids on a document; "
                               "rerun with --encoder tokenizers and report the document")
        self.counters["docs.cross_checked"].inc(len(sample))

    def process(self, batch: tuple[list, list]):
        doc_ids, texts = batch
        self.counters["docs.read"].inc(len(doc_ids))
        kept, rejects = self._rejects(doc_ids, texts)
        for reject in rejects:
            yield beam.pvalue.TaggedOutput("rejects", reject)
        if not kept:
            return
        doc_ids, texts = [doc_ids[i] for i in kept], [texts[i] for i in kept]
        encoded = self.encoder.encode(texts)
        self._cross_check(texts, encoded)
        documents = self.encoder.documents_from_ids(encoded)
        self.counters["docs.encoded"].inc(len(texts))
        self.counters["bytes.encoded"].inc(sum(len(t.encode("utf-8")) for t in texts))
        self.counters["tokens.encoded"].inc(int(documents.tokens.size))
        self.progress.add(docs=len(texts), tokens=int(documents.tokens.size))
        hashes = np.fromiter((doc_hash(d) for d in doc_ids), dtype=np.uint64, count=len(doc_ids))
        yield self.writer.add(doc_ids, hashes, documents)


def split_by_shard(batch: TokenRefs, plan: ShardPlan) -> Iterator[tuple[str, TokenRefs]]:
    positions = plan.locate(batch.hashes)
    for position in np.unique(positions):
        yield plan.names[int(position)], batch.take(np.flatnonzero(positions == position))


# -- writing ------------------------------------------------------------------------------------------------------


def _is_local(path: str) -> bool:
    return isinstance(FileSystems.get_filesystem(path), LocalFileSystem)


def _upload(local: Path, destination: str) -> None:
    with open(local, "rb") as source, storage.open_write(destination) as target:
        shutil.copyfileobj(source, target, 1 << 24)


def write_shard_file(path: str, doc_ids: list[str], lengths: np.ndarray,
                     chunks: Iterable[shard_format.TokenBatch], dtype: str, eot_id: int) -> shard_format.ShardStats:
    """One shard written under its final name from its documents' token chunks, holding one chunk at a time
    (directly on local disk, through a temp file elsewhere)."""
    if _is_local(path):
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return shard_format.write_shard_chunks(path, doc_ids, lengths, dtype, chunks, eot_id=eot_id)
        except Exception as error:
            storage.discard(path)  # a shard cut short by a full disk is no shard
            storage.raise_if_refused(error, path)
            raise
    with tempfile.TemporaryDirectory(prefix="webtext-shard-") as temp:
        local = Path(temp) / os.path.basename(path)
        stats = shard_format.write_shard_chunks(local, doc_ids, lengths, dtype, chunks, eot_id=eot_id)
        _upload(local, path)
    return stats


def order_and_dedupe(refs: TokenRefs, folder: str, dtype: str) -> tuple[TokenRefs, list[int]]:
    """Documents sorted by (hash, doc_id); of several with one doc_id the one with the smallest tokens stays (only
    those documents' tokens are read to decide).

    Returns the ordered refs and the indices (in `refs`) of the dropped duplicates.
    """
    order = sorted(range(len(refs)), key=lambda i: (int(refs.hashes[i]), refs.doc_ids[i]))
    kept, dropped = [], []
    run_start = 0
    for position in range(1, len(order) + 1):
        if position < len(order) and refs.doc_ids[order[position]] == refs.doc_ids[order[run_start]]:
            continue
        run = order[run_start:position]
        if len(run) > 1:
            tokens = read_tokens(folder, refs.take(run), dtype)
            run = [index for _, index in sorted(zip(range(len(run)), run),
                                                key=lambda pair: tokens.document(pair[0]).tobytes())]
        kept.append(run[0])
        dropped.extend(run[1:])
        run_start = position
    return refs.take(kept), dropped


@beam.typehints.with_output_types(dict, rejects=dict)
class WriteShard(beam.DoFn):
    """Writes the documents grouped under one shard name; yields the shard's manifest entry."""

    def __init__(self, directory: str, work: str, dtype: str, eot_id: int):
        self.directory, self.work, self.dtype, self.eot_id = directory, work, dtype, eot_id

    def process(self, element: tuple[str, Iterable[TokenRefs]], plan: ShardPlan):
        name, pieces = element
        merged = TokenRefs.concat(pieces)
        refs, dropped = order_and_dedupe(merged, self.work, self.dtype)
        for index in dropped:  # counted as reject.duplicate_doc_id by CountRejects
            yield beam.pvalue.TaggedOutput("rejects", layout.reject(
                NAME, "duplicate_doc_id", f"another document with this doc_id is in {name}",
                item_id=merged.doc_ids[index]))
        split = plan.splits[plan.names.index(name)]
        stats = write_shard_file(storage.join(self.directory, name), refs.doc_ids, refs.lengths,
                                 token_chunks(self.work, refs, self.dtype), self.dtype, self.eot_id)
        memory.release()
        Metrics.counter(NAME, f"shards.{split}").inc()
        Metrics.counter(NAME, f"docs.{split}").inc(stats.documents)
        Metrics.counter(NAME, f"tokens.{split}").inc(stats.tokens)
        yield {"name": name, "split": split, "documents": stats.documents, "tokens": stats.tokens,
               "sha256": stats.sha256}


@dataclass(frozen=True)
class TokenizerInfo:
    """What the manifest records about the tokenizer the shards were made with."""

    sha256: str
    vocab_size: int
    eot_id: int
    dtype: str
    engine: str


def manifest_json(entries: list[dict], tokenizer: TokenizerInfo) -> bytes:
    order = {split: rank for rank, split in enumerate(("train", "val"))}
    infos = [shard_format.ShardInfo(**entry) for entry in sorted(entries, key=lambda e: (order[e["split"]], e["name"]))]
    manifest = shard_format.Manifest(root=Path("."), tokenizer_sha256=tokenizer.sha256, vocab_size=tokenizer.vocab_size,
                                     eot_id=tokenizer.eot_id, dtype=tokenizer.dtype, shards=infos)
    return manifest.to_json().encode("utf-8")


def write_manifest(entries: list[dict], path: str, tokenizer: TokenizerInfo) -> str:
    storage.write_bytes(path, manifest_json(entries, tokenizer))
    return path


# -- the pipeline ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardJob:
    pattern: str  # the document Parquet files
    files: list[str]  # the files it matches
    tokenizer_path: str
    output: str  # RUN/shards
    rejects: str  # RUN/rejects/shards
    tokenizer: TokenizerInfo
    val_fraction: float
    shard_tokens: int
    work: str  # RUN/shards/_work: each encoding bundle's tokens until the shards are written


def build_pipeline(p: beam.Pipeline, job: ShardJob) -> None:
    # No Reshuffle before encoding: the Parquet read already splits over files and row groups, and shuffling the
    # raw text would move the whole corpus once more. Tokens go to files in the work folder as they are encoded; only
    # their TokenRefs (ids, hashes, counts, locators) cross the shuffle to the shard writers, which read them back.
    encoded = (p
               | "ReadDocs" >> ReadParquetBatches(job.files, list(layout.TEXT_COLUMNS), ENCODE_BATCH_DOCS)
               | "SplitBatches" >> beam.Map(batch_lists)
               | "Encode" >> beam.ParDo(EncodeDocuments(job.tokenizer_path, job.tokenizer.engine, job.work))
               .with_outputs("rejects", main="encoded"))
    plan = (encoded.encoded
            | "Sizes" >> beam.CombineGlobally(CollectSizes())
            | "Plan" >> beam.Map(make_plan, job.val_fraction, job.shard_tokens))
    plan_view = beam.pvalue.AsSingleton(plan)
    written = (encoded.encoded
               | "Assign" >> beam.FlatMap(split_by_shard, plan=plan_view).with_output_types(tuple[str, Any])
               | "GroupShard" >> beam.GroupByKey()
               | "WriteShard" >> beam.ParDo(WriteShard(job.output, job.work, job.tokenizer.dtype,
                                                       job.tokenizer.eot_id),
                                            plan=plan_view).with_outputs("rejects", main="entries"))
    _ = (written.entries
         | "AllShards" >> beam.combiners.ToList()
         | "WriteManifest" >> beam.Map(write_manifest, storage.join(job.output, shard_format.MANIFEST_NAME),
                                       job.tokenizer))
    _ = ((encoded.rejects, written.rejects)
         | "AllRejects" >> beam.Flatten()
         | "CountRejects" >> beam.ParDo(sinks.CountRejects(NAME))
         | "WriteRejects" >> sinks.WriteRejects(job.rejects, NAME))


# -- verification -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    shards: int
    documents: dict[str, int]
    tokens: dict[str, int]


def _download(source: str, destination: Path) -> None:
    with storage.open_read(source) as handle, open(destination, "wb") as target:
        shutil.copyfileobj(handle, target, 1 << 24)


def _verify_remote(directory: str, manifest_path: str, tokenizer_sha256: str | None) -> shard_format.Manifest:
    """Shards elsewhere than local disk are copied, one at a time, beside a local copy of the manifest."""
    with tempfile.TemporaryDirectory(prefix="webtext-verify-") as temp:
        local = Path(temp)
        if not storage.exists(manifest_path):
            raise shard_format.ShardFormatError(f"{manifest_path}: no shard manifest here (run the shards stage first)")
        _download(manifest_path, local / shard_format.MANIFEST_NAME)
        manifest = shard_format.Manifest.load(local)
        shard_format.check_manifest(manifest, SPLITS, tokenizer_sha256, where=manifest_path)
        for info in manifest.shards:
            remote = storage.join(directory, info.name)
            if not storage.exists(remote):
                raise shard_format.ShardFormatError(f"{remote}: shard listed in the manifest is missing")
            _download(remote, local / info.name)
            try:
                shard_format.verify_shard(manifest, info)
            except shard_format.ShardFormatError as error:
                raise shard_format.ShardFormatError(str(error).replace(str(local / info.name), remote)) from None
            (local / info.name).unlink()
        return manifest


def verify_shards(run: RunDir) -> Verified:
    """Checks every shard of RUN/shards against the manifest, and the manifest against the run's tokenizer.

    Checksums, dtype, documents ending with eot, ids below the vocabulary size, document and token totals;
    raises ShardFormatError naming the first bad file.
    """
    directory = run.path(layout.SHARDS)
    manifest_path = storage.join(directory, shard_format.MANIFEST_NAME)
    tokenizer_path = run.path(layout.TOKENIZER_JSON)
    tokenizer_sha256 = (hashlib.sha256(storage.read_bytes(tokenizer_path)).hexdigest()
                        if storage.exists(tokenizer_path) else None)
    if _is_local(directory):
        manifest = shard_format.Manifest.load(directory)
        shard_format.verify(manifest, splits=SPLITS, tokenizer_sha256=tokenizer_sha256)
    else:
        manifest = _verify_remote(directory, manifest_path, tokenizer_sha256)
    return Verified(len(manifest.shards), {s: sum(i.documents for i in manifest.split(s)) for s in SPLITS},
                    {s: manifest.split_tokens(s) for s in SPLITS})


def verify_command(run: RunDir) -> int:
    """`webtext shards RUN --verify`: checks the shards already written; exit 0 when all is well."""
    try:
        result = verify_shards(run)
    except shard_format.ShardFormatError as error:
        raise StageError(f"verification failed: {error}") from None
    print(f"shards: {result.shards} shards verified against {run.path(layout.SHARDS_MANIFEST)}: "
          + ", ".join(f"{s} {result.documents[s]:,} documents / {result.tokens[s]:,} tokens" for s in SPLITS))
    return 0


# -- the stage ----------------------------------------------------------------------------------------------------


def tokenizer_info(run: RunDir, engine: str) -> tuple[str, TokenizerInfo]:
    path = run.path(layout.TOKENIZER_JSON)
    if not storage.exists(path):
        raise StageError(f"{path} not found: run `webtext tokenizer {run.root}` first")
    data = storage.read_bytes(path)
    try:
        encoder = Encoder(data, engine=engine)
    except (ValueError, ImportError) as error:
        raise StageError(f"{path}: cannot encode with engine {engine!r}: {error}") from None
    return path, TokenizerInfo(hashlib.sha256(data).hexdigest(), encoder.vocab_size, encoder.eot_id,
                               encoder.dtype, encoder.engine)


def check_splits(ctx: StageContext, rows: int) -> None:
    """Errors for a corpus that gave no shards at all, or no train shard, named as the user can fix them."""
    written = json.loads(storage.read_bytes(ctx.run.path(layout.SHARDS_MANIFEST)))["shards"]
    if not written:
        raise StageError(f"no documents left to encode: all {rows} were rejected (see {ctx.run.rejects(NAME)})")
    if not any(entry["split"] == "train" for entry in written):
        raise StageError(f"every document fell into the val split; lower --val-fraction "
                         f"(now {ctx.config['val_fraction']}) or add documents")


def execute(ctx: StageContext) -> None:
    config = ctx.config
    if not 0.0 <= config["val_fraction"] < 1.0:
        raise StageError(f"--val-fraction must lie in [0, 1), got {config['val_fraction']}")
    if config["shard_tokens"] < 1:
        raise StageError(f"--shard-tokens must be positive, got {config['shard_tokens']}")
    source = layout.require_documents(ctx.run)
    _, rows = layout.check_documents(source.files, layout.TEXT_COLUMNS)
    if rows < 2:
        raise StageError(f"{source.pattern}: {rows} document(s); a train and a val shard need at least 2")
    tokenizer_path, tokenizer = tokenizer_info(ctx.run, config["encoder"])
    log.info("shards: %d documents from %s, vocabulary %d (eot %d, %s), encoding with %s",
             rows, source.pattern, tokenizer.vocab_size, tokenizer.eot_id, tokenizer.dtype, tokenizer.engine)
    job = ShardJob(source.pattern, [f.path for f in source.files], tokenizer_path, ctx.run.path(layout.SHARDS),
                   ctx.run.rejects(NAME), tokenizer, config["val_fraction"], config["shard_tokens"],
                   ctx.run.path(layout.SHARDS_WORK))
    ctx.run_pipeline(lambda p: build_pipeline(p, job))
    ctx.run.clear(layout.SHARDS_WORK)
    storage.delete([job.work])
    check_splits(ctx, rows)
    try:
        result = verify_shards(ctx.run)
    except shard_format.ShardFormatError as error:
        raise StageError(f"verification after writing failed: {error}") from None
    ctx.count("shards.verified", result.shards)
    log.info("shards: %d shards verified: %s", result.shards,
             ", ".join(f"{s} {result.documents[s]:,} docs / {result.tokens[s]:,} tokens" for s in SPLITS))


def external_inputs(run: RunDir, config: dict) -> list[FileEntry]:
    source = layout.find_documents(run)
    return (source.files if source else []) + storage.match(run.path(layout.TOKENIZER_JSON))


def upstream(run: RunDir, config: dict) -> list[str]:
    source = layout.find_documents(run)
    return (source.upstream if source else []) + ["tokenizer"]


@dataclass(frozen=True)
class ShardsOptions:
    """The shards stage's options (flags and [shards] keys)."""

    val_fraction: float = field(default=0.0005, metadata={"min": 0, "max": 1,
        "help": "share of documents (by a hash of doc_id) in the val split; at least one document"})
    shard_tokens: int = field(default=100_000_000, metadata={"min": 1, "help": "about this many tokens per shard"})
    encoder: str = field(default="auto", metadata={
        "help": "encoding engine: tiktoken on our BPE files (ids checked equal), tokenizers, or auto",
        "choices": ENGINES})


STAGE = Stage(
    name=NAME,
    help="encode the documents with the run's tokenizer into Arrow token shards (train/val) and manifest.json",
    options=options_of(ShardsOptions),
    execute=execute,
    external_inputs=external_inputs,
    upstream=upstream,
    outputs=[layout.SHARDS],
    actions=[Action("--verify", "only check the written shards against manifest.json (checksums, dtype, eot, "
                                "vocabulary, totals) and exit", verify_command)],
)
