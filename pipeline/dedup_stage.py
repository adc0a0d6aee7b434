"""The dedup stage: exact and MinHash-LSH near-duplicate removal and test-set decontamination of RUN/docs into RUN/dedup.

Only small, fixed records cross the shuffles (doc ids, hashes, band keys, DocRef locators); each document's shingles
and signature are written once to a sketch record in the work folder and read back where a pair is verified, and the
survivors are copied from the input files against the set of removed ids. The one step that sees a global view is
the union-find over the verified duplicate edges (see docs/dedup.md for its bound).
"""
from __future__ import annotations

import heapq
import io
import itertools
import logging
import math
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from webtext.dedup import decontam
from webtext.dedup.components import clusters, star_clusters
from webtext.dedup.lsh import (BAND_KEY_BYTES, DEFAULT_FALSE_NEGATIVE_WEIGHT, Banding, band_keys, bucket_pairs,
                                optimal_bands)
from webtext.dedup.minhash import MinHashConfig, MinHasher, estimated_jaccard, jaccard, permutations
from webtext.dedup.sketch import DocRef, DocSketch, SketchRecord, decode_record, encode_record, sketch_documents
from webtext.dedup.survivors import pick_survivor
from webtext.dedup.text import words
from . import layout, memory, sinks, storage
from .parquet_source import ReadParquetBatches
from .progress import Progress
from .stage_options import options_of
from .stage import Stage, StageContext, StageError

log = logging.getLogger(__name__)

NAME = "dedup"
SKETCH_COLUMNS = ["doc_id", "url", "score", "text"]  # what sketching reads; survivors are copied from the files whole
READ_BATCH_ROWS = 256  # document rows decoded at a time, whatever the input files' row groups
TOP_DOCUMENTS = 20  # contaminated documents listed per eval set in contamination.json
SKETCH_PREFIX = "sketch"  # the work files of sketch records: SKETCH_PREFIX-<16 hex digits> (storage.AppendFile)

CLUSTER_SCHEMA = pa.schema([
    ("cluster_id", pa.string()),  # the survivor's doc_id
    ("doc_id", pa.string()),
    ("kept", pa.bool_()),
    ("jaccard", pa.float64()),  # MinHash estimate of the Jaccard similarity to the survivor
    ("reason", pa.string()),  # exact-duplicate, near-duplicate, or "" for the survivor
])
PAIRS_SCHEMA = pa.schema([
    ("doc_id_a", pa.string()),  # the smaller doc_id
    ("doc_id_b", pa.string()),
    ("jaccard", pa.float64()),  # exact Jaccard similarity of the two shingle sets, at least --threshold
])
CONTAMINATION_SCHEMA = pa.schema([
    ("doc_id", pa.string()),
    ("url", pa.string()),
    ("eval_set", pa.string()),
    ("ngrams", pa.int64()),  # distinct n-grams of the document
    ("matched", pa.int64()),  # of those, how many the eval set's Bloom filter holds
    ("overlap", pa.float64()),  # matched / ngrams
    ("dropped", pa.bool_()),
])
NGRAM_HITS_SCHEMA = pa.schema([("eval_set", pa.string()), ("ngram", pa.int64()), ("in_kept", pa.bool_())])

@dataclass(frozen=True)
class DedupOptions:
    """The dedup stage's options (flags and [dedup] keys)."""

    input_docs: str | None = field(default=None, metadata={
        "help": "docs Parquet files to dedup (glob; default: RUN/docs/docs-*.parquet); any Parquet with doc_id, url, "
                "domain, text (strings) and score (integer) works"})
    threshold: float = field(default=0.8, metadata={"min": 0, "max": 1,
        "help": "Jaccard similarity of word shingles at which two documents are near-duplicates"})
    ngram: int = field(default=5, metadata={"min": 1, "help": "words per shingle"})
    num_perm: int = field(default=128, metadata={"min": 1, "help": "MinHash permutations"})
    minhash_seed: int = field(default=1, metadata={"min": 0, "help": "seed of the MinHash permutations (datasketch's)"})
    bands: int = field(default=0, metadata={"min": 0, "help": "LSH bands (with --rows; 0: chosen for --threshold)"})
    rows: int = field(default=0, metadata={"min": 0, "help": "LSH rows per band (with --bands)"})
    false_negative_weight: float = field(default=DEFAULT_FALSE_NEGATIVE_WEIGHT, metadata={"min": 0, "max": 1,
        "help": "weight of missed pairs (against extra candidates, 1 minus it) when choosing bands"})
    clustering: str = field(default="components", metadata={
        "help": "components: a cluster is a connected component of the verified pairs (one survivor each); star: "
                "every removed document is itself verified against its survivor", "choices": ("components", "star")})
    max_bucket_size: int = field(default=100, metadata={"min": 1,
        "help": "an LSH bucket larger than this pairs each member with its best one only"})
    eval_set: tuple[str, ...] = field(default=(), metadata={
        "help": "evaluation sets NAME=PATH … to measure (and with --decontaminate remove) overlap with; plain text "
                "(paragraphs) or JSONL with a text field"})
    eval_ngram: int = field(default=decontam.DEFAULT_NGRAM, metadata={"min": 1,
        "help": "words per n-gram for decontamination (GPT-2: 8)"})
    decontaminate: bool = field(default=False, metadata={
        "help": "drop documents whose overlap with an eval set is above --contamination-threshold"})
    contamination_threshold: float = field(default=0.1, metadata={"min": 0, "max": 1,
        "help": "share of a document's distinct n-grams found in one eval set above which it is contaminated"})
    bloom_fp_rate: float = field(default=1e-6, metadata={"min": 0, "max": 1,
        "help": "target false-positive rate of each eval set's Bloom filter"})
    bloom_max_mb: int = field(default=256, metadata={"min": 1,
        "help": "memory cap of each Bloom filter (a fuller filter has a higher false-positive rate)"})
    dedup_shards: int = field(default=0, metadata={"min": 0,
        "help": "files of each output (docs, clusters, pairs, contamination); docs are merged from sorted work files, "
                "the others sorted in one worker's memory "
                "(0: one per 256 MiB of input documents)"})


@dataclass(frozen=True)
class DedupPlan:
    """The resolved settings every worker needs."""

    input_pattern: str
    threshold: float
    minhash: MinHashConfig
    banding: Banding
    max_bucket_size: int
    clustering: str
    eval_ngram: int
    eval_filters: dict  # eval set name -> path of its Bloom filter file
    decontaminate: bool
    contamination_threshold: float
    num_shards: int
    work: str  # the run's dedup work folder: Bloom filters, sketch records, survivors before merging
    lsh_partitions: int  # groups of band keys, each bucketed in one worker's memory
    permutations: tuple  # the MinHash permutations (a, b), computed once in the driver


# -- inputs ---------------------------------------------------------------------------------------------------------


def input_pattern(run: layout.RunDir, config: dict) -> str:
    return config.get("input_docs") or run.path(layout.DOCS_GLOB)


def input_files(run: layout.RunDir, config: dict) -> list[storage.FileEntry]:
    return storage.match(input_pattern(run, config))


def upstream(run: layout.RunDir, config: dict) -> list[str]:
    """The crawl, when dedup reads RUN/docs and nobody marked them as placed there by hand; none with --input-docs."""
    stage = None if config.get("input_docs") else layout.docs_stage(run)
    return [stage] if stage else []


def eval_files(config: dict) -> list[storage.FileEntry]:
    try:
        paths = [decontam.parse_eval_spec(spec)[1] for spec in config.get("eval_set") or []]
    except ValueError as error:
        raise StageError(str(error)) from None
    return storage.match_each(paths, "--eval-set")


def resolve_banding(config: dict) -> Banding:
    bands, rows = config["bands"], config["rows"]
    if bands or rows:
        if bands < 1 or rows < 1:
            raise StageError("--bands and --rows go together, both at least 1")
        if bands * rows > config["num_perm"]:
            raise StageError(f"--bands {bands} x --rows {rows} needs {bands * rows} MinHash values; "
                             f"--num-perm is {config['num_perm']}")
        return Banding(bands, rows)
    try:
        return optimal_bands(config["threshold"], config["num_perm"], config["false_negative_weight"])
    except ValueError as error:
        raise StageError(f"cannot choose LSH bands for --threshold {config['threshold']}: {error} "
                         "(or set --bands and --rows)") from None


def check_config(config: dict) -> None:
    if not 0.0 < config["threshold"] <= 1.0:
        raise StageError(f"--threshold must be in (0, 1], got {config['threshold']}")
    for key in ("ngram", "num_perm", "eval_ngram", "max_bucket_size"):
        if config[key] < 1:
            raise StageError(f"--{key.replace('_', '-')} must be at least 1")
    if config["dedup_shards"] < 0:
        raise StageError("--dedup-shards must be at least 1, or 0 for one per 256 MiB of input")
    if not 0.0 < config["false_negative_weight"] < 1.0:
        raise StageError(f"--false-negative-weight must be between 0 and 1, got {config['false_negative_weight']}")
    if not 0.0 < config["bloom_fp_rate"] < 1.0:
        raise StageError("--bloom-fp-rate must be between 0 and 1")
    if not 0.0 <= config["contamination_threshold"] < 1.0:
        raise StageError("--contamination-threshold must be in [0, 1)")
    if config["decontaminate"] and not config.get("eval_set"):
        raise StageError("--decontaminate needs at least one --eval-set NAME=PATH")
    resolve_banding(config)  # an impossible banding fails before anything is read


def load_eval_sets(ctx: StageContext) -> dict[str, decontam.EvalSet]:
    """Each --eval-set read, its n-grams collected and its Bloom filter built (in the driver; they are small)."""
    config, sets = ctx.config, {}
    for spec in config.get("eval_set") or []:
        name, path = decontam.parse_eval_spec(spec)
        if name in sets:
            raise StageError(f"--eval-set {name} is given twice")
        try:
            sets[name] = decontam.build_eval_set(name, path, storage.read_bytes(path), config["eval_ngram"],
                                                 config["bloom_fp_rate"], config["bloom_max_mb"] << 20)
        except (ValueError, UnicodeDecodeError) as error:
            raise StageError(f"--eval-set {spec}: {error}") from None
        log.info("eval set %s: %d examples, %d distinct %d-grams, Bloom filter %.1f MB, false-positive rate %.2g",
                 name, sets[name].examples, len(sets[name].ngrams), config["eval_ngram"],
                 sets[name].bloom.nbytes / 2**20, sets[name].bloom.false_positive_rate())
    return sets


def save_filters(ctx: StageContext, eval_sets: dict[str, decontam.EvalSet]) -> dict[str, str]:
    """The Bloom filters go to files that each worker loads once, rather than inside the pipeline graph."""
    paths = {}
    for name, eval_set in eval_sets.items():
        path = ctx.run.path(layout.DEDUP_WORK, f"bloom-{len(paths):03d}.npz")
        buffer = io.BytesIO()
        np.savez(buffer, bits=eval_set.bloom.bits, num_bits=eval_set.bloom.params.num_bits,
                 num_hashes=eval_set.bloom.params.num_hashes, items=eval_set.bloom.items)
        storage.write_bytes(path, buffer.getvalue())
        paths[name] = path
    return paths


def load_filter(path: str) -> decontam.BloomFilter:
    arrays = np.load(io.BytesIO(storage.read_bytes(path)))
    bloom = decontam.BloomFilter(decontam.BloomParams(int(arrays["num_bits"]), int(arrays["num_hashes"])))
    bloom.bits = arrays["bits"]
    bloom.items = int(arrays["items"])
    return bloom


# -- sketch records in the work folder -------------------------------------------------------------------------------


def sketch_file_number(name: str) -> int:
    """A sketch file's name (AppendFile's PREFIX-<16 hex digits>) as the 64-bit number of its band records."""
    prefix, digits = name.rsplit("-", 1)
    if prefix != SKETCH_PREFIX or len(digits) != 16:
        raise ValueError(f"not a sketch file name: {name!r}")
    return int(digits, 16)


def sketch_file_name(number: int) -> str:
    return f"{SKETCH_PREFIX}-{number:016x}"


class SketchWriter:
    """Appends the sketch records of one bundle to a file of its own in the work folder; hands out their DocRefs."""

    def __init__(self, folder: str):
        self.file = storage.AppendFile(folder, SKETCH_PREFIX)

    def add(self, sketch: DocSketch) -> DocRef:
        record = encode_record(sketch)
        start = self.file.append(record)
        return DocRef(sketch.doc_id, sketch.score, sketch.length, self.file.name, start, len(record))

    def close(self) -> None:
        self.file.close()


class SketchReader:
    """Reads sketch records back by DocRef, keeping a few files open and the latest records at hand."""

    OPEN_FILES = 8
    CACHED_RECORDS = 4096

    def __init__(self, folder: str):
        self.folder = folder
        self.handles: OrderedDict[str, object] = OrderedDict()
        self.records: OrderedDict[tuple[str, int], SketchRecord] = OrderedDict()

    def read(self, ref: DocRef) -> SketchRecord:
        key = (ref.sketch_file, ref.offset)
        record = self.records.get(key)
        if record is None:
            handle = self._handle(ref.sketch_file)
            handle.seek(ref.offset)
            record = self.records[key] = decode_record(handle.read(ref.size))
            if len(self.records) > self.CACHED_RECORDS:
                self.records.popitem(last=False)
        else:
            self.records.move_to_end(key)
        return record

    def _handle(self, name: str):
        handle = self.handles.get(name)
        if handle is None:
            handle = self.handles[name] = storage.open_read(storage.join(self.folder, name))
            if len(self.handles) > self.OPEN_FILES:
                self.handles.popitem(last=False)[1].close()
        else:
            self.handles.move_to_end(name)
        return handle

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()
        self.records.clear()


# -- step 1: sketch every document (and measure its overlap with the eval sets) ---------------------------------------

# What crosses the shuffle for a document with words: (exact text hash, its DocEntry: DocRef, URL and LSH band keys
# packed in one byte string, about 80 + 10 x bands bytes). DocRefs cross the later shuffles as plain tuples
# (DocRef.to_tuple), a few dozen bytes each.
RefTuple = tuple[str, int, int, str, int, int]
KeyedDoc = tuple[str, bytes]
_DOC_ENTRY = struct.Struct("<qqQQIHH")  # score, length, sketch file number, offset, size, bytes of doc_id and URL


def pack_doc_entry(ref: DocRef, url: str, keys: bytes) -> bytes:
    """One byte string for the exact-duplicate shuffle: the local runner holds it as one object, not a dozen."""
    doc_id, url_bytes = ref.doc_id.encode("utf-8", "surrogatepass"), url.encode("utf-8", "surrogatepass")
    return (_DOC_ENTRY.pack(ref.score, ref.length, sketch_file_number(ref.sketch_file), ref.offset, ref.size,
                            len(doc_id), len(url_bytes)) + doc_id + url_bytes + keys)


def unpack_doc_entry(entry: bytes) -> tuple[DocRef, str, bytes]:
    score, length, file, offset, size, id_bytes, url_bytes = _DOC_ENTRY.unpack_from(entry)
    start = _DOC_ENTRY.size
    doc_id = entry[start:start + id_bytes].decode("utf-8", "surrogatepass")
    url = entry[start + id_bytes:start + id_bytes + url_bytes].decode("utf-8", "surrogatepass")
    ref = DocRef(doc_id, score, length, sketch_file_name(file), offset, size)
    return ref, url, entry[start + id_bytes + url_bytes:]


@beam.typehints.with_output_types(KeyedDoc, rejects=tuple[str, dict], contamination=dict,
                                  ngram_hits=tuple[tuple[str, int], bool])
class SketchDocs(beam.DoFn):
    """Document row -> its sketch record in the work folder and a KeyedDoc; contaminated documents (with
    --decontaminate) -> rejects instead. Documents without words are nobody's duplicates: they skip dedup and stay."""

    def __init__(self, plan: DedupPlan):
        self.plan = plan

    def setup(self):
        self.hasher = MinHasher(self.plan.minhash, self.plan.permutations)
        self.filters = {name: load_filter(path) for name, path in self.plan.eval_filters.items()}
        self.read = Metrics.counter(NAME, "docs.read")
        self.no_words = Metrics.counter(NAME, "docs.without-words")
        self.with_overlap = Metrics.counter(NAME, "docs.overlapping-eval-sets")
        self.progress = Progress(log, "dedup: sketching (this worker)")

    def start_bundle(self):
        self.writer = SketchWriter(self.plan.work)

    def finish_bundle(self):
        self.writer.close()
        memory.release()

    def process(self, row: dict) -> Iterator:
        self.read.inc()
        self.progress.add(docs=1)
        doc_id, url, text = row["doc_id"], row.get("url") or "", row.get("text") or ""
        text_words = words(text)
        if not text_words:
            self.no_words.inc()
        if self.filters:
            overlaps = decontam.document_overlaps(decontam.ngram_hashes(text_words, self.plan.eval_ngram), self.filters)
            reason = self._contamination_reason(overlaps)
            yield from self._report_overlaps(doc_id, url, overlaps, dropped=reason is not None)
            if reason is not None:
                yield beam.pvalue.TaggedOutput("rejects", (doc_id, layout.reject(
                    NAME, "contaminated", reason, url=url, item_id=doc_id)))
                return
        if not text_words:
            return
        sketch = sketch_documents([(doc_id, url, row.get("score") or 0, text, text_words)], self.hasher)[0]
        keys = b"".join(band_keys(sketch.signature_array(), self.plan.banding))
        yield sketch.text_hash, pack_doc_entry(self.writer.add(sketch), url, keys)

    def _contamination_reason(self, overlaps: list[decontam.Overlap]) -> str | None:
        """With --decontaminate, why the document goes: its largest overlap above the threshold; else None."""
        over = [o for o in overlaps if o.share > self.plan.contamination_threshold]
        if not self.plan.decontaminate or not over:
            return None
        worst = max(over, key=lambda o: (o.share, o.eval_set))
        return (f"{worst.eval_set}: {worst.matched} of {worst.ngrams} distinct {self.plan.eval_ngram}-grams "
                f"({worst.share:.1%}) > {self.plan.contamination_threshold:.1%}")

    def _report_overlaps(self, doc_id: str, url: str, overlaps: list[decontam.Overlap], dropped: bool) -> Iterator:
        """A contamination row per overlapping eval set, and each matched n-gram for the eval sets' shares."""
        if overlaps:
            self.with_overlap.inc()
        for overlap in overlaps:
            yield beam.pvalue.TaggedOutput("contamination", {
                "doc_id": doc_id, "url": url, "eval_set": overlap.eval_set, "ngrams": overlap.ngrams,
                "matched": overlap.matched, "overlap": overlap.share, "dropped": dropped})
            for ngram in overlap.matched_hashes.view(np.int64).tolist():
                yield beam.pvalue.TaggedOutput("ngram_hits", ((overlap.eval_set, ngram), not dropped))


def count_repeats(element) -> Iterator[int]:
    _, rows = element
    if rows > 1:
        Metrics.counter(NAME, "docs.repeated-doc-id").inc(rows - 1)
    return iter(())


# -- step 2: exact duplicates ----------------------------------------------------------------------------------------


@beam.typehints.with_output_types(tuple[RefTuple, bytes], members=tuple[str, tuple[str, str]])
class PickExactSurvivor(beam.DoFn):
    """All documents with one normalised text -> the survivor's (DocRef, band keys) (main) and the others as
    (survivor_id, (id, url))."""

    def setup(self):
        self.groups = Metrics.counter(NAME, "clusters.exact")

    def process(self, element) -> Iterator:
        _, entries = element
        docs = [unpack_doc_entry(entry) for entry in entries]
        best, _, keys = pick_survivor(docs, rank=lambda doc: doc[0])
        yield best.to_tuple(), keys
        duplicates = 0
        for ref, url, _ in docs:
            if ref.doc_id != best.doc_id:
                duplicates += 1
                yield beam.pvalue.TaggedOutput("members", (best.doc_id, (ref.doc_id, url)))
        if duplicates:
            self.groups.inc()


# -- step 3: LSH candidate pairs -------------------------------------------------------------------------------------


BAND_RECORDS_PER_PARTITION = 200_000  # band records one LSH partition holds in memory (6 MB)
PACK_RECORDS = 8192  # band records written to a partition's work file at a time
# A band record: the band key (band index, 64-bit digest) and where the document's sketch record lies. 30 bytes,
# the same for every document; BucketPairs reads the rank (doc_id, score, length) only of buckets with several members.
BAND_RECORD = np.dtype([("band", ">u2"), ("digest", ">u8"), ("file", ">u8"), ("offset", "<u8"), ("size", "<u4")])
class PackBands(beam.DoFn):
    """(DocRef, band keys) -> band records appended to one work file per bundle and LSH partition; yields (partition,
    file name) for each file. Only those names cross the shuffle: the records go from the file to BucketPairs."""

    def __init__(self, partitions: int, work: str):
        self.partitions, self.work = partitions, work

    def start_bundle(self):
        self.pending: dict[int, list] = {}
        self.files: dict[int, storage.AppendFile] = {}

    def process(self, entry: tuple[RefTuple, bytes]) -> Iterator:
        (_, _, _, sketch_file, offset, size), keys = entry
        file = sketch_file_number(sketch_file)
        for start in range(0, len(keys), BAND_KEY_BYTES):
            key = keys[start:start + BAND_KEY_BYTES]
            partition = int.from_bytes(key[-4:], "big") % self.partitions
            pending = self.pending.setdefault(partition, [])
            pending.append((int.from_bytes(key[:2], "big"), int.from_bytes(key[2:], "big"), file, offset, size))
            if len(pending) >= PACK_RECORDS:
                self._write(partition)
        return iter(())  # the file names come at the bundle's end

    def _write(self, partition: int) -> None:
        if partition not in self.files:
            self.files[partition] = storage.AppendFile(self.work, f"bands-{partition:05d}")
        self.files[partition].append(np.array(self.pending.pop(partition), dtype=BAND_RECORD).tobytes())

    def finish_bundle(self):
        for partition in sorted(self.pending):
            self._write(partition)
        for partition, file in sorted(self.files.items()):
            file.close()
            yield WindowedValue((partition, file.name), MIN_TIMESTAMP, [GlobalWindow()])
        self.files = {}
        memory.release()


def lsh_partitions(documents: int, bands: int) -> int:
    return max(1, math.ceil(documents * bands / BAND_RECORDS_PER_PARTITION))


class DocRefs:
    """DocRefs of a bucket's tuples, iterable more than once like the bucket itself."""

    def __init__(self, members: Iterable[RefTuple]):
        self.members = members

    def __iter__(self) -> Iterator[DocRef]:
        return (DocRef(*member) for member in self.members)


def shared_buckets(records: np.ndarray) -> Iterator[np.ndarray]:
    """The band records of each bucket (equal band and digest) that has at least two members."""
    records = records[np.lexsort((records["digest"], records["band"]))]
    band, digest = records["band"], records["digest"]
    new_key = np.ones(len(records), dtype=bool)
    new_key[1:] = (band[1:] != band[:-1]) | (digest[1:] != digest[:-1])
    starts = np.flatnonzero(new_key)
    ends = np.append(starts[1:], len(records))
    shared = ends - starts > 1
    for start, end in zip(starts[shared].tolist(), ends[shared].tolist()):
        yield records[start:end]


class BucketPairs(beam.DoFn):
    """One LSH partition's band record files -> the candidate pairs of each of its buckets (equal band keys); the
    members' ranks are read from their sketch records."""

    def __init__(self, max_bucket_size: int, work: str):
        self.max_bucket_size, self.work = max_bucket_size, work

    def setup(self):
        self.stars = Metrics.counter(NAME, "lsh.buckets-paired-as-star")
        self.reader = SketchReader(self.work)

    def teardown(self):
        self.reader.close()

    def process(self, element) -> Iterator[tuple[tuple[str, str], tuple[RefTuple, RefTuple]]]:
        _, names = element
        records = np.concatenate([np.frombuffer(storage.read_bytes(storage.join(self.work, name)), dtype=BAND_RECORD)
                                  for name in sorted(names)])
        for bucket in shared_buckets(records):
            members = [self._ref(record) for record in bucket.tolist()]
            if len(members) > self.max_bucket_size:
                self.stars.inc()
            for first, second in bucket_pairs(DocRefs(members), self.max_bucket_size):
                yield (first.doc_id, second.doc_id), (first.to_tuple(), second.to_tuple())
        del records
        memory.release()

    def _ref(self, record: tuple) -> RefTuple:
        _, _, file, offset, size = record
        name = sketch_file_name(file)
        rank = self.reader.read(DocRef("", 0, 0, name, offset, size)).rank
        return rank.doc_id, rank.score, rank.length, name, offset, size


def first_of(element):
    _, pairs = element
    return next(iter(pairs))


# -- step 4: verification of candidate pairs --------------------------------------------------------------------------


class VerifyPairs(beam.DoFn):
    """(DocRef a, DocRef b) -> (a, b, exact Jaccard) when the two shingle sets, read back from the work folder,
    reach the threshold."""

    def __init__(self, threshold: float, work: str):
        self.threshold, self.work = threshold, work

    def setup(self):
        self.candidates = Metrics.counter(NAME, "pairs.candidates")
        self.verified = Metrics.counter(NAME, "pairs.verified")
        self.reader = SketchReader(self.work)

    def teardown(self):
        self.reader.close()

    def process(self, pair: tuple[RefTuple, RefTuple]) -> Iterator[tuple[DocRef, DocRef, float]]:
        first, second = DocRef(*pair[0]), DocRef(*pair[1])
        self.candidates.inc()
        similarity = jaccard(self.reader.read(first).shingles, self.reader.read(second).shingles)
        if similarity >= self.threshold:
            self.verified.inc()
            yield first, second, similarity


# -- step 5: connected components (the one bounded step) ---------------------------------------------------------------


class Components(beam.DoFn):
    """All verified edges (one key) -> (survivor_id, member) for every member of every near-duplicate cluster.

    Holds a union-find (or, for stars, the adjacency) of the documents that have an edge: memory grows with the
    near-duplicate documents and their verified pairs only, never with the corpus.
    """

    def __init__(self, clustering: str):
        self.clustering = clustering

    def setup(self):
        self.clusters = Metrics.counter(NAME, "clusters.near")

    def process(self, element) -> Iterator[tuple[str, DocRef]]:
        _, edges = element
        find_clusters = star_clusters if self.clustering == "star" else clusters
        for survivor, members in find_clusters((first, second) for first, second, _ in edges):
            self.clusters.inc()
            for member in members:
                yield survivor.doc_id, member


@beam.typehints.with_output_types(dict, rejects=tuple[str, dict], near=tuple[str, tuple[str, float]])
class NearClusterRows(beam.DoFn):
    """One near-duplicate cluster -> its clusters rows, near-duplicate rejects, and each member's (survivor, Jaccard).

    Members' URLs and signatures are read back from their sketch records."""

    def __init__(self, work: str):
        self.work = work

    def setup(self):
        self.removed = Metrics.counter(NAME, "docs.near-duplicates")
        self.reader = SketchReader(self.work)

    def teardown(self):
        self.reader.close()

    def process(self, element) -> Iterator:
        survivor_id, members = element
        records = {ref.doc_id: self.reader.read(ref) for ref in members}
        survivor_signature = records[survivor_id].signature
        for doc_id in sorted(records):
            kept = doc_id == survivor_id
            similarity = estimated_jaccard(records[doc_id].signature, survivor_signature)
            yield {"cluster_id": survivor_id, "doc_id": doc_id, "kept": kept, "jaccard": similarity,
                   "reason": "" if kept else "near-duplicate"}
            yield beam.pvalue.TaggedOutput("near", (doc_id, (survivor_id, similarity)))
            if not kept:
                self.removed.inc()
                yield beam.pvalue.TaggedOutput("rejects", (doc_id, layout.reject(
                    NAME, "near-duplicate", f"survivor {survivor_id} (estimated Jaccard {similarity:.3f})",
                    url=records[doc_id].url, item_id=doc_id)))


@beam.typehints.with_output_types(dict, rejects=tuple[str, dict])
class ExactClusterRows(beam.DoFn):
    """(exact survivor E, {members: [(id, url)…], near: [(S, Jaccard E~S)]}) -> rows and exact-duplicate rejects.

    The members of E's exact group join E's near-duplicate cluster when E has one; otherwise E heads its own cluster.
    """

    def setup(self):
        self.removed = Metrics.counter(NAME, "docs.exact-duplicates")

    def process(self, element) -> Iterator:
        exact_survivor, grouped = element
        members = grouped["members"]
        if not any(True for _ in members):
            return
        near = list(grouped["near"])
        cluster_id, similarity = near[0] if near else (exact_survivor, 1.0)
        if not near:
            yield {"cluster_id": cluster_id, "doc_id": exact_survivor, "kept": True, "jaccard": 1.0, "reason": ""}
        detail = f"survivor {cluster_id}" + ("" if cluster_id == exact_survivor else f" (same text as {exact_survivor})")
        for doc_id, url in members:
            self.removed.inc()
            yield {"cluster_id": cluster_id, "doc_id": doc_id, "kept": False, "jaccard": similarity,
                   "reason": "exact-duplicate"}
            yield beam.pvalue.TaggedOutput("rejects", (doc_id, layout.reject(
                NAME, "exact-duplicate", detail, url=url, item_id=doc_id)))


# -- step 6: survivors, streamed from the input files against the removed doc_ids -------------------------------------


def align(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with the unified schema's columns in its order (nulls where this file lacks one)."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


SPILL_RUN_ROWS = 1024  # survivors sorted at once into one work file per output shard


class SpillSurvivors(beam.DoFn):
    """(index, input file) -> its surviving rows in doc_id-sorted runs of at most SPILL_RUN_ROWS, one work file per
    run and output shard; yields (shard, work file). Reads a row group batch at a time and holds one run."""

    def __init__(self, plan: DedupPlan, schema: pa.Schema):
        self.plan, self.schema = plan, schema

    def setup(self):
        self.written = Metrics.counter(NAME, "docs.written")

    def process(self, element, removed: Iterable[str]) -> Iterator[tuple[int, str]]:
        index, path = element
        removed = set(removed)
        pending: list[pa.Table] = []
        runs = itertools.count()
        for batch in storage.iter_batches([path], batch_rows=READ_BATCH_ROWS):
            table = pa.Table.from_batches([batch])
            keep = [doc_id not in removed for doc_id in table.column("doc_id").to_pylist()]
            pending.append(align(table.filter(pa.array(keep, pa.bool_())), self.schema))
            if sum(map(len, pending)) >= SPILL_RUN_ROWS:
                yield from self._spill(pa.concat_tables(pending), index, next(runs))
                pending = []
        if pending:
            yield from self._spill(pa.concat_tables(pending), index, next(runs))
        memory.release()

    def _spill(self, survivors: pa.Table, index: int, run: int) -> Iterator[tuple[int, str]]:
        self.written.inc(len(survivors))
        by_doc_id = pa.compute.sort_indices(survivors, [("doc_id", "ascending")]).to_numpy()
        doc_ids = survivors.column("doc_id").take(by_doc_id).to_pylist()
        shard_of = np.array([sinks.stable_shard(d, self.plan.num_shards) for d in doc_ids], dtype=np.int64)
        for shard in np.unique(shard_of).tolist():
            part = survivors.take(pa.array(by_doc_id[shard_of == shard]))
            spill = storage.join(self.plan.work, f"survivors-{shard:05d}-{index:05d}-{run:05d}.parquet")
            storage.write_parquet_table(spill, part, row_group_rows=SpillCursor.BATCH_ROWS)
            yield shard, spill


class SpillCursor:
    """Reads one doc_id-sorted survivors work file front to back, a row group of BATCH_ROWS rows at a time, so a
    shard's merge holds one small row group per work file. (ParquetFile.iter_batches over a Python file object would
    read most of the file ahead.)"""

    BATCH_ROWS = 64

    def __init__(self, path: str):
        self.handle = storage.open_read(path)
        parquet = pq.ParquetFile(self.handle)
        self.batches = (parquet.read_row_group(index) for index in range(parquet.metadata.num_row_groups))
        self.buffer: pa.Table | None = None

    def take(self, rows: int) -> pa.Table:
        """The next `rows` rows."""
        pieces = []
        while rows:
            if self.buffer is None or len(self.buffer) == 0:
                self.buffer = next(self.batches)
            piece = self.buffer.slice(0, rows)
            self.buffer = self.buffer.slice(len(piece))
            pieces.append(piece)
            rows -= len(piece)
        return pa.concat_tables(pieces)

    def close(self) -> None:
        self.handle.close()


def doc_ids_of(path: str) -> list[str]:
    with storage.open_parquet(path) as parquet:
        return parquet.read(columns=["doc_id"]).column("doc_id").to_pylist()


class WriteSurvivorShard(beam.DoFn):
    """(shard, its work files) -> docs-SSSSS-of-NNNNN.parquet, the rows of all inputs merged in doc_id order.

    Streams: the merge order comes from the doc_id columns alone, then rows are copied a chunk at a time, each work
    file read front to back."""

    CHUNK_ROWS = 4096

    def __init__(self, directory: str, num_shards: int, schema: pa.Schema):
        self.directory, self.num_shards, self.schema = directory, num_shards, schema

    def process(self, element) -> Iterator[str]:
        shard, spills = element
        spills = sorted(spills)
        ids = [doc_ids_of(p) for p in spills]
        order = heapq.merge(*[[(doc_id, s, i) for i, doc_id in enumerate(file_ids)] for s, file_ids in enumerate(ids)])
        del ids
        cursors = [SpillCursor(p) for p in spills]
        path = storage.join(self.directory, sinks.shard_name("docs", shard, self.num_shards))
        with storage.open_write_atomic(path) as handle, pq.ParquetWriter(handle, self.schema,
                                                                         compression="zstd") as writer:
            while chunk := list(itertools.islice(order, self.CHUNK_ROWS)):
                writer.write_table(self._gather(chunk, cursors))
        for cursor in cursors:
            cursor.close()
        memory.release()
        yield path

    def _gather(self, chunk: list[tuple[str, int, int]], cursors: list[SpillCursor]) -> pa.Table:
        """The chunk's rows in merge order: each file's rows of the chunk are consecutive in that file."""
        first: dict[int, int] = {}
        counts: dict[int, int] = {}
        for _, spill, row in chunk:
            first.setdefault(spill, row)
            counts[spill] = counts.get(spill, 0) + 1
        base, pieces = {}, []
        for spill in sorted(counts):
            base[spill] = sum(len(p) for p in pieces)
            pieces.append(cursors[spill].take(counts[spill]))
        table = pa.concat_tables(pieces)
        positions = [base[spill] + row - first[spill] for _, spill, row in chunk]
        return table.take(pa.array(positions, pa.int64())).cast(self.schema)


def merge_in_kept(flags: Iterable[bool]) -> bool:
    return any(flags)


def hit_row(element) -> dict:
    (eval_set, ngram), in_kept = element
    return {"eval_set": eval_set, "ngram": ngram, "in_kept": in_kept}


# -- the pipeline -----------------------------------------------------------------------------------------------------


@beam.ptransform_fn
def ExactDuplicates(keyed_docs):  # noqa: N802 (a PTransform)
    """KeyedDocs -> (survivors: one (DocRef, band keys) per normalised text, members: the others as
    (survivor_id, (id, url)))."""
    return (keyed_docs
            | "GroupByTextHash" >> beam.GroupByKey()
            | "PickSurvivor" >> beam.ParDo(PickExactSurvivor()).with_outputs("members", main="survivors"))


@beam.ptransform_fn
def CandidatePairs(survivors, max_bucket_size: int, partitions: int, work: str):  # noqa: N802
    """(DocRef, band keys) -> distinct (DocRef, DocRef) pairs that share at least one LSH band."""
    return (survivors
            | "PackBands" >> beam.ParDo(PackBands(partitions, work)).with_output_types(tuple[int, str])
            | "GroupByPartition" >> beam.GroupByKey()
            | "BucketPairs" >> beam.ParDo(BucketPairs(max_bucket_size, work))
            | "GroupByPair" >> beam.GroupByKey()
            | "OnePerPair" >> beam.Map(first_of))


@beam.ptransform_fn
def NearClusters(edges, clustering: str, work: str):  # noqa: N802
    """Verified edges -> cluster rows, near-duplicate rejects, and (member_id, (survivor_id, Jaccard))."""
    return (edges
            | "OneKey" >> beam.Map(lambda edge: (0, edge))
            | "AllEdges" >> beam.GroupByKey()
            | "Components" >> beam.ParDo(Components(clustering))
            | "GroupByCluster" >> beam.GroupByKey()
            | "ClusterRows" >> beam.ParDo(NearClusterRows(work)).with_outputs("rejects", "near", main="rows"))


@beam.ptransform_fn
def Survivors(removed_ids, plan: DedupPlan, schema: pa.Schema, files: list[str]):  # noqa: N802
    """The input files streamed against the removed doc_ids (a side input) -> (shard, its sorted work files)."""
    return (removed_ids.pipeline
            | "InputFiles" >> beam.Create(list(enumerate(files)))
            | "SpreadFiles" >> beam.Reshuffle()
            | "Spill" >> beam.ParDo(SpillSurvivors(plan, schema), removed=beam.pvalue.AsList(removed_ids))
            | "GroupSpills" >> beam.GroupByKey())


def build_pipeline(p: beam.Pipeline, ctx: StageContext, plan: DedupPlan, schema: pa.Schema, files: list[str]) -> None:
    out = ctx.run.path(layout.DEDUP)
    rows = (p
            | "ReadDocs" >> ReadParquetBatches(files, SKETCH_COLUMNS, READ_BATCH_ROWS)
            | "DocRows" >> beam.FlatMap(pa.RecordBatch.to_pylist).with_output_types(dict))
    _ = (rows
         | "DocIds" >> beam.Map(lambda row: (row["doc_id"], 1)).with_output_types(tuple[str, int])
         | "RowsPerDocId" >> beam.CombinePerKey(sum)
         | "CountRepeats" >> beam.FlatMap(count_repeats))
    sketched = rows | "Sketch" >> beam.ParDo(SketchDocs(plan)).with_outputs(
        "rejects", "contamination", "ngram_hits", main="docs")
    exact = sketched.docs | "ExactDuplicates" >> ExactDuplicates()
    pairs = exact.survivors | "CandidatePairs" >> CandidatePairs(plan.max_bucket_size, plan.lsh_partitions, plan.work)
    edges = pairs | "VerifiedPairs" >> beam.ParDo(VerifyPairs(plan.threshold, plan.work))
    near = edges | "NearClusters" >> NearClusters(plan.clustering, plan.work)
    exact_clusters = ({"members": exact.members, "near": near.near}
                      | "JoinExactGroups" >> beam.CoGroupByKey()
                      | "ExactClusterRows" >> beam.ParDo(ExactClusterRows()).with_outputs("rejects", main="rows"))
    rejects = ((sketched.rejects, exact_clusters.rejects, near.rejects)
               | "AllRejects" >> beam.Flatten().with_output_types(tuple[str, dict]))
    removed_ids = rejects | "RemovedIds" >> beam.Map(lambda entry: entry[0]).with_output_types(str)
    (removed_ids
     | "SurvivorsAndRejects" >> Survivors(plan, schema, files)
     | "WriteDocs" >> beam.ParDo(WriteSurvivorShard(out, plan.num_shards, schema)))

    ((near.rows, exact_clusters.rows)
     | "AllClusterRows" >> beam.Flatten()
     | "WriteClusters" >> sinks.WriteParquet(out, "clusters", CLUSTER_SCHEMA, plan.num_shards,
                                              shard_key=lambda r: r["cluster_id"],
                                              sort_key=lambda r: (r["cluster_id"], not r["kept"], r["doc_id"])))
    (edges
     | "PairRows" >> beam.Map(lambda e: {"doc_id_a": e[0].doc_id, "doc_id_b": e[1].doc_id, "jaccard": e[2]})
     | "WritePairs" >> sinks.WriteParquet(out, "pairs", PAIRS_SCHEMA, plan.num_shards,
                                           shard_key=lambda r: r["doc_id_a"],
                                           sort_key=lambda r: (r["doc_id_a"], r["doc_id_b"])))
    (rejects
     | "Rejects" >> beam.Map(lambda entry: entry[1])
     | "CountRejects" >> beam.ParDo(sinks.CountRejects(NAME))
     | "WriteRejects" >> sinks.WriteRejects(ctx.run.rejects(NAME), NAME))
    if plan.eval_filters:
        sketched.contamination | "WriteContamination" >> sinks.WriteParquet(
            out, "contamination", CONTAMINATION_SCHEMA, plan.num_shards,
            shard_key=lambda r: r["doc_id"], sort_key=lambda r: (r["doc_id"], r["eval_set"]))
        (sketched.ngram_hits
         | "InKept" >> beam.CombinePerKey(merge_in_kept)
         | "HitRows" >> beam.Map(hit_row)
         | "WriteHits" >> sinks.WriteParquet(plan.work, "ngram-hits", NGRAM_HITS_SCHEMA, plan.num_shards,
                                              shard_key=lambda r: r["eval_set"] + str(r["ngram"]),
                                              sort_key=lambda r: (r["eval_set"], r["ngram"])))


# -- the report ------------------------------------------------------------------------------------------------------


def contamination_report(ctx: StageContext, plan: DedupPlan, eval_sets: dict[str, decontam.EvalSet]) -> dict:
    """Per eval set: the share of its n-grams found in the corpus (exact) and the documents that contain them."""
    out = ctx.run.path(layout.DEDUP)
    found: dict[str, list[int]] = {name: [] for name in eval_sets}
    found_in_kept: dict[str, list[int]] = {name: [] for name in eval_sets}
    for row in storage.iter_rows(ctx.run.path(layout.DEDUP_WORK, "ngram-hits-*.parquet")):
        found[row["eval_set"]].append(row["ngram"])
        if row["in_kept"]:
            found_in_kept[row["eval_set"]].append(row["ngram"])
    docs = {name: {"documents": 0, "over_threshold": 0, "dropped": 0, "top": []} for name in eval_sets}
    for row in storage.iter_rows(storage.join(out, "contamination-*.parquet")):
        entry = docs[row["eval_set"]]
        entry["documents"] += 1
        entry["over_threshold"] += row["overlap"] > plan.contamination_threshold
        entry["dropped"] += row["dropped"]
        item = (row["overlap"], row["matched"], _reverse(row["doc_id"]), row)
        (heapq.heappush if len(entry["top"]) < TOP_DOCUMENTS else heapq.heappushpop)(entry["top"], item)
    report = {"ngram": plan.eval_ngram, "normalisation": "NFKC, case-folded letters/digits/marks, single spaces",
              "decontaminate": plan.decontaminate, "contamination_threshold": plan.contamination_threshold,
              "overlap": "share of a document's distinct n-grams found in the eval set's Bloom filter",
              "eval_sets": {}}
    for name, eval_set in eval_sets.items():
        matched, share = decontam.matched_share(_as_hashes(found[name]), eval_set.ngrams)
        matched_kept, share_kept = decontam.matched_share(_as_hashes(found_in_kept[name]), eval_set.ngrams)
        top = [{k: row[k] for k in ("doc_id", "url", "ngrams", "matched", "overlap", "dropped")}
               for *_, row in sorted(docs[name]["top"], key=lambda item: item[:3], reverse=True)]
        report["eval_sets"][name] = {
            **eval_set.summary(),
            "ngrams_in_corpus": matched, "share_in_corpus": share,
            "ngrams_after_decontamination": matched_kept, "share_after_decontamination": share_kept,
            "documents_with_overlap": docs[name]["documents"],
            "documents_over_threshold": docs[name]["over_threshold"],
            "documents_dropped": docs[name]["dropped"],
            "top_documents": top,
        }
        ctx.count(f"contamination.{name}.documents", docs[name]["documents"])
    return report


def _as_hashes(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64).view(np.uint64)


def _reverse(doc_id: str) -> tuple:
    """Sorts doc_ids descending inside an ascending heap, so ties keep the smallest doc_ids (1 ends the string)."""
    return tuple(-ord(c) for c in doc_id) + (1,)


def lsh_report(plan: DedupPlan) -> dict:
    curve = {f"{s:.2f}": round(float(plan.banding.collision_probability(s)), 4)
             for s in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)}
    return {"threshold": plan.threshold, "num_perm": plan.minhash.num_perm, "seed": plan.minhash.seed,
            "ngram": plan.minhash.ngram, "bands": plan.banding.bands, "rows": plan.banding.rows,
            "candidate_probability_at_jaccard": curve,
            "verification": "exact Jaccard of the shingle-hash sets >= threshold", "clustering": plan.clustering,
            "survivor_rule": "highest score, then longest text, then smallest doc_id"}


# -- the stage -------------------------------------------------------------------------------------------------------


AUTO_SHARD_BYTES = 256 << 20


def auto_shards(files: list[storage.FileEntry]) -> int:
    """Output files so that each holds about 256 MiB of (compressed) input: the writer sorts one in memory."""
    return max(1, math.ceil(sum(f.size for f in files) / AUTO_SHARD_BYTES))


def execute(ctx: StageContext) -> None:
    config = ctx.config
    check_config(config)
    files = input_files(ctx.run, config)
    if not files:
        raise StageError(f"no documents to dedup: nothing matches {input_pattern(ctx.run, config)} "
                         "(run `webtext crawl RUN` first, or give --input-docs GLOB)")
    schema, rows = layout.check_documents(files, layout.DOC_COLUMNS)
    eval_sets = load_eval_sets(ctx)
    plan = DedupPlan(
        input_pattern=input_pattern(ctx.run, config), threshold=config["threshold"],
        minhash=MinHashConfig(config["num_perm"], config["minhash_seed"], config["ngram"]),
        banding=resolve_banding(config), max_bucket_size=config["max_bucket_size"],
        clustering=config["clustering"], eval_ngram=config["eval_ngram"],
        eval_filters=save_filters(ctx, eval_sets), decontaminate=config["decontaminate"],
        contamination_threshold=config["contamination_threshold"],
        num_shards=config["dedup_shards"] or auto_shards(files), work=ctx.run.path(layout.DEDUP_WORK),
        lsh_partitions=lsh_partitions(rows, resolve_banding(config).bands),
        permutations=permutations(MinHashConfig(config["num_perm"], config["minhash_seed"], config["ngram"])))
    log.info("dedup: %d input files, threshold %.2f, %d bands x %d rows of %d permutations", len(files),
             plan.threshold, plan.banding.bands, plan.banding.rows, plan.minhash.num_perm)
    ctx.run_pipeline(lambda p: build_pipeline(p, ctx, plan, schema, [f.path for f in files]))

    out = ctx.run.path(layout.DEDUP)
    sinks.fill_empty_shards(out, "docs", schema, plan.num_shards)
    sinks.fill_empty_shards(out, "clusters", CLUSTER_SCHEMA, plan.num_shards)
    sinks.fill_empty_shards(out, "pairs", PAIRS_SCHEMA, plan.num_shards)
    if eval_sets:
        sinks.fill_empty_shards(out, "contamination", CONTAMINATION_SCHEMA, plan.num_shards)
    ctx.run.write_json(contamination_report(ctx, plan, eval_sets), "stats", "contamination.json")
    ctx.run.write_json(lsh_report(plan), NAME, "lsh.json")
    ctx.run.clear(layout.DEDUP_WORK)
    storage.delete([ctx.run.path(layout.DEDUP_WORK)])
    check_accounting(ctx.counters)


def check_accounting(counters: dict[str, int]) -> None:
    """Every document read is written or rejected under exactly one reason; doc_ids must be unique."""
    if counters.get("docs.repeated-doc-id"):
        raise StageError(f"dedup: {counters['docs.repeated-doc-id']:,} rows repeat another row's doc_id; "
                         "doc_id must be unique in the input")
    read, written = counters.get("docs.read", 0), counters.get("docs.written", 0)
    rejected = sum(v for k, v in counters.items() if k.startswith("reject."))
    if read != written + rejected:
        raise RuntimeError(f"dedup: accounting broken: {read} documents read, {written} written, {rejected} rejected")


STAGE = Stage(
    name=NAME,
    help="remove exact and near-duplicate documents (MinHash LSH) and measure or remove eval-set contamination",
    options=options_of(DedupOptions),
    execute=execute,
    external_inputs=lambda run, config: input_files(run, config) + eval_files(config),
    upstream=upstream,
    outputs=[layout.DEDUP],
)
