"""Document quality rules in the spirit of Gopher (Rae et al. 2021) and C4 (Raffel et al. 2020).

A rule is a check declared with `@quality_rule(reason, threshold_name=Threshold(type, default, help), …)`: its reason
is the reject reason and the name `--skip-rules` knows, its thresholds are fields of `QualityConfig` and so
`webtext crawl` flags and [crawl] keys. `first_failure` applies the rules in the order they are declared, cheapest
first. Defaults and their justification: docs/crawl.md.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, make_dataclass
from functools import cached_property
from typing import Any, Callable

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})  # Gopher's list
BULLETS = ("•", "●", "○", "▪", "◦", "‣", "·", "-", "*", "–")
ELLIPSES = ("...", "…")
_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»—–…¡¿"
_LOREM_RE = re.compile(r"lorem ipsum", re.IGNORECASE)
_LETTER_RE = re.compile(r"[^\W\d_]")


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


@dataclass(frozen=True)
class Threshold:
    """A rule's knob: a field of QualityConfig, so the flag `--<name>` and the [crawl] key `<name>`."""

    type: Any
    default: Any
    help: str = ""


@dataclass(frozen=True)
class QualityRule:
    """A registered rule: `check` gives None when a document passes, else the reject detail."""

    reason: str
    check: Callable[[Document, Any], "str | None"]
    thresholds: dict[str, Threshold]
    on_by_default: bool = True


RULES: dict[str, QualityRule] = {}  # by reason, in the order they run


def quality_rule(reason: str, on_by_default: bool = True, **thresholds: Threshold):
    """Registers the decorated check as the rule `reason`, with its thresholds (keyword name = QualityConfig field)."""
    def register(check: Callable[[Document, Any], str | None]):
        RULES[reason] = QualityRule(reason, check, thresholds, on_by_default)
        return check
    return register


# -- Gopher: size and shape ----------------------------------------------------------------------------------------

@quality_rule("too-few-words", min_words=Threshold(int, 50))
def too_few_words(doc: Document, config: QualityConfig) -> str | None:
    n = len(doc.words)
    return f"{n} words < {config.min_words}" if n < config.min_words else None


@quality_rule("too-many-words", max_words=Threshold(int, 100_000))
def too_many_words(doc: Document, config: QualityConfig) -> str | None:
    n = len(doc.words)
    return f"{n} words > {config.max_words}" if n > config.max_words else None


@quality_rule("mean-word-length", min_mean_word_length=Threshold(float, 3.0, "lower bound"),
              max_mean_word_length=Threshold(float, 10.0, "upper bound"))
def mean_word_length(doc: Document, config: QualityConfig) -> str | None:
    words = doc.stripped_words
    mean = sum(len(w) for w in words) / len(words) if words else 0.0
    if not config.min_mean_word_length <= mean <= config.max_mean_word_length:
        return f"{mean:.2f} outside [{config.min_mean_word_length:g}, {config.max_mean_word_length:g}]"
    return None


@quality_rule("symbol-ratio", max_symbol_ratio=Threshold(float, 0.1, "(# and ellipses) per word"))
def symbol_ratio(doc: Document, config: QualityConfig) -> str | None:
    symbols = doc.text.count("#") + sum(doc.text.count(e) for e in ELLIPSES)
    ratio = symbols / max(1, len(doc.words))
    return f"{ratio:.3f} > {config.max_symbol_ratio:g}" if ratio > config.max_symbol_ratio else None


@quality_rule("bullet-lines", max_bullet_lines=Threshold(float, 0.9, "share of lines"))
def bullet_lines(doc: Document, config: QualityConfig) -> str | None:
    share = _share(doc.lines, lambda line: line.startswith(BULLETS))
    return f"{share:.2f} > {config.max_bullet_lines:g}" if share > config.max_bullet_lines else None


@quality_rule("ellipsis-lines", max_ellipsis_lines=Threshold(float, 0.3, "share of lines"))
def ellipsis_lines(doc: Document, config: QualityConfig) -> str | None:
    share = _share(doc.lines, lambda line: line.endswith(ELLIPSES))
    return f"{share:.2f} > {config.max_ellipsis_lines:g}" if share > config.max_ellipsis_lines else None


@quality_rule("alpha-words", min_alpha_words=Threshold(float, 0.8, "share of words with a letter"))
def alpha_words(doc: Document, config: QualityConfig) -> str | None:
    share = _share(doc.words, lambda word: word.isalpha() or _LETTER_RE.search(word) is not None)
    return f"{share:.2f} < {config.min_alpha_words:g}" if share < config.min_alpha_words else None


@quality_rule("stop-words", min_stop_words=Threshold(int, 2, "English only"))
def stop_words(doc: Document, config: QualityConfig) -> str | None:
    """English only: a text without the commonest function words is not running prose."""
    if doc.language != "en":
        return None
    count = sum(1 for w in doc.stripped_words if w.lower() in STOP_WORDS)
    return f"{count} stop words < {config.min_stop_words}" if count < config.min_stop_words else None


# -- C4 ------------------------------------------------------------------------------------------------------------

@quality_rule("lorem-ipsum")
def lorem_ipsum(doc: Document, config: QualityConfig) -> str | None:
    return "contains 'lorem ipsum'" if _LOREM_RE.search(doc.text) else None


@quality_rule("curly-brace", on_by_default=False)
def curly_brace(doc: Document, config: QualityConfig) -> str | None:
    """C4 drops any page with a curly brace (code); off by default: WebText kept programming pages."""
    return "contains '{'" if "{" in doc.text else None


# -- Gopher: repetition --------------------------------------------------------------------------------------------

@quality_rule("repeated-lines", max_duplicate_lines=Threshold(float, 0.3, "share of lines"),
              max_duplicate_line_chars=Threshold(float, 0.2, "share of characters"))
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


@quality_rule("top-ngram", top_ngram_limits=Threshold(tuple[float, ...], (0.20, 0.18, 0.16), "limits for n = 2, 3, 4"))
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


@quality_rule("duplicate-ngrams", duplicate_ngram_limits=Threshold(
    tuple[float, ...], (0.15, 0.14, 0.13, 0.12, 0.11, 0.10), "limits for n = 5 … 10"))
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


def quality_config() -> type:
    """The QualityConfig dataclass of the rules registered so far: their thresholds, then the rules skipped."""
    fields = [(name, knob.type, field(default=knob.default, metadata={
        "help": f"rule {rule.reason}" + (f": {knob.help}" if knob.help else "")}))
        for rule in RULES.values() for name, knob in rule.thresholds.items()]
    skipped = frozenset(rule.reason for rule in RULES.values() if not rule.on_by_default)
    fields.append(("disabled", frozenset[str], field(default=skipped, metadata={
        "help": "quality rules not applied ('none' applies all, 'all' none)", "flag": "--skip-rules",
        "choices": sorted(RULES) + ["none", "all"]})))
    return make_dataclass("QualityConfig", fields, frozen=True, namespace={
        "__module__": __name__, "__post_init__": _resolve_skipped,
        "__doc__": "Thresholds of the quality rules; a rule named in `disabled` is skipped."})


def _resolve_skipped(config) -> None:
    """`disabled` as rule names: 'all' (every rule) and 'none' (no rule) are the --skip-rules words for them."""
    skipped = frozenset(config.disabled)
    object.__setattr__(config, "disabled", frozenset(RULES) if "all" in skipped else skipped - {"none"})


QualityConfig = quality_config()


def first_failure(text: str, language: str, config: QualityConfig) -> tuple[str, str] | None:
    """(reason, detail) of the first enabled rule the text fails, or None when it passes them all."""
    doc = Document(text, language)
    for reason, rule in RULES.items():
        if reason in config.disabled:
            continue
        detail = rule.check(doc, config)
        if detail is not None:
            return reason, detail
    return None


def all_failures(text: str, language: str, config: QualityConfig) -> dict[str, str]:
    """Every enabled rule the text fails, with its detail (for reports and for choosing thresholds)."""
    doc = Document(text, language)
    return {reason: detail for reason, rule in RULES.items()
            if reason not in config.disabled and (detail := rule.check(doc, config)) is not None}
