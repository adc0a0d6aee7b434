"""The shard format, the contract between pipeline/ (writes shards) and train/ (reads them): Arrow IPC files of
`tokens: large_list<uint16|uint32>` and `doc_id: string` plus manifest.json; numpy and pyarrow only (no torch)."""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from .atomic import atomic_path, atomic_write_bytes

FORMAT = "webtext-shards"
VERSION = 1
MANIFEST_NAME = "manifest.json"
# What train/ reads and writes in a run directory (pipeline/layout.py takes these names from here).
RUN_SHARDS = Path("shards")
RUN_TOKENIZER = Path("tokenizer", "tokenizer.json")  # its sha256 is in the manifest
RUN_TRAINING = Path("train")  # RUN/train/NAME: one training run's checkpoints and logs
RUN_CONTAMINATION = Path("stats", "contamination.json")  # the dedup stage's eval-set overlap report
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
ARROW_DTYPES = {"uint16": pa.uint16(), "uint32": pa.uint32()}
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ShardFormatError(ValueError):
    """A shard or manifest that does not follow the format; the message names the file."""


def dtype_for_vocab(vocab_size: int) -> str:
    """The narrowest token dtype that holds every id of a vocabulary of this size."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return "uint16" if vocab_size <= 2**16 else "uint32"


def shard_name(split: str, index: int) -> str:
    """The conventional file name of shard `index` of a split: train-00000.arrow."""
    return f"{split}-{index:05d}.arrow"


def split_for_doc(doc_id: str, val_fraction: float) -> str:
    """'val' or 'train' from a hash of the document id: stable across reruns, machines and Python versions."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1], got {val_fraction}")
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    unit = int.from_bytes(digest, "big") / 2**64
    return "val" if unit < val_fraction else "train"


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _numpy_dtype(dtype: str) -> type:
    if dtype not in DTYPES:
        raise ValueError(f"token dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


@dataclass(frozen=True)
class TokenBatch:
    """Documents as one flat token array and offsets from 0: document i is tokens[offsets[i]:offsets[i + 1]]."""

    tokens: np.ndarray
    offsets: np.ndarray  # int64, one more than there are documents

    @classmethod
    def empty(cls, dtype) -> "TokenBatch":
        return cls(np.empty(0, dtype), np.zeros(1, np.int64))

    @classmethod
    def from_lengths(cls, tokens: np.ndarray, lengths: np.ndarray) -> "TokenBatch":
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(tokens, offsets)

    @classmethod
    def concat(cls, batches: Sequence["TokenBatch"], dtype=None) -> "TokenBatch":
        """All documents of `batches` in order (a single batch is returned as it is); `dtype` serves when there are none."""
        if len(batches) == 1:
            return batches[0]
        if not batches:
            return cls.empty(dtype)
        offsets, base = [np.zeros(1, np.int64)], 0
        for batch in batches:
            offsets.append(batch.offsets[1:] + base)
            base += int(batch.offsets[-1])
        return cls(np.concatenate([batch.tokens for batch in batches]), np.concatenate(offsets))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def document(self, index: int) -> np.ndarray:
        return self.tokens[self.offsets[index]:self.offsets[index + 1]]

    def take(self, indices: Sequence[int]) -> "TokenBatch":
        """The documents at `indices`, in that order, copied into a new batch."""
        indices = list(indices)
        if not indices:
            return TokenBatch.empty(self.tokens.dtype)
        return TokenBatch.from_lengths(np.concatenate([self.document(i) for i in indices]), self.lengths[indices])


# --------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class ShardStats:
    documents: int
    tokens: int
    sha256: str


def _check_token_range(tokens: np.ndarray, dtype: str, where: str) -> None:
    if tokens.size == 0:
        return
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{where}: token ids must be integers, got {tokens.dtype}")
    limit = np.iinfo(DTYPES[dtype]).max
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high > limit:
        raise ValueError(f"{where}: token ids span [{low}, {high}], outside {dtype}")


def _checked_documents(batch: TokenBatch, doc_ids: Sequence[str], dtype: str, eot_id: int | None,
                       where: str) -> tuple[np.ndarray, np.ndarray]:
    """The batch's tokens and int64 offsets, once they are known to be non-empty documents of `dtype` ids (each
    ending with `eot_id` when given), one per doc_id; else ValueError naming `where`."""
    tokens = np.asarray(batch.tokens)
    offsets = np.asarray(batch.offsets, dtype=np.int64)
    if tokens.ndim != 1 or offsets.ndim != 1:
        raise ValueError(f"{where}: tokens and offsets must be 1-D arrays")
    if len(offsets) != len(doc_ids) + 1:
        raise ValueError(f"{where}: {len(doc_ids)} doc_ids need {len(doc_ids) + 1} offsets, got {len(offsets)}")
    if offsets[0] != 0 or offsets[-1] != tokens.size:
        raise ValueError(f"{where}: offsets must run from 0 to len(tokens)={tokens.size}")
    lengths = np.diff(offsets)
    if (lengths <= 0).any():
        bad = int(np.argmax(lengths <= 0))
        raise ValueError(f"{where}: document {doc_ids[bad]!r} is empty or its offsets decrease")
    _check_token_range(tokens, dtype, where)
    if eot_id is not None and (tokens[offsets[1:] - 1] != eot_id).any():
        bad = int(np.argmax(tokens[offsets[1:] - 1] != eot_id))
        raise ValueError(f"{where}: document {doc_ids[bad]!r} does not end with eot id {eot_id}")
    return tokens, offsets


class ShardWriter:
    """Collects documents as numpy chunks and writes them as one record batch on close().

    `add` takes one document; `add_batch` takes many at once as a TokenBatch, so an encoder
    never builds Python lists of ints.
    The file appears under its final name only when complete (temp file, fsync, rename).
    """

    def __init__(self, path: str | os.PathLike, dtype: str, eot_id: int | None = None):
        self.path = Path(path)
        self.dtype = dtype
        self.eot_id = eot_id
        self._np_dtype = _numpy_dtype(dtype)
        self._batches: list[TokenBatch] = []
        self._doc_ids: list[str] = []
        self._closed = False

    def add(self, doc_id: str, tokens: np.ndarray | Sequence[int]) -> None:
        tokens = np.asarray(tokens)
        self.add_batch(TokenBatch(tokens, np.array([0, tokens.size], dtype=np.int64)), [doc_id])

    def add_batch(self, batch: TokenBatch, doc_ids: Sequence[str]) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: writer already closed")
        tokens, offsets = _checked_documents(batch, doc_ids, self.dtype, self.eot_id, str(self.path))
        self._batches.append(TokenBatch(tokens.astype(self._np_dtype, copy=False), offsets))
        self._doc_ids.extend(str(doc_id) for doc_id in doc_ids)

    def close(self) -> ShardStats:
        if self._closed:
            raise ValueError(f"{self.path}: writer already closed")
        self._closed = True
        batches, doc_ids = self._batches, self._doc_ids
        self._batches, self._doc_ids = [], []
        lengths = np.concatenate([b.lengths for b in batches]) if batches else np.empty(0, np.int64)
        return write_shard_chunks(self.path, doc_ids, lengths, self.dtype, batches)

    def abort(self) -> None:
        self._closed = True
        self._batches, self._doc_ids = [], []

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


def shard_schema(dtype: str) -> pa.Schema:
    return pa.schema([
        pa.field("tokens", pa.large_list(pa.field("item", ARROW_DTYPES[dtype], nullable=False)), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
    ], metadata={b"format": FORMAT.encode(), b"version": str(VERSION).encode(), b"dtype": dtype.encode()})


def _skeleton_batch(doc_ids: Sequence[str], lengths: np.ndarray, dtype: str) -> pa.RecordBatch:
    """The shard's one record batch with its token values left as zeros in memory that is never touched: a private
    anonymous mapping reads as zero pages, which take no resident memory. Written by Arrow, it gives the shard's
    exact bytes but for the values, which write_shard_chunks then fills in."""
    schema = shard_schema(dtype)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    size = int(offsets[-1]) * np.dtype(DTYPES[dtype]).itemsize
    zeros = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) if size else b""
    values = pa.Array.from_buffers(ARROW_DTYPES[dtype], int(offsets[-1]), [None, pa.py_buffer(zeros)])
    token_lists = pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), values,
                                                type=schema.field("tokens").type)
    return pa.RecordBatch.from_arrays([token_lists, pa.array(list(doc_ids), type=pa.string())], schema=schema)


def _values_offset(path: Path) -> int:
    """Where the token values of a shard file's one record batch start (read from its metadata only)."""
    with pa.memory_map(str(path), "r") as mapped:
        whole = mapped.read_buffer(mapped.size())
        values = pa.ipc.open_file(mapped).get_batch(0).column("tokens").values
        return values.buffers()[1].address - whole.address + values.offset * values.type.bit_width // 8


def write_shard_chunks(path: str | os.PathLike, doc_ids: Sequence[str], lengths: np.ndarray, dtype: str,
                       chunks: Iterable[TokenBatch], eot_id: int | None = None) -> ShardStats:
    """A shard of the documents `doc_ids` of `lengths` tokens whose tokens come as consecutive TokenBatches, holding
    one chunk at a time: the same bytes as one record batch of them all. Chunks are checked like ShardWriter.add_batch.
    The file appears under its final name only when complete (temp file, fsync, rename)."""
    path, np_dtype = Path(path), _numpy_dtype(dtype)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) != len(doc_ids):
        raise ValueError(f"{path}: {len(doc_ids)} doc_ids but {len(lengths)} lengths")
    if (lengths <= 0).any():
        raise ValueError(f"{path}: document {doc_ids[int(np.argmax(lengths <= 0))]!r} is empty")
    with atomic_path(path) as temp:
        batch = _skeleton_batch(doc_ids, lengths, dtype)
        with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)
        del batch
        documents = 0
        with open(temp, "r+b") as handle:
            handle.seek(_values_offset(temp) if lengths.size else 0)
            for chunk in chunks:
                ids = doc_ids[documents:documents + len(chunk)]
                tokens, _ = _checked_documents(chunk, ids, dtype, eot_id, str(path))
                if not np.array_equal(chunk.lengths, lengths[documents:documents + len(chunk)]):
                    raise ValueError(f"{path}: the documents from {ids[0]!r} on have other lengths than announced")
                handle.write(np.ascontiguousarray(tokens, dtype=np_dtype).data)
                documents += len(chunk)
        if documents != len(doc_ids):
            raise ValueError(f"{path}: {len(doc_ids)} documents announced, {documents} given")
        sha256 = sha256_file(temp)
    return ShardStats(documents=len(doc_ids), tokens=int(lengths.sum()), sha256=sha256)


def write_shard(path: str | os.PathLike, documents: Iterable[tuple[str, np.ndarray]], dtype: str,
                eot_id: int | None = None) -> ShardStats:
    """Write (doc_id, tokens) pairs as one shard; with `eot_id`, refuse documents not ending in it."""
    with ShardWriter(path, dtype, eot_id=eot_id) as writer:
        for doc_id, tokens in documents:
            writer.add(doc_id, tokens)
        return writer.close()


def write_shard_batch(path: str | os.PathLike, batch: TokenBatch, doc_ids: Sequence[str], dtype: str,
                      eot_id: int | None = None) -> ShardStats:
    """Write a shard from a TokenBatch and the ids of its documents."""
    with ShardWriter(path, dtype, eot_id=eot_id) as writer:
        writer.add_batch(batch, doc_ids)
        return writer.close()


# --------------------------------------------------------------------------------------------
# Manifest


@dataclass(frozen=True)
class ShardInfo:
    name: str
    split: str
    documents: int
    tokens: int
    sha256: str

    @classmethod
    def from_stats(cls, name: str, split: str, stats: ShardStats) -> "ShardInfo":
        return cls(name=name, split=split, documents=stats.documents, tokens=stats.tokens, sha256=stats.sha256)


def _require(record: dict, key: str, kind: type | tuple[type, ...], where: str):
    if key not in record:
        raise ShardFormatError(f"{where}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ShardFormatError(f"{where}: field {key!r} must be {names}, got {value!r}")
    return value


def _check_count(record: dict, key: str, where: str) -> int:
    value = _require(record, key, int, where)
    if value < 0:
        raise ShardFormatError(f"{where}: field {key!r} must be >= 0, got {value}")
    return value


def _check_relative_name(name: str, where: str) -> None:
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts or "\\" in name:
        raise ShardFormatError(f"{where}: shard name {name!r} must be a plain path relative to the manifest")


@dataclass
class Manifest:
    root: Path
    tokenizer_sha256: str
    vocab_size: int
    eot_id: int
    dtype: str
    shards: list[ShardInfo] = field(default_factory=list)

    @classmethod
    def load(cls, path_or_dir: str | os.PathLike) -> "Manifest":
        """Read and validate a manifest.json (or the manifest.json inside a directory)."""
        path = Path(path_or_dir)
        if path.is_dir():
            path = path / MANIFEST_NAME
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ShardFormatError(f"{path}: no shard manifest here (run the shards stage first)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ShardFormatError(f"{path}: unreadable manifest: {error}") from None
        return cls.from_dict(record, root=path.parent, where=str(path))

    @classmethod
    def from_dict(cls, record: dict, root: str | os.PathLike, where: str = MANIFEST_NAME) -> "Manifest":
        if not isinstance(record, dict):
            raise ShardFormatError(f"{where}: the manifest must be a JSON object")
        if record.get("format") != FORMAT:
            raise ShardFormatError(f"{where}: format is {record.get('format')!r}, expected {FORMAT!r}")
        version = record.get("version")
        if version != VERSION:
            raise ShardFormatError(f"{where}: format version {version!r} is not supported (this reader knows {VERSION})")
        tokenizer_sha256 = _require(record, "tokenizer_sha256", str, where)
        vocab_size = _require(record, "vocab_size", int, where)
        eot_id = _require(record, "eot_id", int, where)
        dtype = _require(record, "dtype", str, where)
        if dtype not in DTYPES:
            raise ShardFormatError(f"{where}: dtype {dtype!r} is not one of {sorted(DTYPES)}")
        if vocab_size <= 0 or vocab_size > np.iinfo(DTYPES[dtype]).max + 1:
            raise ShardFormatError(f"{where}: vocab_size {vocab_size} does not fit dtype {dtype}")
        if not 0 <= eot_id < vocab_size:
            raise ShardFormatError(f"{where}: eot_id {eot_id} outside the vocabulary of {vocab_size}")
        raw_shards = _require(record, "shards", list, where)
        shards, seen = [], set()
        for index, raw in enumerate(raw_shards):
            shard_where = f"{where}: shards[{index}]"
            if not isinstance(raw, dict):
                raise ShardFormatError(f"{shard_where} must be an object")
            name = _require(raw, "name", str, shard_where)
            _check_relative_name(name, shard_where)
            if name in seen:
                raise ShardFormatError(f"{shard_where}: shard {name!r} is listed twice")
            seen.add(name)
            split = _require(raw, "split", str, shard_where)
            if not split:
                raise ShardFormatError(f"{shard_where}: empty split")
            sha256 = _require(raw, "sha256", str, shard_where)
            if not _SHA256_RE.match(sha256):
                raise ShardFormatError(f"{shard_where}: sha256 {sha256!r} is not 64 lowercase hex digits")
            shards.append(ShardInfo(name=name, split=split, documents=_check_count(raw, "documents", shard_where),
                                    tokens=_check_count(raw, "tokens", shard_where), sha256=sha256))
        return cls(root=Path(root), tokenizer_sha256=tokenizer_sha256, vocab_size=vocab_size,
                   eot_id=eot_id, dtype=dtype, shards=shards)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "tokenizer_sha256": self.tokenizer_sha256,
                "vocab_size": self.vocab_size, "eot_id": self.eot_id, "dtype": self.dtype,
                "shards": [asdict(info) for info in self.shards]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write atomically to `path` (default ROOT/manifest.json); returns the path written."""
        target = Path(path) if path is not None else self.root / MANIFEST_NAME
        if target.is_dir():
            target = target / MANIFEST_NAME
        atomic_write_bytes(target, self.to_json().encode("utf-8"))
        return target

    def path_of(self, info: ShardInfo) -> Path:
        return self.root / info.name

    def split(self, split: str) -> list[ShardInfo]:
        return [info for info in self.shards if info.split == split]

    def split_tokens(self, split: str) -> int:
        return sum(info.tokens for info in self.split(split))


# --------------------------------------------------------------------------------------------
# Reading


def _check_schema(schema: pa.Schema, path: Path) -> str:
    names = schema.names
    if "tokens" not in names or "doc_id" not in names:
        raise ShardFormatError(f"{path}: columns are {names}, expected 'tokens' and 'doc_id'")
    tokens_type = schema.field("tokens").type
    if not pa.types.is_large_list(tokens_type):
        raise ShardFormatError(f"{path}: column 'tokens' is {tokens_type}, expected large_list<uint16|uint32>")
    value_type = tokens_type.value_type
    for dtype, arrow_type in ARROW_DTYPES.items():
        if value_type == arrow_type:
            break
    else:
        raise ShardFormatError(f"{path}: token values are {value_type}, expected uint16 or uint32")
    doc_id_type = schema.field("doc_id").type
    if not (pa.types.is_string(doc_id_type) or pa.types.is_large_string(doc_id_type)):
        raise ShardFormatError(f"{path}: column 'doc_id' is {doc_id_type}, expected string")
    return dtype


class Shard:
    """A memory-mapped shard; `.tokens`, `.offsets` and `document(i)` are zero-copy numpy views.

    A shard written by this module holds one record batch. A shard with several batches is
    read batch by batch through `.segments`; its `.tokens`/`.offsets` then copy (concatenate).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._mmap = pa.memory_map(str(self.path), "r")
            self._reader = pa.ipc.open_file(self._mmap)
            self.dtype = _check_schema(self._reader.schema, self.path)
            batches = [self._reader.get_batch(i) for i in range(self._reader.num_record_batches)]
        except FileNotFoundError:
            raise ShardFormatError(f"{self.path}: shard file is missing") from None
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
            raise ShardFormatError(f"{self.path}: not a readable Arrow IPC file ({error})") from None
        self.segments = [self._segment(batch) for batch in batches]
        self._doc_id_arrays = [batch.column("doc_id") for batch in batches]
        self._doc_starts = np.cumsum([0] + [len(segment) for segment in self.segments])

    def _segment(self, batch: pa.RecordBatch) -> TokenBatch:
        column = batch.column("tokens")
        if column.null_count:
            raise ShardFormatError(f"{self.path}: column 'tokens' has {column.null_count} null documents")
        try:
            raw_offsets = column.offsets.to_numpy(zero_copy_only=True)
            values = column.values.to_numpy(zero_copy_only=True)
        except (pa.ArrowInvalid, ValueError) as error:
            raise ShardFormatError(f"{self.path}: token buffer is not zero-copy readable ({error})") from None
        start, end = int(raw_offsets[0]), int(raw_offsets[-1])
        if end > len(values) or start > end:
            raise ShardFormatError(f"{self.path}: document offsets run past the token buffer")
        offsets = raw_offsets if start == 0 else raw_offsets - start
        return TokenBatch(tokens=values[start:end], offsets=offsets)

    @property
    def num_documents(self) -> int:
        return int(self._doc_starts[-1])

    @property
    def num_tokens(self) -> int:
        return sum(int(segment.tokens.size) for segment in self.segments)

    @property
    def tokens(self) -> np.ndarray:
        return TokenBatch.concat(self.segments, DTYPES[self.dtype]).tokens

    @property
    def offsets(self) -> np.ndarray:
        return TokenBatch.concat(self.segments, DTYPES[self.dtype]).offsets

    @property
    def doc_ids(self) -> pa.ChunkedArray:
        return pa.chunked_array(self._doc_id_arrays, type=pa.string()) if self._doc_id_arrays else pa.chunked_array([], pa.string())

    def document(self, index: int) -> np.ndarray:
        if not 0 <= index < self.num_documents:
            raise IndexError(f"{self.path}: document {index} out of range (0..{self.num_documents - 1})")
        batch_index = int(np.searchsorted(self._doc_starts, index, side="right")) - 1
        return self.segments[batch_index].document(index - int(self._doc_starts[batch_index]))

    def doc_id(self, index: int) -> str:
        return self.doc_ids[index].as_py()

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for index in range(self.num_documents):
            yield self.doc_id(index), self.document(index)

    def __len__(self) -> int:
        return self.num_documents

    def __repr__(self) -> str:
        return f"Shard({str(self.path)!r}, documents={self.num_documents}, tokens={self.num_tokens}, dtype={self.dtype})"


# --------------------------------------------------------------------------------------------
# Verification


def check_manifest(manifest: Manifest, splits: Sequence[str] = (), tokenizer_sha256: str | None = None,
                   where: str | os.PathLike | None = None) -> None:
    """What a valid manifest must also hold for its use: shards, a shard in each of `splits`, and (when given)
    the sha256 of the tokenizer.json they were made with. `where` names the manifest in messages."""
    where = where or manifest.root / MANIFEST_NAME
    if tokenizer_sha256 is not None and manifest.tokenizer_sha256 != tokenizer_sha256:
        raise ShardFormatError(f"{where}: made with tokenizer {manifest.tokenizer_sha256[:12]}…, but the run's "
                               f"tokenizer.json is {tokenizer_sha256[:12]}… (rerun the shards stage)")
    if not manifest.shards:
        raise ShardFormatError(f"{where}: the manifest lists no shards")
    for split in splits:
        if not manifest.split(split):
            raise ShardFormatError(f"{where}: no shards in split {split!r}")


def check_shard(manifest: Manifest, info: ShardInfo, shard: Shard) -> None:
    """An opened shard's dtype and totals against its manifest entry: no pass over its tokens."""
    if shard.dtype != manifest.dtype:
        raise ShardFormatError(f"{shard.path}: tokens are {shard.dtype}, the manifest says {manifest.dtype}")
    if shard.num_documents != info.documents or shard.num_tokens != info.tokens:
        raise ShardFormatError(f"{shard.path}: holds {shard.num_documents} documents / {shard.num_tokens} tokens, "
                               f"the manifest says {info.documents} / {info.tokens}")


def sha256_problem(manifest: Manifest, info: ShardInfo) -> str | None:
    """Why a shard file does not match its manifest entry's sha256 (a message naming it), or None when it does."""
    path = manifest.path_of(info)
    try:
        actual = sha256_file(path)
    except OSError as error:
        return f"{path}: cannot read the shard to check its sha256 ({error.strerror or error})"
    if actual != info.sha256:
        return f"{path}: sha256 {actual} differs from the manifest's {info.sha256} (damaged, truncated or rewritten)"
    return None


class BackgroundChecksums:
    """The sha256 of shards against their manifest entries, computed once in a daemon thread while training runs.

    `raise_if_failed()` is cheap and meant for every batch; `wait()` blocks until every shard is checked.
    """

    def __init__(self, manifest: Manifest, infos: Sequence[ShardInfo]):
        self.problem: str | None = None
        self._thread = threading.Thread(target=self._check, args=(manifest, list(infos)), name="shard-sha256",
                                        daemon=True)
        self._thread.start()

    def _check(self, manifest: Manifest, infos: list[ShardInfo]) -> None:
        for info in infos:
            self.problem = sha256_problem(manifest, info)
            if self.problem is not None:
                return

    def raise_if_failed(self) -> None:
        if self.problem is not None:
            raise ShardFormatError(self.problem)

    def wait(self) -> None:
        self._thread.join()
        self.raise_if_failed()


def verify_shard(manifest: Manifest, info: ShardInfo, check_sha256: bool = True) -> None:
    path = manifest.path_of(info)
    if not path.is_file():
        raise ShardFormatError(f"{path}: shard listed in the manifest is missing")
    if check_sha256 and (problem := sha256_problem(manifest, info)) is not None:
        raise ShardFormatError(problem)
    shard = Shard(path)
    check_shard(manifest, info, shard)
    base_doc = 0
    for segment in shard.segments:
        lengths = segment.lengths
        if (lengths <= 0).any():
            bad = base_doc + int(np.argmax(lengths <= 0))
            raise ShardFormatError(f"{path}: document {bad} ({shard.doc_id(bad)!r}) is empty")
        if segment.tokens.size:
            last_tokens = segment.tokens[segment.offsets[1:] - 1]
            not_eot = last_tokens != manifest.eot_id
            if not_eot.any():
                bad = base_doc + int(np.argmax(not_eot))
                raise ShardFormatError(f"{path}: document {bad} ({shard.doc_id(bad)!r}) does not end with "
                                       f"the end-of-text id {manifest.eot_id}")
            highest = int(segment.tokens.max())
            if highest >= manifest.vocab_size:
                raise ShardFormatError(f"{path}: token id {highest} is outside the vocabulary of {manifest.vocab_size}")
        base_doc += len(segment)


def verify(manifest: Manifest, check_sha256: bool = True, splits: Sequence[str] = (),
           tokenizer_sha256: str | None = None) -> None:
    """check_manifest, then every shard against the manifest; raises ShardFormatError naming the first bad file."""
    check_manifest(manifest, splits, tokenizer_sha256)
    for info in manifest.shards:
        verify_shard(manifest, info, check_sha256=check_sha256)
