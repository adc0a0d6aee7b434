"""The survivor rule of a duplicate cluster: highest karma, then longest text, then smallest doc_id."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class DocRank:
    """What the survivor rule looks at; small enough to travel with every band key and edge."""

    doc_id: str
    score: int
    length: int  # characters of the original text

    def sort_key(self) -> tuple[int, int, str]:
        """Smaller is better: the survivor of a cluster is the member with the smallest key."""
        return -self.score, -self.length, self.doc_id


def pick_survivor(members: Iterable[T], rank: Callable[[T], DocRank] = lambda member: member) -> T:
    """The member that stays (the one whose `rank` has the smallest sort key); the same whatever the order."""
    best, best_key = None, None
    for member in members:
        key = rank(member).sort_key()
        if best_key is None or key < best_key:
            best, best_key = member, key
    if best is None:
        raise ValueError("a cluster needs at least one member")
    return best
