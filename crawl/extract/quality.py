"""Document quality rules in the spirit of Gopher (Rae et al. 2021) and C4 (Raffel et al. 2020).

Each rule is a function with its own reject reason (its name) and threshold in `QualityConfig`; `first_failure`
applies them cheapest first. Defaults and their justification: docs/crawl.md.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Callable

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})  # Gopher's list
BULLETS = ("•", "●", "○", "▪", "◦", "‣", "·", "-", "*", "–")
ELLIPSES = ("...", "…")
_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»—–…¡¿"
_LOREM_RE = re.compile(r"lorem ipsum", re.IGNORECASE)
_LETTER_RE = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the quality rules; a rule named in `disabled` is skipped."""

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_ratio: float = 0.1
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alpha_words: float = 0.8
    min_stop_words: int = 2
    max_duplicate_lines: float = 0.3
    max_duplicate_line_chars: float = 0.2
    top_ngram_limits: tuple[float, ...] = (0.20, 0.18, 0.16)  # n = 2, 3, 4
    duplicate_ngram_limits: tuple[float, ...] = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)  # n = 5 … 10
    disabled: frozenset[str] = field(default_factory=lambda: frozenset({"curly-brace"}))

    @classmethod
    def from_dict(cls, values: dict) -> QualityConfig:
        """The known keys of a (stage) config dict; lists become tuples, `disabled` a set."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known and v is not None}
        for key in ("top_ngram_limits", "duplicate_ngram_limits"):
            if key in kwargs:
                kwargs[key] = tuple(float(x) for x in kwargs[key])
        if "disabled" in kwargs:
            kwargs["disabled"] = frozenset(kwargs["disabled"])
        return cls(**kwargs)


class Document:
    """A text and the statistics the rules share, each computed once on first use."""

    def __init__(self, text: str, language: str = "en"):
        self.text, self.language = text, language

    @cached_property
    def words(self) -> list[str]:
        return self.text.split()

    @cached_property
    def lines(self) -> list[str]:
        return [line.strip() for line in self.text.split("\n") if line.strip()]

    @cached_property
    def stripped_words(self) -> list[str]:
        return [w for w in (word.strip(_PUNCTUATION) for word in self.words) if w]

    @cached_property
    def word_chars(self) -> int:
        return sum(len(w) for w in self.words)


Rule = Callable[[Document, QualityConfig], "str | None"]


# -- Gopher: size and shape ----------------------------------------------------------------------------------------

def too_few_words(doc: Document, config: QualityConfig) -> str | None:
    n = len(doc.words)
    return f"{n} words < {config.min_words}" if n < config.min_words else None


def too_many_words(doc: Document, config: QualityConfig) -> str | None:
    n = len(doc.words)
    return f"{n} words > {config.max_words}" if n > config.max_words else None


def mean_word_length(doc: Document, config: QualityConfig) -> str | None:
    words = doc.stripped_words
    mean = sum(len(w) for w in words) / len(words) if words else 0.0
    if not config.min_mean_word_length <= mean <= config.max_mean_word_length:
        return f"{mean:.2f} outside [{config.min_mean_word_length:g}, {config.max_mean_word_length:g}]"
    return None


def symbol_ratio(doc: Document, config: QualityConfig) -> str | None:
    symbols = doc.text.count("#") + sum(doc.text.count(e) for e in ELLIPSES)
    ratio = symbols / max(1, len(doc.words))
    return f"{ratio:.3f} > {config.max_symbol_ratio:g}" if ratio > config.max_symbol_ratio else None


def bullet_lines(doc: Document, config: QualityConfig) -> str | None:
    share = _share(doc.lines, lambda line: line.startswith(BULLETS))
    return f"{share:.2f} > {config.max_bullet_lines:g}" if share > config.max_bullet_lines else None


def ellipsis_lines(doc: Document, config: QualityConfig) -> str | None:
    share = _share(doc.lines, lambda line: line.endswith(ELLIPSES))
    return f"{share:.2f} > {config.max_ellipsis_lines:g}" if share > config.max_ellipsis_lines else None


def alpha_words(doc: Document, config: QualityConfig) -> str | None:
    share = _share(doc.words, lambda word: word.isalpha() or _LETTER_RE.search(word) is not None)
    return f"{share:.2f} < {config.min_alpha_words:g}" if share < config.min_alpha_words else None


def stop_words(doc: Document, config: QualityConfig) -> str | None:
    """English only: a text without the commonest function words is not running prose."""
    if doc.language != "en":
        return None
    count = sum(1 for w in doc.stripped_words if w.lower() in STOP_WORDS)
    return f"{count} stop words < {config.min_stop_words}" if count < config.min_stop_words else None


# -- C4 ------------------------------------------------------------------------------------------------------------

def lorem_ipsum(doc: Document, config: QualityConfig) -> str | None:
    return "contains 'lorem ipsum'" if _LOREM_RE.search(doc.text) else None


def curly_brace(doc: Document, config: QualityConfig) -> str | None:
    """C4 drops any page with a curly brace (code); off by default: WebText kept programming pages."""
    return "contains '{'" if "{" in doc.text else None


# -- Gopher: repetition --------------------------------------------------------------------------------------------

def repeated_lines(doc: Document, config: QualityConfig) -> str | None:
    seen: set[str] = set()
    repeats = repeat_chars = 0
    for line in doc.lines:
        if line in seen:
            repeats += 1
            repeat_chars += len(line)
        seen.add(line)
    line_share = repeats / max(1, len(doc.lines))
    char_share = repeat_chars / max(1, sum(len(line) for line in doc.lines))
    if line_share > config.max_duplicate_lines:
        return f"{line_share:.2f} of lines repeat > {config.max_duplicate_lines:g}"
    if char_share > config.max_duplicate_line_chars:
        return f"{char_share:.2f} of line characters repeat > {config.max_duplicate_line_chars:g}"
    return None


def top_ngram(doc: Document, config: QualityConfig) -> str | None:
    """The most frequent word 2-, 3- and 4-gram may not cover too large a share of the characters."""
    words, total = doc.words, doc.word_chars
    for n, limit in zip(range(2, 2 + len(config.top_ngram_limits)), config.top_ngram_limits):
        if len(words) < n or total == 0:
            break
        counts = Counter(_ngrams(words, n))
        gram, count = counts.most_common(1)[0]
        share = count * sum(len(w) for w in gram) / total
        if count > 1 and share > limit:
            return f"top {n}-gram {' '.join(gram)[:60]!r} covers {share:.2f} > {limit:g}"
    return None


def duplicate_ngrams(doc: Document, config: QualityConfig) -> str | None:
    """Words inside repeated word 5- to 10-grams (every occurrence after the first) may not be too large a share."""
    words, total = doc.words, doc.word_chars
    limits = config.duplicate_ngram_limits
    for n, limit in zip(range(5, 5 + len(limits)), limits):
        if len(words) < n or total == 0:
            break
        grams = list(_ngrams(words, n))
        if len(set(grams)) == len(grams):
            break  # nothing repeats at this n, nor at any longer one
        seen: set[tuple[str, ...]] = set()
        covered = [False] * len(words)
        for i, gram in enumerate(grams):
            if gram in seen:
                covered[i:i + n] = [True] * n
            else:
                seen.add(gram)
        share = sum(len(w) for w, hit in zip(words, covered) if hit) / total
        if share > limit:
            return f"repeated {n}-grams cover {share:.2f} > {limit:g}"
        if share <= min(limits[n - 5:]):  # longer repeats cover no more than these: no later n can fail
            break
    return None


def _ngrams(words: list[str], n: int):
    return zip(*(words[i:] for i in range(n)))


def _share(items: list, predicate: Callable) -> float:
    return sum(1 for item in items if predicate(item)) / len(items) if items else 0.0


RULES: dict[str, Rule] = {  # cheapest first; the key is the reject reason
    "too-few-words": too_few_words,
    "too-many-words": too_many_words,
    "mean-word-length": mean_word_length,
    "symbol-ratio": symbol_ratio,
    "bullet-lines": bullet_lines,
    "ellipsis-lines": ellipsis_lines,
    "alpha-words": alpha_words,
    "stop-words": stop_words,
    "lorem-ipsum": lorem_ipsum,
    "curly-brace": curly_brace,
    "repeated-lines": repeated_lines,
    "top-ngram": top_ngram,
    "duplicate-ngrams": duplicate_ngrams,
}


def first_failure(text: str, language: str, config: QualityConfig) -> tuple[str, str] | None:
    """(reason, detail) of the first enabled rule the text fails, or None when it passes them all."""
    doc = Document(text, language)
    for reason, rule in RULES.items():
        if reason in config.disabled:
            continue
        detail = rule(doc, config)
        if detail is not None:
            return reason, detail
    return None


def all_failures(text: str, language: str, config: QualityConfig) -> dict[str, str]:
    """Every enabled rule the text fails, with its detail (for reports and for choosing thresholds)."""
    doc = Document(text, language)
    return {reason: detail for reason, rule in RULES.items()
            if reason not in config.disabled and (detail := rule(doc, config)) is not None}
