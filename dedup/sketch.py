"""What dedup keeps of a document once it has read it (rank, exact hash, shingle hashes, MinHash signature), and the
sketch record of it that is written once to the work folder and read back by locator (DocRef)."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .minhash import MinHasher
from .survivors import DocRank
from .text import exact_hash


@dataclass
class DocSketch:
    """A document without its text: enough to find and verify its duplicates and to pick a cluster's survivor."""

    doc_id: str
    url: str
    score: int
    length: int
    text_hash: str  # exact hash of the normalised text
    shingles: bytes  # sorted distinct uint32 shingle hashes, little-endian
    signature: bytes  # uint32[num_perm] MinHash, little-endian

    @property
    def rank(self) -> DocRank:
        return DocRank(self.doc_id, self.score, self.length)

    @property
    def has_shingles(self) -> bool:
        return len(self.shingles) > 0

    def shingle_array(self) -> np.ndarray:
        return np.frombuffer(self.shingles, dtype="<u4")

    def signature_array(self) -> np.ndarray:
        return np.frombuffer(self.signature, dtype="<u4")


def sketch_documents(docs: Sequence[tuple[str, str, int, str, list[str]]], hasher: MinHasher) -> list[DocSketch]:
    """Sketches of (doc_id, url, score, text, words) tuples, with their signatures computed as one batch."""
    hash_sets = [hasher.shingle_hashes(text_words) for *_, text_words in docs]
    signatures = hasher.signatures(hash_sets)
    return [DocSketch(doc_id, url, int(score), len(text), exact_hash(text_words),
                      hashes.astype("<u4").tobytes(), signature.astype("<u4").tobytes())
            for (doc_id, url, score, text, text_words), hashes, signature in zip(docs, hash_sets, signatures)]


# -- a document's sketch record, written once to the run's work folder ------------------------------------------------

_RECORD_HEADER = struct.Struct("<qqIIII")  # score, length, bytes of the doc_id and URL, MinHash values, shingle hashes


@dataclass(frozen=True)
class DocRef(DocRank):
    """A document's rank and where its sketch record lies: small and fixed, so it is what crosses the shuffles."""

    sketch_file: str  # name of the file in the work folder
    offset: int
    size: int

    def to_tuple(self) -> tuple[str, int, int, str, int, int]:
        """A plain tuple: Beam encodes it in a few dozen bytes, a dataclass it would pickle with its class name."""
        return self.doc_id, self.score, self.length, self.sketch_file, self.offset, self.size


@dataclass
class SketchRecord:
    """What pairing, verification and cluster rows read back of a document: its rank, URL, signature and shingles."""

    rank: DocRank
    url: str
    signature: np.ndarray  # uint32[num_perm]
    shingles: np.ndarray  # sorted distinct uint32


def encode_record(sketch: DocSketch) -> bytes:
    doc_id = sketch.doc_id.encode("utf-8", "surrogatepass")
    url = sketch.url.encode("utf-8", "surrogatepass")
    return (_RECORD_HEADER.pack(sketch.score, sketch.length, len(doc_id), len(url), len(sketch.signature) // 4,
                                len(sketch.shingles) // 4)
            + doc_id + url + sketch.signature + sketch.shingles)


def decode_record(data: bytes) -> SketchRecord:
    score, length, id_bytes, url_bytes, values, shingle_count = _RECORD_HEADER.unpack_from(data)
    start = _RECORD_HEADER.size
    doc_id = data[start:start + id_bytes].decode("utf-8", "surrogatepass")
    start += id_bytes
    url = data[start:start + url_bytes].decode("utf-8", "surrogatepass")
    start += url_bytes
    signature = np.frombuffer(data, dtype="<u4", count=values, offset=start)
    shingles = np.frombuffer(data, dtype="<u4", count=shingle_count, offset=start + 4 * values)
    return SketchRecord(DocRank(doc_id, score, length), url, signature, shingles)
