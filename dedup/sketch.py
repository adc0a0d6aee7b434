"""What dedup keeps of a document once it has read it: its rank, exact hash, shingle hashes and MinHash signature."""
from __future__ import annotations

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
