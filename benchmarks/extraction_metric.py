"""The article-extraction benchmark's metric: word 4-gram precision, recall and F1 of extracted texts against the truth.

Used by bench_extract.py and the crawl stage's test on the benchmark pages.
"""
from __future__ import annotations

import re
from collections import Counter

_WORD_RE = re.compile(r"\w+")


def _shingles(text: str, n: int = 4) -> Counter:
    tokens = _WORD_RE.findall(text or "")
    if len(tokens) < n:
        return Counter([tuple(tokens)]) if tokens else Counter()
    return Counter(zip(*(tokens[i:] for i in range(n))))


def extraction_scores(predicted: dict[str, str | None], truth: dict[str, str]) -> tuple[float, float, float]:
    """(precision, recall, F1) of extracted texts against true article bodies, as the article-extraction benchmark
    computes them: word 4-gram multisets per page, each page's counts normalised, P and R averaged over pages."""
    precisions, recalls = [], []
    for key, true_text in truth.items():
        true_grams, predicted_grams = _shingles(true_text), _shingles(predicted.get(key) or "")
        tp = sum((true_grams & predicted_grams).values())
        fp, fn = sum(predicted_grams.values()) - tp, sum(true_grams.values()) - tp
        if fp == 0 and fn == 0:
            precisions.append(1.0)
            recalls.append(1.0)
            continue
        if tp + fp:
            precisions.append(tp / (tp + fp))
        if tp + fn:
            recalls.append(tp / (tp + fn))
    precision = sum(precisions) / len(precisions) if precisions else 0.0
    recall = sum(recalls) / len(recalls) if recalls else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
