"""Text normalisation shared by exact hashing, shingling and decontamination: case, punctuation and whitespace folded.

A word is a run of letters, digits and combining marks (so Devanagari or Arabic words stay whole); in scripts written
without spaces (Han, kana, Thai, Lao, Khmer, Myanmar) every character is a word of its own.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata

import regex

_ASCII_WORD = re.compile(r"[a-z0-9]+")
_WORD = regex.compile(r"[\p{L}\p{N}\p{M}]+")
_UNSPACED_SCRIPTS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
_WORD_OR_UNSPACED_CHAR = regex.compile(
    rf"[{_UNSPACED_SCRIPTS}]|[[\p{{L}}\p{{N}}\p{{M}}]--[{_UNSPACED_SCRIPTS}]]+", flags=regex.V1)
# A quick superset of those scripts' blocks (stdlib `re` scans much faster); it only picks the slower pattern.
_MAYBE_UNSPACED = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
                             "\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def words(text: str) -> list[str]:
    """The normalised words of a text: NFKC, case-folded, punctuation and whitespace dropped."""
    if text.isascii():  # NFKC and case folding of ASCII are plain lower-casing, and ASCII has no marks
        return _ASCII_WORD.findall(text.lower())
    folded = unicodedata.normalize("NFKC", text).casefold()
    if _MAYBE_UNSPACED.search(folded):
        return _WORD_OR_UNSPACED_CHAR.findall(folded)
    return _WORD.findall(folded)


def normalized_text(text: str) -> str:
    """The words joined by single spaces: two texts that differ only in case, punctuation or spacing are equal."""
    return " ".join(words(text))


def exact_hash(text_words: list[str]) -> str:
    """A 128-bit hex digest of the normalised text (given as its words); equal digests are exact duplicates."""
    return hashlib.blake2b(" ".join(text_words).encode("utf-8"), digest_size=16).hexdigest()
