"""WebText's link rules: which submissions count as outbound links, and how the submissions of one
normalised URL merge into one link row under the karma rule."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from .submissions import Submission
from .urls import InvalidUrl, UrlFilter, fetch_url, normalize_url, url_domain, url_host

__all__ = [
    "KARMA_RULES",
    "SUBMISSION_REASONS",
    "LinkRow",
    "LinkRules",
    "Verdict",
    "judge_submission",
    "merge_link",
    "submission_reject",
]

KARMA_RULES = ("max", "sum")
# Reasons of `submission_reject`, in the order they are checked.
SUBMISSION_REASONS = (
    "self-post", "missing-url", "schemeless-url", "nsfw", "too-old", "too-new", "invalid-url",
    "wikipedia", "reddit-host", "media-host", "blocked-domain", "blocked-extension",
)
_REDDIT_HOSTS = ("reddit.com", "redd.it")


@dataclass(frozen=True)
class LinkRules:
    """The links stage's rules. `after` is inclusive and `before` exclusive (epoch seconds)."""

    min_karma: int = 3
    karma_rule: str = "max"  # "max": WebText, one submission has the karma; "sum": OpenWebText2, summed
    after: int | None = None
    before: int | None = None
    keep_nsfw: bool = False
    url_filter: UrlFilter = field(default_factory=UrlFilter.default)

    def __post_init__(self) -> None:
        if self.karma_rule not in KARMA_RULES:
            raise ValueError(f"karma_rule must be one of {KARMA_RULES}, not {self.karma_rule!r}")
        if self.after is not None and self.before is not None and self.after >= self.before:
            raise ValueError(f"after ({self.after}) must be earlier than before ({self.before})")


class Verdict(NamedTuple):
    """The outcome for one submission: its `url_key`, or the reject reason and detail."""

    url_key: str | None
    reason: str | None = None
    detail: str = ""


def judge_submission(sub: Submission, rules: LinkRules) -> Verdict:
    """Apply the per-submission rules in their fixed order; a passing submission gets its url_key."""
    if sub.is_self:
        return Verdict(None, "self-post", "is_self")
    url = sub.url.strip()
    if not url:
        return Verdict(None, "missing-url", "no url, and not marked is_self")
    if url.startswith("//"):
        return Verdict(None, "schemeless-url", f"{url[:200]!r} has no scheme")
    if _points_to_itself(sub, rules.url_filter):
        return Verdict(None, "self-post", "url is the submission's own permalink")
    if sub.over_18 and not rules.keep_nsfw:
        return Verdict(None, "nsfw", "over_18")
    if rules.after is not None and sub.created_utc < rules.after:
        return Verdict(None, "too-old", f"created_utc {sub.created_utc} < after {rules.after}")
    if rules.before is not None and sub.created_utc >= rules.before:
        return Verdict(None, "too-new", f"created_utc {sub.created_utc} >= before {rules.before}")
    try:
        url_key = normalize_url(sub.url)
    except InvalidUrl as exc:
        return Verdict(None, "invalid-url", exc.why)
    rejected = rules.url_filter.reject(url_key)
    if rejected is not None:
        return Verdict(None, rejected[0], rejected[1])
    return Verdict(url_key)


def submission_reject(sub: Submission, rules: LinkRules) -> tuple[str, str] | None:
    """(reason, detail) if the submission is not an outbound link under the rules, else None."""
    verdict = judge_submission(sub, rules)
    return None if verdict.reason is None else (verdict.reason, verdict.detail)


def _points_to_itself(sub: Submission, url_filter: UrlFilter) -> bool:
    """A relative Reddit path, or a Reddit URL of this very submission (permalink or redd.it/ID)."""
    url = sub.url.strip()
    if url.startswith("/"):
        return True
    if not sub.id:
        return False
    marker = "/comments/" + sub.id
    at = url.find(marker)
    if at != -1:
        end = at + len(marker)
        if end == len(url) or url[end] in "/?#":
            return _is_reddit_url(url, url_filter)
    if url.rstrip("/").endswith("redd.it/" + sub.id):
        return _is_reddit_url(url, url_filter)
    return False


def _is_reddit_url(url: str, url_filter: UrlFilter) -> bool:
    host = url_host(url.lower())
    if any(host == name or host.endswith("." + name) for name in _REDDIT_HOSTS):
        return True
    found = url_filter.domain_reason(host)
    return found is not None and found[0] == "reddit-host"


@dataclass
class LinkRow:
    """One unique outbound URL and what its submissions say about it."""

    url: str  # the URL to fetch, as the best submission posted it
    url_key: str
    domain: str
    score: int  # max over submissions
    score_sum: int
    num_submissions: int
    created_utc: int  # earliest
    subreddits: list[str]
    submission_ids: list[str]
    title: str  # of the best submission

    def to_dict(self) -> dict:
        row = dict(self.__dict__)  # asdict() deep-copies every field, several times slower on the hot path
        row["subreddits"], row["submission_ids"] = list(self.subreddits), list(self.submission_ids)
        return row


def _copy_rank(sub: Submission) -> tuple:
    """Orders copies of one submission: the highest score, then the latest, then any fixed field order."""
    return (sub.score, sub.created_utc, sub.url, sub.title, sub.subreddit, sub.permalink, sub.domain,
            sub.is_self, sub.over_18)


def _best_rank(sub: Submission) -> tuple:
    """Orders distinct submissions of a URL: the highest score, then the earliest, then the lowest id."""
    return (-sub.score, sub.created_utc, sub.id, sub.url, sub.title)


def merge_link(
    url_key: str, subs: Iterable[Submission], rules: LinkRules
) -> tuple[LinkRow | None, list[tuple[Submission, str, str]]]:
    """Merge the submissions of one url_key into a LinkRow, or reject them all under the karma rule.

    The same for any input order. Every input submission ends in exactly one place: the row
    (its id in `submission_ids`) or one reject (`duplicate-submission` for extra copies of an id,
    `low-karma` for all of a URL that fails the karma rule)."""
    kept, rejects = _drop_duplicate_copies(subs)
    if not kept:
        return None, rejects
    passed, why = _karma_passes(kept, rules)
    if not passed:
        rejects.extend((sub, "low-karma", why) for sub in kept)
        return None, rejects
    best = min(kept, key=_best_rank)
    row = LinkRow(
        url=fetch_url(best.url),
        url_key=url_key,
        domain=url_domain(url_key),
        score=max(sub.score for sub in kept),
        score_sum=sum(sub.score for sub in kept),
        num_submissions=len(kept),
        created_utc=min(sub.created_utc for sub in kept),
        subreddits=sorted({sub.subreddit for sub in kept}),
        submission_ids=sorted(sub.id for sub in kept),
        title=best.title,
    )
    return row, rejects


def _drop_duplicate_copies(subs: Iterable[Submission]) -> tuple[list[Submission], list[tuple[Submission, str, str]]]:
    """One copy per submission id (the best by `_copy_rank`), the other copies as rejects; both sorted by id."""
    by_id: dict[str, list[Submission]] = {}
    for sub in subs:
        by_id.setdefault(sub.id, []).append(sub)
    kept: list[Submission] = []
    rejects: list[tuple[Submission, str, str]] = []
    for submission_id in sorted(by_id):
        copies = sorted(by_id[submission_id], key=_copy_rank, reverse=True)
        winner = copies[0]
        kept.append(winner)
        detail = f"another copy of {submission_id} kept (score {winner.score})"
        rejects.extend((copy, "duplicate-submission", detail) for copy in copies[1:])
    return kept, rejects


def _karma_passes(kept: list[Submission], rules: LinkRules) -> tuple[bool, str]:
    if rules.karma_rule == "sum":
        total = sum(sub.score for sub in kept)
        return total >= rules.min_karma, f"score sum {total} < {rules.min_karma}"
    best = max(sub.score for sub in kept)
    return best >= rules.min_karma, f"max score {best} < {rules.min_karma}"
