"""Reddit submission sources for the links stage: streaming Pushshift / Arctic Shift dump files,
tolerant parsing of their records, and read-only listings through PRAW."""
from __future__ import annotations

import bz2
import configparser
import json
import logging
import lzma
import math
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

import zstandard

from webtext.crawl.urls import unescape_reddit

if TYPE_CHECKING:
    import praw

__all__ = [
    "DUMP_EXTENSIONS",
    "LISTINGS",
    "TIME_FILTERS",
    "BadSubmission",
    "DumpLine",
    "RedditAuthError",
    "RedditError",
    "RedditListingError",
    "Submission",
    "check_reddit_auth",
    "dump_codec",
    "iter_dump_records",
    "iter_praw_submissions",
    "make_reddit",
    "parse_submission",
    "submission_to_dict",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Submissions
# --------------------------------------------------------------------------------------------

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
    `missing-id`, `missing-field`, `bad-field`."""
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
        score=0 if score is None else _integer(score, "score", submission_id),
        created_utc=_integer(created, "created_utc", submission_id),
        is_self=_flag(obj.get("is_self")),
        over_18=_flag(obj.get("over_18")),
        subreddit=_name(obj.get("subreddit")),
        title=unescape_reddit(_text(obj.get("title"), "title", submission_id)),
        permalink=_text(obj.get("permalink"), "permalink", submission_id),
        domain=_text(obj.get("domain"), "domain", submission_id),
    )


def _submission_id(obj: dict) -> str:
    value = obj.get("id")
    if type(value) is str and value:
        return value
    if type(value) is int and value >= 0:
        return str(value)
    name = obj.get("name")
    if type(name) is str and name.startswith("t3_") and len(name) > 3:
        return name[3:]
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
        return value
    if value is None:
        return ""
    if type(value) in (int, float):  # a title like 1984 arrives as a number in some dumps
        return str(value)
    raise BadSubmission("bad-field", f"{field} is a {type(value).__name__} (id {submission_id})")


def _name(value: Any) -> str:
    """A subreddit name from a string or a PRAW-like object with `display_name`."""
    if value is None:
        return ""
    if type(value) is str:
        return value
    return str(getattr(value, "display_name", value))


# --------------------------------------------------------------------------------------------
# Dump files
# --------------------------------------------------------------------------------------------

class DumpLine(NamedTuple):
    """One line of a dump: its number (1-based) and either the parsed record or an error.

    `error` is None, `bad-json` (the line is not a JSON object) or `truncated-file` (the compressed
    stream ended early or is corrupt; always the last item of a file)."""

    source: str
    line_no: int
    record: dict | None
    error: str | None = None
    detail: str = ""


READ_SIZE = 1 << 17  # small enough that a corrupt spot loses little of what precedes it
MAX_LINE_BYTES = 64 << 20  # a longer "line" is garbage, not a submission; it is skipped, not buffered
ZSTD_MAX_WINDOW = 2**31

DUMP_EXTENSIONS: dict[str, str] = {
    ".zst": "zst", ".zstd": "zst", ".xz": "xz", ".lzma": "xz", ".bz2": "bz2", ".gz": "gz",
    ".ndjson": "plain", ".jsonl": "plain", ".json": "plain", ".txt": "plain",
}
_MAGIC = (
    (b"\x28\xb5\x2f\xfd", "zst"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bz2"),
    (b"\x1f\x8b", "gz"),
)


def dump_codec(name: str) -> str | None:
    """The compression of a dump file judged by its name: zst, xz, bz2, gz, plain, or None if unknown."""
    lowered = name.lower()
    for extension, codec in DUMP_EXTENSIONS.items():
        if lowered.endswith(extension):
            return codec
    return None


def _decompressor_factory(codec: str) -> Callable[[], Any]:
    if codec == "zst":
        return zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).decompressobj
    if codec == "xz":
        return lzma.LZMADecompressor
    if codec == "bz2":
        return bz2.BZ2Decompressor
    if codec == "gz":
        return lambda: zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    raise ValueError(f"unknown codec {codec!r}")


class _Truncated(Exception):
    """The compressed stream ended inside a frame or could not be decoded."""


def _raw_chunks(fileobj: BinaryIO) -> Iterator[bytes]:
    while True:
        try:
            chunk = fileobj.read(READ_SIZE)
        except OSError as exc:
            raise _Truncated(f"read error: {exc}") from None
        if not chunk:
            return
        yield chunk


def _sniff(chunks: Iterator[bytes]) -> tuple[str, Iterator[bytes]]:
    """Guess the codec of a file with an unknown extension from its first bytes."""
    first = next(chunks, b"")
    codec = next((name for magic, name in _MAGIC if first.startswith(magic)), "plain")

    def replay() -> Iterator[bytes]:
        if first:
            yield first
        yield from chunks

    return codec, replay()


def _decompressed_chunks(chunks: Iterable[bytes], codec: str) -> Iterator[bytes]:
    """Decompressed bytes of a stream of one or more concatenated frames/members.

    Raises `_Truncated` when the input ends inside a frame or does not decode."""
    if codec == "plain":
        yield from chunks
        return
    make = _decompressor_factory(codec)
    decoder = make()
    in_frame = False
    for chunk in chunks:
        while chunk:
            in_frame = True
            try:
                out = decoder.decompress(chunk)
            except (zstandard.ZstdError, lzma.LZMAError, OSError, EOFError, zlib.error) as exc:
                raise _Truncated(f"corrupt {codec} stream: {exc}") from None
            if out:
                yield out
            if decoder.eof:
                chunk = decoder.unused_data
                decoder = make()
                in_frame = False
            else:
                chunk = b""
    if in_frame:
        raise _Truncated(f"{codec} stream ends inside a frame")


def iter_dump_blocks(fileobj: BinaryIO, name: str) -> Iterator[tuple[int, list[bytes | DumpLine]]]:
    """Stream one dump file opened in binary mode as blocks of consecutive raw lines: (first line number, lines).

    Blank lines stay in (as empty or white-space bytes) so numbering is positional; an overlong line is a
    `bad-json` DumpLine, and a truncated or corrupt compressed stream ends with a block holding one
    `truncated-file` DumpLine. Nothing is raised for bad content; parsing is left to the caller."""
    chunks = _raw_chunks(fileobj)
    codec = dump_codec(name)
    if codec is None:
        codec, chunks = _sniff(chunks)
    line_no = 0
    try:
        for batch in _line_batches(_decompressed_chunks(chunks, codec)):
            if None in batch:
                batch = [DumpLine(name, line_no + i + 1, None, "bad-json",
                                  f"{name}:{line_no + i + 1}: line longer than {MAX_LINE_BYTES} bytes")
                         if line is None else line for i, line in enumerate(batch)]
            yield line_no + 1, batch
            line_no += len(batch)
    except _Truncated as exc:
        yield line_no + 1, [DumpLine(name, line_no + 1, None, "truncated-file",
                                     f"{name}: readable up to line {line_no}; {exc}")]


def iter_dump_lines(fileobj: BinaryIO, name: str) -> Iterator[tuple[int, bytes | DumpLine]]:
    """The raw, non-blank lines of one dump file with their line numbers (see `iter_dump_blocks`)."""
    for first, block in iter_dump_blocks(fileobj, name):
        for offset, line in enumerate(block):
            if isinstance(line, DumpLine) or (line and not line.isspace()):
                yield first + offset, line


def parse_dump_line(name: str, line_no: int, line: bytes) -> DumpLine:
    """One raw dump line as a record, or a `bad-json` DumpLine saying why not."""
    try:
        record = json.loads(line)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return _bad_json(name, line_no, exc)
    if type(record) is dict:
        return DumpLine(name, line_no, record)
    return DumpLine(name, line_no, None, "bad-json", f"{name}:{line_no}: a JSON {type(record).__name__}, not an object")


def iter_dump_records(fileobj: BinaryIO, name: str) -> Iterator[DumpLine]:
    """Stream the records of one dump file opened in binary mode; `name` picks the decompression.

    Never raises for bad content: a line that is not a JSON object gives a `bad-json` DumpLine, and
    a truncated or corrupt compressed stream ends with one `truncated-file` DumpLine. Blank lines
    are skipped (they still count for line numbers)."""
    for line_no, line in iter_dump_lines(fileobj, name):
        yield line if isinstance(line, DumpLine) else parse_dump_line(name, line_no, line)


def _line_batches(blocks: Iterable[bytes]) -> Iterator[list[bytes | None]]:
    """Complete lines of a byte stream, a list per block; None stands for a skipped overlong line.

    A last line without a newline is kept when the stream ends cleanly and dropped when the
    stream raises (it is cut off)."""
    pending: list[bytes] = []
    pending_size = 0
    skipping = False
    for block in blocks:
        if skipping:
            newline = block.find(b"\n")
            if newline == -1:
                continue
            block = block[newline + 1:]
            skipping = False
        lines: list[bytes | None] = block.split(b"\n")  # type: ignore[assignment]
        if len(lines) == 1:
            pending.append(block)
            pending_size += len(block)
            if pending_size > MAX_LINE_BYTES:
                yield [None]
                pending, pending_size, skipping = [], 0, True
            continue
        if pending:
            pending.append(block[: block.find(b"\n")])
            lines[0] = b"".join(pending)
        tail = block[block.rfind(b"\n") + 1:]
        lines.pop()
        pending, pending_size = ([tail], len(tail)) if tail else ([], 0)
        if pending_size > MAX_LINE_BYTES:
            lines.append(None)
            pending, pending_size, skipping = [], 0, True
        yield lines
    if pending and not skipping:
        yield [b"".join(pending)]


def _bad_json(name: str, line_no: int, exc: ValueError) -> DumpLine:
    if isinstance(exc, json.JSONDecodeError):
        why = f"{exc.msg} at column {exc.colno}"
    else:
        why = f"not UTF-8 ({exc})"
    return DumpLine(name, line_no, None, "bad-json", f"{name}:{line_no}: {why}")


# --------------------------------------------------------------------------------------------
# The Reddit API through PRAW (read-only)
# --------------------------------------------------------------------------------------------

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


def _default_user_agent() -> str:
    from importlib import metadata

    try:
        version = metadata.version("webtext")
    except metadata.PackageNotFoundError:
        version = "dev"
    return f"python:webtext-links:{version} (WebText corpus builder; read-only)"


def make_reddit(site: str | None = None) -> praw.Reddit:
    """A read-only `praw.Reddit` from PRAW's own configuration: the praw.ini `site` (or
    `praw_site`, or DEFAULT) and the `praw_*` environment variables.

    PRAW reads praw.ini from $XDG_CONFIG_HOME (or ~/.config) and then the current directory. A
    user agent is supplied when none is configured; PRAW's update check is turned off. Raises
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
        settings["user_agent"] = _default_user_agent()
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
        record["subreddit"] = _name(record["subreddit"])
    author = data.get("author")
    record["author"] = None if author is None else str(getattr(author, "name", author))
    return record
