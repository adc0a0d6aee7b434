"""Read-only subreddit listings through the Reddit API (PRAW), with errors that name the site and hold no secret."""
from __future__ import annotations

import configparser
import logging
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .submissions import subreddit_name

if TYPE_CHECKING:
    import praw

__all__ = ["LISTINGS", "TIME_FILTERS", "RedditAuthError", "RedditError", "RedditListingError", "check_reddit_auth",
           "iter_praw_submissions", "make_reddit", "submission_to_dict"]

log = logging.getLogger(__name__)


LISTINGS = ("top", "new", "hot", "controversial")
TIME_FILTERS = ("all", "year", "month", "week", "day", "hour")
# The t3 fields handed on from PRAW, as the plain values Reddit's JSON had.
SUBMISSION_FIELDS = (
    "id", "name", "url", "score", "ups", "created_utc", "is_self", "over_18", "subreddit", "title",
    "permalink", "domain", "num_comments",
)


class RedditError(RuntimeError):
    """A Reddit source failed; the message is meant for the user and holds no secret."""


class RedditAuthError(RedditError):
    """PRAW's configuration is missing or Reddit refused its credentials."""


class RedditListingError(RedditError):
    """A listing could not be read (unknown or private subreddit, server error, network)."""


APP_ID = "webtext"
PROJECT_URL = "https://github.com/webtext-corpus/webtext"


def default_user_agent(username: str | None) -> str:
    """Reddit's API rule for a user agent: `<platform>:<app ID>:<version> (by /u/<username>)`. Without a known
    username the contact part names the project instead."""
    from importlib import metadata

    try:
        version = metadata.version("webtext")
    except metadata.PackageNotFoundError:
        version = "dev"
    contact = f"by /u/{username.removeprefix('/u/').removeprefix('u/')}" if username else f"by {PROJECT_URL}"
    return f"python:{APP_ID}:{version} ({contact})"


def make_reddit(site: str | None = None) -> praw.Reddit:
    """A read-only `praw.Reddit` from PRAW's own configuration: the praw.ini `site` (or
    `praw_site`, or DEFAULT) and the `praw_*` environment variables.

    PRAW reads praw.ini from $XDG_CONFIG_HOME (or ~/.config) and then the current directory. Where none is
    configured, the user agent follows Reddit's rule (`default_user_agent`, with the site's username); PRAW's
    update check is turned off. Raises
    `RedditAuthError` when the site does not exist or lacks a client id or secret."""
    import praw
    from praw.config import Config
    from praw.exceptions import MissingRequiredAttributeException

    site_label = site or os.getenv("praw_site") or "DEFAULT"
    try:
        config = Config(site_label)
    except configparser.NoSectionError:
        raise RedditAuthError(
            f"PRAW site {site_label!r} is not in any praw.ini (looked in $XDG_CONFIG_HOME or ~/.config, "
            "then the current directory)"
        ) from None
    settings: dict[str, Any] = {"check_for_updates": False}
    if not config.user_agent:
        settings["user_agent"] = default_user_agent(config.username)
        if not config.username:
            log.warning("PRAW site %r sets no user_agent and no username: using %r. Reddit's API rules ask for "
                        "'<platform>:<app ID>:<version> (by /u/<your username>)': set username (or user_agent) in "
                        "praw.ini or as praw_username (praw_user_agent)", site_label, settings["user_agent"])
    try:
        reddit = praw.Reddit(site_name=site, **settings)
    except MissingRequiredAttributeException as exc:
        missing = str(exc).split("'")[1] if "'" in str(exc) else "a required setting"
        raise RedditAuthError(
            f"PRAW site {site_label!r} has no {missing}: set it in praw.ini or as praw_{missing}"
        ) from None
    reddit.read_only = True
    return reddit


def check_reddit_auth(reddit: praw.Reddit, site: str | None) -> None:
    """Authenticate once (a token request) and raise `RedditAuthError` naming the site if it fails."""
    try:
        reddit.auth.scopes()
    except Exception as exc:  # noqa: BLE001 - every failure here becomes one clear message
        raise RedditAuthError(
            f"Reddit authentication failed for PRAW site {site or os.getenv('praw_site') or 'DEFAULT'!r} "
            f"at {reddit.config.reddit_url}: {_describe_failure(exc, reddit)}"
        ) from None


def _describe_failure(exc: BaseException, reddit: praw.Reddit) -> str:
    """A short, secret-free account of a PRAW/prawcore failure."""
    from prawcore import exceptions as core

    if isinstance(exc, core.OAuthException):
        text = f"OAuth error {exc.error}"
        if exc.description:
            text += f" ({exc.description})"
    elif isinstance(exc, core.ResponseException):
        status = exc.response.status_code
        text = f"HTTP {status}"
        if status in (401, 403):
            text += " (check client_id and client_secret)"
    elif isinstance(exc, core.RequestException):
        original = exc.original_exception
        text = f"cannot reach Reddit ({type(original).__name__}: {original})"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return _scrub(text, (reddit.config.client_secret, reddit.config.password, reddit.config.refresh_token))


def _scrub(text: str, secrets: Iterable[Any]) -> str:
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def iter_praw_submissions(
    reddit: praw.Reddit,
    subreddit: str,
    listing: str = "top",
    time_filter: str = "all",
    limit: int | None = 1000,
) -> Iterator[dict]:
    """Plain t3 dicts of one subreddit listing, paginated by PRAW (which honours the rate limits).

    `listing` is top, new, hot or controversial; `time_filter` applies to top and controversial;
    `limit` None reads the whole listing (Reddit stops at about 1,000). Raises
    `RedditAuthError` / `RedditListingError` with the subreddit named."""
    if listing not in LISTINGS:
        raise ValueError(f"listing must be one of {', '.join(LISTINGS)}, not {listing!r}")
    if time_filter not in TIME_FILTERS:
        raise ValueError(f"time_filter must be one of {', '.join(TIME_FILTERS)}, not {time_filter!r}")
    source = reddit.subreddit(subreddit)
    if listing in ("top", "controversial"):
        generator = getattr(source, listing)(time_filter=time_filter, limit=limit)
    else:
        generator = getattr(source, listing)(limit=limit)
    count = 0
    try:
        for submission in generator:
            count += 1
            yield submission_to_dict(submission)
    except Exception as exc:
        raise _listing_error(exc, reddit, subreddit, listing, count) from None
    log.info("r/%s %s: %d submissions", subreddit, listing, count)


def _listing_error(exc: Exception, reddit: praw.Reddit, subreddit: str, listing: str, count: int) -> RedditError:
    from prawcore import exceptions as core

    where = f"r/{subreddit} {listing} (after {count} submissions)"
    if isinstance(exc, (core.OAuthException, core.InvalidToken)) or (
        isinstance(exc, core.ResponseException) and exc.response.status_code == 401
    ):
        return RedditAuthError(f"Reddit refused the credentials while reading {where}: {_describe_failure(exc, reddit)}")
    if isinstance(exc, core.Redirect):
        return RedditListingError(f"{where}: no such subreddit (Reddit redirected to {exc.path})")
    if isinstance(exc, core.PrawcoreException):
        return RedditListingError(f"{where}: {_describe_failure(exc, reddit)}")
    return RedditListingError(f"{where}: {type(exc).__name__}: {exc}")


def submission_to_dict(submission: Any) -> dict:
    """The t3 fields of a PRAW `Submission` as plain values, without triggering a lazy fetch."""
    data = vars(submission)
    record = {key: data[key] for key in SUBMISSION_FIELDS if key in data}
    if "subreddit" in record:
        record["subreddit"] = subreddit_name(record["subreddit"])
    author = data.get("author")
    record["author"] = None if author is None else str(getattr(author, "name", author))
    return record
