"""Word n-gram shingles and MinHash signatures, batched in numpy, bit-identical to datasketch's MinHash.

A signature here equals `datasketch.MinHash(num_perm, seed).update_batch(shingles)` (its default "affine32" scheme:
sha1_hash32 of each shingle, a MurmurHash3 pre-mix, then `a * h + b mod 2**32`); the permutation parameters are
taken from datasketch itself. The speed comes from reading all of a document's SHA-1 digests in one numpy view and
applying the permutations with in-place numpy operations into one reused buffer, with no MinHash object per document.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

EMPTY_HASH = np.uint32(0xFFFFFFFF)  # datasketch's value for "no shingle yet"
_CHUNK_ROWS = 2048  # shingle hashes permuted at once: 2048 x 128 x 4 bytes = 1 MiB, stays in cache


@dataclass(frozen=True)
class MinHashConfig:
    num_perm: int = 128
    seed: int = 1
    ngram: int = 5  # words per shingle


def shingles(text_words: Sequence[str], ngram: int) -> list[bytes]:
    """Word n-grams joined by single spaces, UTF-8; a text of fewer words is one shingle, one without words none."""
    count = len(text_words)
    if count == 0:
        return []
    buffer = " ".join(text_words).encode("utf-8")
    if count <= ngram:
        return [buffer]
    if len(buffer) == sum(map(len, text_words)) + count - 1:  # ASCII: characters are bytes
        lengths = np.fromiter(map(len, text_words), dtype=np.int64, count=count)
    else:
        lengths = np.fromiter((len(w.encode("utf-8")) for w in text_words), dtype=np.int64, count=count)
    starts = np.zeros(count, dtype=np.int64)
    np.cumsum(lengths[:-1] + 1, out=starts[1:])
    ends = starts + lengths
    return [buffer[s:e] for s, e in zip(starts[:count - ngram + 1].tolist(), ends[ngram - 1:].tolist())]


def shingle_hashes(shingle_list: Sequence[bytes]) -> np.ndarray:
    """datasketch's sha1_hash32 of each shingle (first 4 bytes of SHA-1, little-endian), sorted and de-duplicated."""
    if not shingle_list:
        return np.empty(0, dtype=np.uint32)
    digests = b"".join([h.digest() for h in map(hashlib.sha1, shingle_list)])
    first_words = np.ndarray((len(shingle_list),), dtype="<u4", buffer=digests, strides=(20,))  # 20-byte digests
    return np.unique(first_words).astype(np.uint32, copy=False)


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (datasketch's pre-mix), wrapping uint32 arithmetic."""
    h = values.astype(np.uint32, copy=True)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def permutations(config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's permutation parameters (a, b) for the config's num_perm and seed, as uint32 arrays.

    datasketch (and the scipy it imports) is loaded only here: a worker given the arrays never imports it."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=config.num_perm, seed=config.seed).permutations
    return a.astype(np.uint32), b.astype(np.uint32)


class MinHasher:
    """Signatures for many documents at once; one instance per worker (the permutations are built once, or given
    as computed by `permutations`)."""

    def __init__(self, config: MinHashConfig = MinHashConfig(),
                 given_permutations: tuple[np.ndarray, np.ndarray] | None = None):
        if config.num_perm < 1 or config.ngram < 1:
            raise ValueError("num_perm and ngram must be positive")
        self.config = config
        self.a, self.b = given_permutations if given_permutations is not None else permutations(config)
        self._buffer = np.empty((_CHUNK_ROWS, config.num_perm), dtype=np.uint32)

    def shingle_hashes(self, text_words: Sequence[str]) -> np.ndarray:
        return shingle_hashes(shingles(text_words, self.config.ngram))

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        """The MinHash of one set of shingle hashes (uint32[num_perm]); all 0xFFFFFFFF for an empty set."""
        result = np.full(self.config.num_perm, EMPTY_HASH, dtype=np.uint32)
        mixed = _fmix32(hashes)
        for start in range(0, len(mixed), _CHUNK_ROWS):
            chunk = mixed[start:start + _CHUNK_ROWS]
            permuted = self._buffer[:len(chunk)]
            np.multiply(chunk[:, None], self.a, out=permuted)
            np.add(permuted, self.b, out=permuted)
            np.minimum(result, permuted.min(axis=0), out=result)
        return result

    def signatures(self, hash_sets: Sequence[np.ndarray]) -> np.ndarray:
        """One signature per set of shingle hashes, as rows of a (len(hash_sets), num_perm) uint32 array."""
        out = np.empty((len(hash_sets), self.config.num_perm), dtype=np.uint32)
        for row, hashes in enumerate(hash_sets):
            out[row] = self.signature(hashes)
        return out


def estimated_jaccard(signature_a: np.ndarray, signature_b: np.ndarray) -> float:
    """The share of equal MinHash values: an unbiased estimate of the Jaccard similarity of the two shingle sets."""
    return float(np.count_nonzero(signature_a == signature_b)) / len(signature_a)


def jaccard(hashes_a: np.ndarray, hashes_b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted, de-duplicated shingle-hash sets (0.0 when both are empty)."""
    union = len(hashes_a) + len(hashes_b)
    if union == 0:
        return 0.0
    common = len(np.intersect1d(hashes_a, hashes_b, assume_unique=True))
    return common / (union - common)
