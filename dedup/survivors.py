"""The survivor rule of a duplicate cluster: highest karma, then longest text, then smallest doc_id."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class DocRank:
    """What the survivor rule looks at; small enough to travel with every band key and edge."""

    doc_id: str
    score: int
    length: int  # characters of the original text

    def sort_key(self) -> tuple[int, int, str]:
        """Smaller is better: the survivor of a cluster is the member with the smallest key."""
        return -self.score, -self.length, self.doc_id


def pick_survivor(members: Iterable[DocRank]) -> DocRank:
    """The member that stays; the same whatever the order of `members`."""
    best = None
    for member in members:
        if best is None or member.sort_key() < best.sort_key():
            best = member
    if best is None:
        raise ValueError("a cluster needs at least one member")
    return best
