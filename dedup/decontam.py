"""Test-set decontamination as in the GPT-2 paper (section 4): word n-grams of evaluation sets in a Bloom filter.

N-grams are taken over the normalised words of webtext.dedup.text (case-folded letters/digits, single spaces) and
hashed to 64 bits (a hash of each word, combined position by position). Each evaluation set gets its own Bloom filter,
sized for its distinct n-grams and a target false-positive rate, with a cap on its memory.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .text import words

DEFAULT_NGRAM = 8
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the positional combination
_SALT = np.uint64(0xD6E8FEB86659FD93)  # separates the Bloom filter's second hash from the first
BLOCK_ITEMS = 1 << 16  # Bloom probes are computed this many items at a time (items x hashes x 8 bytes)


@functools.lru_cache(maxsize=1 << 16)
def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


def _fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (wrapping uint64 arithmetic)."""
    h = values.astype(np.uint64, copy=True)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def ngram_hashes(text_words: Sequence[str], ngram: int = DEFAULT_NGRAM) -> np.ndarray:
    """Sorted distinct 64-bit hashes of the word n-grams (none when the text has fewer than `ngram` words)."""
    count = len(text_words) - ngram + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    word_hashes = np.fromiter(map(_word_hash, text_words), dtype=np.uint64, count=len(text_words))
    combined = np.zeros(count, dtype=np.uint64)
    for offset in range(ngram):
        combined *= _MIX
        combined ^= word_hashes[offset:offset + count]
    return np.unique(_fmix64(combined))


@dataclass(frozen=True)
class BloomParams:
    num_bits: int
    num_hashes: int

    @classmethod
    def for_capacity(cls, items: int, fp_rate: float, max_bytes: int) -> "BloomParams":
        """The optimal size for `items` at `fp_rate`, but never more than `max_bytes` (then the rate is worse)."""
        items = max(items, 1)
        bits = math.ceil(-items * math.log(fp_rate) / math.log(2) ** 2)
        bits = max(64, min(bits, max_bytes * 8))
        hashes = max(1, round(bits / items * math.log(2)))
        return cls(bits, hashes)

    def false_positive_rate(self, items: int) -> float:
        """The chance that an n-gram never added tests positive, once `items` distinct ones are in."""
        return (1.0 - math.exp(-self.num_hashes * items / self.num_bits)) ** self.num_hashes


class BloomFilter:
    """A bit array probed at `num_hashes` positions per item (double hashing of a 64-bit item hash)."""

    def __init__(self, params: BloomParams):
        self.params = params
        self.bits = np.zeros((params.num_bits + 7) // 8, dtype=np.uint8)
        self.items = 0

    def _positions(self, hashes: np.ndarray) -> np.ndarray:
        first = _fmix64(hashes)
        second = _fmix64(hashes ^ _SALT) | np.uint64(1)
        steps = np.arange(self.params.num_hashes, dtype=np.uint64)
        return (first[:, None] + steps[None, :] * second[:, None]) % np.uint64(self.params.num_bits)

    def add(self, hashes: np.ndarray) -> None:
        """Adds distinct item hashes (uint64)."""
        for start in range(0, len(hashes), BLOCK_ITEMS):
            positions = self._positions(hashes[start:start + BLOCK_ITEMS]).ravel()
            np.bitwise_or.at(self.bits, positions >> np.uint64(3),
                             (np.uint8(1) << (positions & np.uint64(7)).astype(np.uint8)))
        self.items += len(hashes)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A boolean per hash: False is certain, True is wrong with probability `false_positive_rate()`."""
        found = np.zeros(len(hashes), dtype=bool)
        for start in range(0, len(hashes), BLOCK_ITEMS):
            positions = self._positions(hashes[start:start + BLOCK_ITEMS])
            set_bits = (self.bits[positions >> np.uint64(3)] >> (positions & np.uint64(7)).astype(np.uint8)) & 1
            found[start:start + BLOCK_ITEMS] = set_bits.all(axis=1)
        return found

    def false_positive_rate(self) -> float:
        return self.params.false_positive_rate(self.items)

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes)


@dataclass
class EvalSet:
    """One evaluation set: its examples' distinct n-gram hashes and the filter workers test documents against."""

    name: str
    path: str
    examples: int
    ngrams: np.ndarray  # sorted distinct uint64
    bloom: BloomFilter

    def summary(self) -> dict:
        return {"path": self.path, "examples": self.examples, "ngrams": int(len(self.ngrams)),
                "bloom_bytes": self.bloom.nbytes, "bloom_hashes": self.bloom.params.num_hashes,
                "bloom_false_positive_rate": self.bloom.false_positive_rate()}


def parse_eval_spec(spec: str) -> tuple[str, str]:
    """NAME=PATH, e.g. lambada=data/lambada_test.jsonl."""
    name, sep, path = spec.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ValueError(f"--eval-set wants NAME=PATH, got {spec!r}")
    return name.strip(), path.strip()


def eval_examples(data: bytes, path: str) -> list[str]:
    """The texts of an eval file: JSONL with a "text" field per line, or plain text split at blank lines."""
    text = data.decode("utf-8")
    if path.endswith((".jsonl", ".json")) or text.lstrip().startswith("{"):
        examples = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise ValueError(f"{path}:{line_no}: not JSON ({error})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{path}:{line_no}: a JSONL eval set needs a string \"text\" field on every line")
            examples.append(record["text"])
        return examples
    paragraphs, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append("\n".join(current))
            current = []
    if current:
        paragraphs.append("\n".join(current))
    return paragraphs


def build_eval_set(name: str, path: str, data: bytes, ngram: int, fp_rate: float, max_bytes: int) -> EvalSet:
    """Reads an eval file's examples, collects their distinct n-grams and fills a Bloom filter with them."""
    examples = eval_examples(data, path)
    parts = [ngram_hashes(words(example), ngram) for example in examples]
    ngrams = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)
    bloom = BloomFilter(BloomParams.for_capacity(len(ngrams), fp_rate, max_bytes))
    bloom.add(ngrams)
    return EvalSet(name, path, len(examples), ngrams, bloom)


@dataclass(frozen=True)
class Overlap:
    """How much of one document's n-grams (distinct) an eval set's filter recognises."""

    eval_set: str
    ngrams: int
    matched: int
    matched_hashes: np.ndarray

    @property
    def share(self) -> float:
        return self.matched / self.ngrams if self.ngrams else 0.0


def document_overlaps(doc_ngrams: np.ndarray, filters: dict[str, BloomFilter]) -> list[Overlap]:
    """The eval sets whose filter matches at least one of the document's n-grams, in name order."""
    overlaps = []
    for name in sorted(filters):
        hits = filters[name].contains(doc_ngrams)
        matched = int(np.count_nonzero(hits))
        if matched:
            overlaps.append(Overlap(name, len(doc_ngrams), matched, doc_ngrams[hits]))
    return overlaps


def matched_share(found_hashes: np.ndarray, eval_ngrams: np.ndarray) -> tuple[int, float]:
    """How many of the eval set's distinct n-grams are among `found_hashes` (exact: Bloom false positives drop out)."""
    if len(eval_ngrams) == 0:
        return 0, 0.0
    found = int(np.count_nonzero(np.isin(eval_ngrams, found_hashes, assume_unique=False)))
    return found, found / len(eval_ngrams)
