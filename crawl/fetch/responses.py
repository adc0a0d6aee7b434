"""Reading HTTP responses: HTML or not, redirects, Retry-After, backoff and the verdict on a final response."""
from __future__ import annotations

import datetime
import email.utils
import http.client
import random
import time
from urllib.parse import urljoin, urlsplit

from .compression import decode_body
from .config import FetchConfig
from .outcomes import FetchFailure
from .warc import HttpExchange

HTML_TYPES = ("text/html", "application/xhtml+xml")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PAGE_STATUSES = frozenset({200, 203})


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_html(content_type: str | None) -> bool:
    """HTML or XHTML; a missing Content-Type is given the benefit of the doubt (the body is sniffed later)."""
    kind = media_type(content_type)
    return kind == "" or kind in HTML_TYPES


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone accepts "²"
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:  # asctime dates carry no zone; HTTP dates are always UTC
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def follow_redirect(current: str, target: str, hop: int, seen: set[str], max_redirects: int) -> str:
    """The next URL of a redirect chain; a chain longer than `max_redirects` or a loop is a FetchFailure."""
    if hop == max_redirects:
        raise FetchFailure("too-many-redirects", f"more than {max_redirects} redirects")
    if target in seen:
        raise FetchFailure("redirect-loop", f"{current} -> {target}")
    seen.add(target)
    return target


def redirect_target(base: str, exchange: HttpExchange) -> str | None:
    """The absolute URL a redirect points to; None when the response is not a redirect."""
    if exchange.status not in REDIRECT_STATUSES:
        return None
    location = (exchange.header("location") or "").strip()
    if not location:
        raise FetchFailure("bad-redirect", f"{exchange.status} without a Location header")
    target = urljoin(base, location).split("#", 1)[0]
    parts = urlsplit(target)
    if parts.scheme.lower() not in ("http", "https"):
        raise FetchFailure("bad-redirect", f"redirect to a non-HTTP URL: {location[:200]}")
    if "@" in parts.netloc:  # requests would send (and we would archive) the credentials as Authorization
        raise FetchFailure("bad-redirect", "redirect to a URL with credentials")
    return target


def page_outcome(exchange: HttpExchange, config: FetchConfig) -> bytes:
    """The decoded HTML body of a final (non-redirect) response; raises FetchFailure when it is not a usable page."""
    if exchange.status not in PAGE_STATUSES:
        phrase = exchange.reason_phrase or http.client.responses.get(exchange.status, "")
        raise FetchFailure(f"http-{exchange.status}", phrase)
    content_type = exchange.header("content-type", "")
    if not is_html(content_type):
        raise FetchFailure("not-html", content_type or "")
    if exchange.truncated == "length":
        raise FetchFailure("too-large", f"body over {config.max_bytes:,} bytes")
    if exchange.truncated == "time":
        raise FetchFailure("timeout", "body not complete within the page deadline")
    if exchange.truncated:
        raise FetchFailure("connection-error", f"body truncated ({exchange.truncated})")
    return decode_body(exchange.body, exchange.header("content-encoding"), config.max_decompressed_bytes)


def backoff_seconds(attempt: int, config: FetchConfig, rng: random.Random) -> float:
    """Exponential backoff with jitter: base·2^attempt, capped, times a random factor in [0.5, 1)."""
    return min(config.backoff_max, config.backoff_base * (2 ** attempt)) * (0.5 + rng.random() / 2)


def retryable_status(status: int) -> bool:
    return status == 429 or (500 <= status < 600 and status not in (501, 505))
