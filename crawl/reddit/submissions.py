"""Reddit submissions: the fields the links stage needs, parsed tolerantly from dump records and API data."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .urls import unescape_reddit

__all__ = ["BadSubmission", "CREATED_RANGE", "SCORE_RANGE", "Submission", "parse_submission", "subreddit_name"]

# far beyond any real value, and small enough that a URL's summed score and the Parquet int64 columns cannot overflow
SCORE_RANGE = range(-2**31, 2**31)
CREATED_RANGE = range(0, 2**32)  # 1970 to 2106, in seconds


@dataclass(frozen=True, slots=True)
class Submission:
    """One Reddit submission, with the fields the links stage needs, cleaned of dump-era quirks."""

    id: str
    url: str  # Reddit-unescaped, otherwise as posted
    score: int
    created_utc: int  # seconds since the epoch
    is_self: bool
    over_18: bool
    subreddit: str
    title: str
    permalink: str
    domain: str


class BadSubmission(ValueError):
    """A record that is not a usable submission; `reason` is the reject reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keep both arguments when pickled across Beam workers
        return (BadSubmission, (self.reason, self.detail))


def parse_submission(obj: Any) -> Submission:
    """A `Submission` from one dump record or API `t3` data dict; raises `BadSubmission`.

    Tolerates the eras of the dumps: `created_utc` as int, float or string; a missing score (0, or
    `ups`); missing optional fields; Arctic Shift's extra keys. Reasons: `not-object`,
    `missing-id`, `missing-field`, `bad-field`, `score-out-of-range`, `created-out-of-range` and
    `bad-unicode` (a lone surrogate, which JSON's \\uXXXX escapes allow and UTF-8 cannot hold)."""
    if type(obj) is not dict:
        raise BadSubmission("not-object", f"a JSON {type(obj).__name__}, not an object")
    submission_id = _submission_id(obj)
    created = obj.get("created_utc")
    if created is None:
        raise BadSubmission("missing-field", f"created_utc (id {submission_id})")
    score = obj.get("score")
    if score is None:
        score = obj.get("ups")
    url = obj.get("url")
    return Submission(
        id=submission_id,
        url=unescape_reddit(_text(url, "url", submission_id)) if url is not None else "",
        score=0 if score is None else _in_range(_integer(score, "score", submission_id), SCORE_RANGE,
                                                "score", submission_id),
        created_utc=_in_range(_integer(created, "created_utc", submission_id), CREATED_RANGE, "created_utc",
                              submission_id),
        is_self=_flag(obj.get("is_self")),
        over_18=_flag(obj.get("over_18")),
        subreddit=subreddit_name(obj.get("subreddit")),
        title=unescape_reddit(_text(obj.get("title"), "title", submission_id)),
        permalink=_text(obj.get("permalink"), "permalink", submission_id),
        domain=_text(obj.get("domain"), "domain", submission_id),
    )


def _submission_id(obj: dict) -> str:
    value = obj.get("id")
    if type(value) is str and value:
        return _unicode(value, "id", value)
    if type(value) is int and value >= 0:
        return str(value)
    name = obj.get("name")
    if type(name) is str and name.startswith("t3_") and len(name) > 3:
        return _unicode(name[3:], "name", name)
    if value is None or value == "":
        raise BadSubmission("missing-id", "no id or t3_ name")
    raise BadSubmission("bad-field", f"id {value!r:.60}")


def _integer(value: Any, field: str, submission_id: str) -> int:
    kind = type(value)
    if kind is int:
        return value
    if kind is float and math.isfinite(value):
        return int(value)
    if kind is str:
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return int(number)
    raise BadSubmission("bad-field", f"{field} {value!r:.60} (id {submission_id})")


def _in_range(number: int, bounds: range, field: str, submission_id: str) -> int:
    if number in bounds:
        return number
    reason = "score-out-of-range" if field == "score" else "created-out-of-range"
    digits = str(number)
    shown = digits if len(digits) <= 24 else f"{digits[:12]}… ({len(digits.lstrip('-'))} digits)"
    raise BadSubmission(reason, f"{field} {shown} outside [{bounds.start:,}, {bounds.stop:,}) (id {submission_id})")


def _unicode(text: str, field: str, submission_id: str) -> str:
    """`text` if UTF-8 can hold it; JSON's \\ud800 escapes give strings with lone surrogates, which it cannot."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadSubmission("bad-unicode", f"{field} {text!r:.80} holds a lone surrogate (id {submission_id!r})") from None
    return text


def _flag(value: Any) -> bool:
    if value is None or value is False:
        return False
    if value is True:
        return True
    if type(value) is str:
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) if type(value) in (int, float) else False


def _text(value: Any, field: str, submission_id: str) -> str:
    if type(value) is str:
        return _unicode(value, field, submission_id)
    if value is None:
        return ""
    if type(value) in (int, float):  # a title like 1984 arrives as a number in some dumps
        return str(value)
    raise BadSubmission("bad-field", f"{field} is a {type(value).__name__} (id {submission_id})")


def subreddit_name(value: Any) -> str:
    """A subreddit name from a string or a PRAW-like object with `display_name`."""
    if value is None:
        return ""
    if type(value) is str:
        return _unicode(value, "subreddit", "")
    return _unicode(str(getattr(value, "display_name", value)), "subreddit", "")
