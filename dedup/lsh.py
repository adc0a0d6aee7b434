"""LSH banding of MinHash signatures: choosing bands x rows for a Jaccard threshold, band keys, pairs from a bucket.

Two documents become a candidate pair when all `rows` values of at least one of the `bands` bands agree, which
happens with probability 1 - (1 - s**rows)**bands at Jaccard s (the S-curve). `optimal_bands` minimises the
weighted areas under the curve below the threshold (false positives) and above it (false negatives), as datasketch's
MinHashLSH does; with verified candidates a false positive only costs a comparison, so missing pairs weighs more here.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, TypeVar

import numpy as np

from .survivors import DocRank, pick_survivor

DEFAULT_FALSE_NEGATIVE_WEIGHT = 0.9
R = TypeVar("R", bound=DocRank)


@dataclass(frozen=True)
class Banding:
    bands: int
    rows: int

    def collision_probability(self, similarity: float | np.ndarray) -> float | np.ndarray:
        """Chance that two documents of this Jaccard similarity share at least one band."""
        return 1.0 - (1.0 - np.asarray(similarity, dtype=float) ** self.rows) ** self.bands


def _area(banding: Banding, low: float, high: float, missed: bool, points: int = 1001) -> float:
    s = np.linspace(low, high, points)
    p = banding.collision_probability(s)
    return float(np.trapezoid(1.0 - p if missed else p, s))


def optimal_bands(threshold: float, num_perm: int,
                  false_negative_weight: float = DEFAULT_FALSE_NEGATIVE_WEIGHT) -> Banding:
    """The bands x rows (bands * rows <= num_perm) with the least weighted false positive + false negative area."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    if not 0.0 <= false_negative_weight <= 1.0:
        raise ValueError(f"false_negative_weight must be between 0 and 1, got {false_negative_weight}")
    best, best_error = Banding(1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            banding = Banding(bands, rows)
            error = ((1.0 - false_negative_weight) * _area(banding, 0.0, threshold, missed=False)
                     + false_negative_weight * _area(banding, threshold, 1.0, missed=True))
            if error < best_error:
                best, best_error = banding, error
    return best


BAND_KEY_BYTES = 10  # 2 of band index, 8 of digest


def band_keys(signature: np.ndarray, banding: Banding) -> list[bytes]:
    """One key of BAND_KEY_BYTES per band: the band's index and a 64-bit digest of its rows (equal keys = a shared
    band)."""
    rows = banding.rows
    return [index.to_bytes(2, "big") + hashlib.blake2b(signature[index * rows:(index + 1) * rows].tobytes(),
                                                        digest_size=8).digest()
            for index in range(banding.bands)]


def bucket_pairs(members: Iterable[R], max_bucket_size: int) -> Iterable[tuple[R, R]]:
    """Candidate pairs of members (DocRank or a subclass; smaller doc_id first) of one LSH bucket.

    Up to `max_bucket_size` members every pair; a larger bucket pairs each member with the bucket's best-ranked
    member only (a star), so a bucket of n near-identical documents costs n - 1 comparisons, not n^2 / 2.
    `members` is iterated more than once for large buckets and never held whole.
    """
    small: list[R] = []
    for member in members:
        if len(small) == max_bucket_size:
            break
        small.append(member)
    else:
        distinct = sorted({m.doc_id: m for m in small}.values(), key=lambda m: m.doc_id)
        for i, first in enumerate(distinct):
            for second in distinct[i + 1:]:
                yield first, second
        return
    hub = pick_survivor(members)
    for member in members:
        if member.doc_id != hub.doc_id:
            yield (member, hub) if member.doc_id < hub.doc_id else (hub, member)

