"""Duplicate clusters from the verified edges, each with its survivor: connected components (union-find) or stars."""
from __future__ import annotations

from typing import Iterable, Iterator

from .survivors import DocRank, pick_survivor


class UnionFind:
    """Disjoint sets of doc_ids; memory grows with the documents that have an edge, not with the corpus."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = {}

    def find(self, item: str) -> str:
        parent = self.parent.setdefault(item, item)
        if parent == item:
            self.size.setdefault(item, 1)
            return item
        while parent != self.parent[parent]:  # path halving
            self.parent[parent] = self.parent[self.parent[parent]]
            parent = self.parent[parent]
        self.parent[item] = parent
        return parent

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return
        if self.size[root_a] < self.size[root_b]:
            root_a, root_b = root_b, root_a
        self.parent[root_b] = root_a
        self.size[root_a] += self.size.pop(root_b)

    def groups(self) -> dict[str, list[str]]:
        """Root -> members; which member is the root depends on the union order, so callers must not rely on it."""
        groups: dict[str, list[str]] = {}
        for item in self.parent:
            groups.setdefault(self.find(item), []).append(item)
        return groups


def clusters(edges: Iterable[tuple[DocRank, DocRank]]) -> Iterator[tuple[DocRank, list[DocRank]]]:
    """(survivor, members sorted by doc_id, survivor included) for each connected component of the edges.

    The same clusters and survivors come out whatever the order of the edges.
    """
    union_find = UnionFind()
    ranks: dict[str, DocRank] = {}
    for first, second in edges:
        ranks[first.doc_id] = first
        ranks[second.doc_id] = second
        union_find.union(first.doc_id, second.doc_id)
    for members in union_find.groups().values():
        member_ranks = sorted((ranks[m] for m in members), key=lambda r: r.doc_id)
        yield pick_survivor(member_ranks), member_ranks


def star_clusters(edges: Iterable[tuple[DocRank, DocRank]]) -> Iterator[tuple[DocRank, list[DocRank]]]:
    """Clusters in which every member has a verified edge to its survivor (no chains), in survivor-rule order.

    Documents are taken best first; one with an edge to an already chosen survivor joins the best such survivor,
    any other becomes a survivor itself. The survivors then share no edge, and the result does not depend on the
    order of the edges. A connected component may split into several clusters.
    """
    neighbours: dict[str, set[str]] = {}
    ranks: dict[str, DocRank] = {}
    for first, second in edges:
        ranks[first.doc_id], ranks[second.doc_id] = first, second
        neighbours.setdefault(first.doc_id, set()).add(second.doc_id)
        neighbours.setdefault(second.doc_id, set()).add(first.doc_id)
    members_of: dict[str, list[DocRank]] = {}
    for rank in sorted(ranks.values(), key=DocRank.sort_key):
        chosen = [ranks[n] for n in neighbours[rank.doc_id] if n in members_of]
        if chosen:
            members_of[pick_survivor(chosen).doc_id].append(rank)
        else:
            members_of[rank.doc_id] = [rank]
    for survivor_id, members in members_of.items():
        if len(members) > 1:
            yield ranks[survivor_id], sorted(members, key=lambda r: r.doc_id)
