"""Near-duplicate quality of `webtext dedup` on planted near-duplicates of real text: precision, recall, S-curve.

Every real document (the extraction benchmark's article bodies, Tiny Shakespeare passages) gets generated variants
(word edits, inserted boilerplate, truncation, reordered paragraphs, combinations) of random strength. The true
Jaccard similarity of every pair in a family is computed here, independently of webtext.dedup (own tokeniser, Python
sets of word 5-grams); then the stage runs on the whole corpus and its clusters are scored against that truth.

    python benchmarks/bench_dedup_quality.py [--variants 6] [--threshold 0.8] [--json out.json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from bench_dedup_corpus import articles, shakespeare_passages, write_docs
from webtext.dedup.lsh import Banding, band_keys, optimal_bands
from webtext.dedup.minhash import MinHasher, estimated_jaccard
from webtext.dedup.text import words
from webtext.pipeline import layout
from webtext.pipeline.cli import main as webtext

BOILERPLATE = ("Sign up for our newsletter to get the latest stories delivered to your inbox. We use cookies to improve "
               "your experience on our site; by continuing you agree to our cookie policy and privacy notice. Share "
               "this article on Facebook, Twitter or by email. All rights reserved. Advertisement. Read more: the "
               "most popular stories of the week, chosen by our editors. Comments are closed for this article.").split()
BINS = [(0.0, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.75), (0.75, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 0.95),
        (0.95, 1.0), (1.0, 1.01)]


# -- ground truth, independent of webtext.dedup ----------------------------------------------------------------------


def truth_shingles(text: str, n: int = 5) -> frozenset:
    tokens = [t for t in re.findall(r"\w+", text.lower()) if t != "_"]
    if len(tokens) < n:
        return frozenset([tuple(tokens)]) if tokens else frozenset()
    return frozenset(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def true_jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


# -- variants ------------------------------------------------------------------------------------------------------


def word_edits(rng: random.Random, text: str, vocabulary: list[str], rate: float) -> str:
    tokens = text.split(" ")
    for i in rng.sample(range(len(tokens)), max(1, int(rate * len(tokens)))):
        tokens[i] = rng.choice(vocabulary)
    return " ".join(tokens)


def insert_boilerplate(rng: random.Random, text: str, words_to_add: int) -> str:
    block = " ".join(itertools.islice(itertools.cycle(BOILERPLATE), rng.randrange(len(BOILERPLATE)),
                                      rng.randrange(len(BOILERPLATE)) + words_to_add))
    paragraphs = text.split("\n")
    at = rng.choice([0, len(paragraphs) // 2, len(paragraphs)])
    return "\n".join(paragraphs[:at] + [block] + paragraphs[at:])


def truncate(text: str, keep: float) -> str:
    return text[:max(1, int(len(text) * keep))]


def reorder_paragraphs(rng: random.Random, text: str) -> str:
    separator = "\n\n" if text.count("\n\n") >= 2 else "\n"
    paragraphs = text.split(separator)
    rng.shuffle(paragraphs)
    return separator.join(paragraphs)


def make_variant(rng: random.Random, text: str, vocabulary: list[str]) -> tuple[str, str]:
    kind = rng.choice(["edits", "boilerplate", "truncate", "reorder", "edits+boilerplate", "reorder+edits"])
    n_words = len(text.split())
    if kind == "edits":
        return kind, word_edits(rng, text, vocabulary, rng.uniform(0.002, 0.08))
    if kind == "boilerplate":
        return kind, insert_boilerplate(rng, text, int(n_words * rng.uniform(0.02, 0.6)))
    if kind == "truncate":
        return kind, truncate(text, rng.uniform(0.5, 0.995))
    if kind == "reorder":
        return kind, reorder_paragraphs(rng, text)
    if kind == "edits+boilerplate":
        edited = word_edits(rng, text, vocabulary, rng.uniform(0.002, 0.04))
        return kind, insert_boilerplate(rng, edited, int(n_words * rng.uniform(0.02, 0.3)))
    return kind, word_edits(rng, reorder_paragraphs(rng, text), vocabulary, rng.uniform(0.002, 0.04))


def planted_corpus(variants: int, seed: int) -> tuple[list[dict], dict[str, str]]:
    """Rows of the corpus and, per doc_id, its family (the real document it was made from)."""
    rng = random.Random(seed)
    bases = [t for t in articles() if len(t.split()) >= 150] + shakespeare_passages()
    vocabulary = sorted({w for t in bases for w in t.split()})
    rows, family = [], {}
    for index, base in enumerate(bases):
        texts = [("original", base)] + [make_variant(rng, base, vocabulary) for _ in range(variants)]
        for number, (kind, text) in enumerate(texts):
            doc_id = f"f{index:03d}-{number}-{kind}"
            rows.append({"doc_id": doc_id, "url": f"https://bench.example/{doc_id}", "domain": "bench.example",
                         "text": text, "score": rng.randint(3, 500)})
            family[doc_id] = f"f{index:03d}"
    return rows, family


# -- scoring -------------------------------------------------------------------------------------------------------


@dataclass
class StageResult:
    clustering: str
    seconds: float
    cluster_of: dict[str, str]  # doc_id -> cluster_id (the survivor), for documents in a duplicate cluster
    kept: set[str]
    verified_pairs: list[tuple[str, str]]


def run_stage(run: Path, threshold: float, clustering: str) -> StageResult:
    started = time.perf_counter()
    argv = ["dedup", str(run), "--threshold", str(threshold), "--clustering", clustering, "--force",
            "--runner=FnApiRunner"]
    assert webtext(argv) == 0
    seconds = time.perf_counter() - started
    dedup = Path(run, layout.DEDUP)
    read = lambda prefix, columns: [row for path in sorted(dedup.glob(f"{prefix}-*.parquet"))  # noqa: E731
                                    for row in pq.read_table(path, columns=columns).to_pylist()]
    cluster_of = {r["doc_id"]: r["cluster_id"] for r in read("clusters", ["doc_id", "cluster_id"])}
    kept = {r["doc_id"] for r in read("docs", ["doc_id"])}
    pairs = [(r["doc_id_a"], r["doc_id_b"]) for r in read("pairs", ["doc_id_a", "doc_id_b"])]
    return StageResult(clustering, seconds, cluster_of, kept, pairs)


def lsh_candidate(signatures: dict[str, np.ndarray], banding: Banding, a: str, b: str) -> bool:
    return any(x == y for x, y in zip(band_keys(signatures[a], banding), band_keys(signatures[b], banding)))


def share(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else float("nan")


def summary(result: StageResult, shingle_sets: dict, family: dict, pairs: list, threshold: float) -> dict:
    """Precision of what the stage calls duplicates and recall of the true near-duplicate pairs, against the truth."""
    jac = lambda a, b: true_jaccard(shingle_sets[a], shingle_sets[b])  # noqa: E731
    removed = [(d, c) for d, c in result.cluster_of.items() if d != c]
    by_cluster: dict[str, list[str]] = {}
    for doc_id, cluster in result.cluster_of.items():
        by_cluster.setdefault(cluster, []).append(doc_id)
    survivor_pairs = [jac(d, c) for d, c in removed]
    both_kept = lambda a, b: a in result.kept and b in result.kept  # noqa: E731
    high = [(a, b) for a, b, j in pairs if j >= 0.9]
    at_threshold = [(a, b) for a, b, j in pairs if j >= threshold]
    return {
        "clustering": result.clustering, "stage_seconds": round(result.seconds, 1),
        "removed": len(removed), "verified_pairs": len(result.verified_pairs),
        "precision_verified_pairs": share(jac(a, b) >= threshold for a, b in result.verified_pairs),
        "precision_removed_vs_own_survivor": share(j >= threshold for j in survivor_pairs),
        "min_jaccard_removed_vs_own_survivor": round(min(survivor_pairs, default=1.0), 3),
        "precision_removed_backed_by_a_true_pair": share(
            any(jac(d, o) >= threshold for o in by_cluster[c] if o != d) for d, c in removed),
        "cross_family_pairs_in_clusters": sum(family[a] != family[b] for docs in by_cluster.values()
                                              for a, b in itertools.combinations(docs, 2)),
        "pairs_jaccard_ge_0.9": len(high),
        "recall_ge_0.9_not_both_kept": share(not both_kept(a, b) for a, b in high),
        "recall_ge_0.9_same_cluster": share(result.cluster_of.get(a, a) == result.cluster_of.get(b, b) for a, b in high),
        "recall_ge_threshold_not_both_kept": share(not both_kept(a, b) for a, b in at_threshold),
    }


def s_curve(results: dict[str, StageResult], pairs: list, signatures: dict, threshold: float) -> list[dict]:
    """Per bin of true Jaccard: what the stage did, how often LSH made the pair a candidate, and theory beside it."""
    default_banding = optimal_bands(threshold, 128)
    datasketch_banding = optimal_bands(threshold, 128, false_negative_weight=0.5)
    components, star = results["components"], results["star"]
    table = []
    for low, high in BINS:
        in_bin = [(a, b, j) for a, b, j in pairs if low <= j < high]
        if not in_bin:
            continue
        table.append({
            "jaccard": f"[{low:.2f}, {min(high, 1.0):.2f}{']' if high > 1 else ')'}", "pairs": len(in_bin),
            "components_same_cluster": share(components.cluster_of.get(a, a) == components.cluster_of.get(b, b)
                                             for a, b, _ in in_bin),
            "star_not_both_kept": share(not (a in star.kept and b in star.kept) for a, b, _ in in_bin),
            "lsh_candidate": share(lsh_candidate(signatures, default_banding, a, b) for a, b, _ in in_bin),
            "lsh_theory": float(np.mean([default_banding.collision_probability(j) for *_, j in in_bin])),
            "lsh_candidate_9x13": share(lsh_candidate(signatures, datasketch_banding, a, b) for a, b, _ in in_bin),
            "lsh_theory_9x13": float(np.mean([datasketch_banding.collision_probability(j) for *_, j in in_bin])),
            "minhash_estimate_minus_true": float(np.mean([estimated_jaccard(signatures[a], signatures[b]) - j
                                                          for a, b, j in in_bin])),
        })
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=int, default=6, help="generated variants per real document")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()

    rows, family = planted_corpus(args.variants, args.seed)
    texts = {r["doc_id"]: r["text"] for r in rows}
    shingle_sets = {doc_id: truth_shingles(text) for doc_id, text in texts.items()}
    members: dict[str, list[str]] = {}
    for doc_id, fam in family.items():
        members.setdefault(fam, []).append(doc_id)
    pairs = [(a, b, true_jaccard(shingle_sets[a], shingle_sets[b]))
             for docs in members.values() for a, b in itertools.combinations(docs, 2)]
    print(f"{len(rows):,} documents in {len(members)} families, {len(pairs):,} within-family pairs")

    run = Path(args.workdir or tempfile.mkdtemp(prefix="bench-dedup-quality-"))
    write_docs(Path(run, layout.DOCS), rows, files=4)
    Path(run, layout.PLACED_DOCS).touch()  # a corpus made here, not by the crawl stage
    results = {mode: run_stage(run, args.threshold, mode) for mode in ("components", "star")}
    hasher = MinHasher()
    signatures = {d: hasher.signature(hasher.shingle_hashes(words(t))) for d, t in texts.items()}
    banding = optimal_bands(args.threshold, 128)
    figures = {"documents": len(rows), "families": len(members), "pairs": len(pairs), "threshold": args.threshold,
               "banding": f"{banding.bands}x{banding.rows}",
               "modes": {mode: summary(result, shingle_sets, family, pairs, args.threshold)
                         for mode, result in results.items()},
               "s_curve": s_curve(results, pairs, signatures, args.threshold)}
    print(json.dumps({k: v for k, v in figures.items() if k != "s_curve"}, indent=2))
    print(f"\n| true Jaccard | pairs | same cluster (components) | not both kept (star) | "
          f"LSH candidate {banding.bands}x{banding.rows} | theory | LSH candidate 9x13 | theory 9x13 | "
          "MinHash estimate - true J |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in figures["s_curve"]:
        print(f"| {row['jaccard']} | {row['pairs']:,} | {row['components_same_cluster']:.3f} | "
              f"{row['star_not_both_kept']:.3f} | {row['lsh_candidate']:.3f} | {row['lsh_theory']:.3f} | "
              f"{row['lsh_candidate_9x13']:.3f} | {row['lsh_theory_9x13']:.3f} | "
              f"{row['minhash_estimate_minus_true']:+.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
