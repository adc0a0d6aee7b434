"""Invertible de-tokenisers for WikiText and PTB (GPT-2 paper, section 3.1): the model sees natural text, and
`retokenize` gives back the original line, so the original's word count still applies."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

CLITICS = ("n't", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
CLOSING = (",", ".", ":", ";", "!", "?", ")", "]", "}")
OPENING = ("(", "[", "{")
NUMBER_JOINERS = {"@-@": "-", "@,@": ",", "@.@": "."}
# an original token ending in "." that the inverse keeps whole: initials, dotted acronyms, short capitalised
# abbreviations, an ellipsis ("No.", "U.S.", "St.", "e.g."); a word + " ." that would look like one stays apart
ABBREVIATION = re.compile(r"(?:[A-Za-z]\.)+|[A-Z][a-z]{0,3}\.|[a-z]{1,2}\.|\.\.+")
# where the inverse puts "@-@" / "@,@" / "@.@" back: a hyphen inside a word, a comma or point inside a number
JOINED = re.compile(r"((?<=\d)[.,](?=\d+(?!\w))|(?<=[^\s\-,.@])-(?=[^\s\-,.@]))")


@dataclass(frozen=True)
class Detokenizer:
    """Which gaps between the original's space-separated tokens are closed (see `join_gap`)."""

    name: str
    clitics: bool = True
    punctuation: bool = False  # WikiText: " , " " . " brackets, quotes, "@-@", "= =" headings

    def detokenize(self, text: str) -> str:
        body, end = _final_newline(text)
        return "\n".join(self.detokenize_line(line) for line in body.split("\n")) + end

    def retokenize(self, text: str) -> str:
        body, end = _final_newline(text)
        return "\n".join(self.retokenize_line(line) for line in body.split("\n")) + end

    def detokenize_line(self, line: str) -> str:
        """Tokens joined where the gap closes and the join splits back into the same tokens (checked per join)."""
        if not (line.startswith(" ") and line.endswith(" ")):
            return line  # not in the tokenised form (" tok tok \n"); left as it is
        tokens = line[1:-1].split(" ") if line.strip() else []
        groups: list[list[str]] = []
        quotes_open = False
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if groups and token in NUMBER_JOINERS and self.punctuation and index + 1 < len(tokens):
                taken = tokens[index: index + 2]  # "1 @,@ 000": the joiner and the word after it join together
            else:
                taken = [token]
            if groups and self.join_gap(groups[-1][-1], token, quotes_open) and self._splits_back(groups[-1] + taken):
                groups[-1].extend(taken)
                index += len(taken)
            else:
                groups.append([token])
                index += 1
            quotes_open ^= token == '"'
        return " ".join("".join(self._joined(t) for t in group) if len(group) > 1 else group[0] for group in groups)

    def _splits_back(self, group: list[str]) -> bool:
        return self.split_token("".join(self._joined(t) for t in group)) == group

    def retokenize_line(self, line: str) -> str:
        if not line:
            return " "  # the empty lines of the tokenised files hold one space
        return " " + " ".join(t for word in line.split(" ") for t in self.split_token(word)) + " "

    def _joined(self, token: str) -> str:
        return NUMBER_JOINERS.get(token, token) if self.punctuation else token

    def join_gap(self, left: str, right: str, quotes_open: bool) -> bool:
        """Whether the space between two original tokens is one a writer would not type."""
        if self.clitics and right in CLITICS:
            return True
        if not self.punctuation:
            return False
        if right in NUMBER_JOINERS or left in NUMBER_JOINERS:
            return True
        if right in CLOSING or left in OPENING:
            return True
        if left == "=" and right == "=":
            return True
        if right == '"':
            return quotes_open  # a closing quote joins the word before it
        return left == '"' and quotes_open  # an opening quote joins the word after it

    def split_token(self, word: str) -> list[str]:
        """The original tokens of one detokenised word: the inverse of joining."""
        if not word or (self.punctuation and word in NUMBER_JOINERS):
            return [word]
        head: list[str] = []
        tail: list[str] = []
        if self.punctuation:
            if set(word) == {"="} and len(word) > 1:
                return ["="] * len(word)
            while len(word) > 1 and (word[0] in OPENING or word[0] == '"'):
                head.append(word[0])
                word = word[1:]
        while len(word) > 1:
            clitic = next((c for c in CLITICS if self.clitics and word.endswith(c) and len(word) > len(c)), None)
            if clitic:
                tail.insert(0, clitic)
                word = word[: -len(clitic)]
            elif self.punctuation and (word[-1] in CLOSING or word[-1] == '"') and not ABBREVIATION.fullmatch(word):
                tail.insert(0, word[-1])
                word = word[:-1]
            else:
                break
        middle = [word]
        if self.punctuation:
            inverse = {joined: token for token, joined in NUMBER_JOINERS.items()}
            middle = [inverse.get(part, part) if index % 2 else part
                      for index, part in enumerate(JOINED.split(word))]
        return head + [part for part in middle if part != ""] + tail if word else head + tail


def _final_newline(text: str) -> tuple[str, str]:
    return (text[:-1], "\n") if text.endswith("\n") else (text, "")


DETOKENIZERS: dict[str, Detokenizer | None] = {
    "none": None,
    "wikitext": Detokenizer("wikitext", clitics=True, punctuation=True),
    "ptb": Detokenizer("ptb", clitics=True, punctuation=False),
}


def detokenizer(name: str) -> Callable[[str], str]:
    chosen = DETOKENIZERS[name]
    return (lambda text: text) if chosen is None else chosen.detokenize


def original_words(text: str) -> int:
    """Words of the original (tokenised) text as the datasets count them: whitespace-separated tokens."""
    return len(text.split())
