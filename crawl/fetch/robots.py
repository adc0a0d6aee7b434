"""robots.txt per RFC 9309, parsed and matched by protego: what a response means (status, size, Crawl-delay limit)
and the verdicts cached per origin for a day. The fetching itself is the Fetcher's.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable
from urllib.parse import urlsplit

from protego import Protego

from .compression import decode_body
from .config import FetchConfig
from .outcomes import FetchFailure
from .politeness import host_key
from .warc import HttpExchange

ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309 2.5: parse at least 500 KiB; we parse that much and ignore the rest
ROBOTS_CACHE_SECONDS = 24 * 3600  # RFC 9309: a cached robots.txt should not be used for longer than 24 hours
MAX_PATTERN_CHARS = 2048  # lines with longer values are ignored (no real path is that long)


def product_token(user_agent: str) -> str:
    """The robots.txt product token of a User-Agent string: its first word before any '/' (e.g. 'webtext-crawler')."""
    token = user_agent.strip().split()[0] if user_agent.strip() else ""
    return token.split("/")[0].lower()


@dataclass
class RobotsRules:
    """What robots.txt says to one crawler (its product token) on one origin: the file's text, read by protego, or
    allow-all / disallow-all when the status code says so."""

    text: str = ""
    agent: str = ""
    allow_all: bool = False
    disallow_all: bool = False

    @classmethod
    def allowing_all(cls) -> RobotsRules:
        return cls(allow_all=True)

    @classmethod
    def disallowing_all(cls) -> RobotsRules:
        return cls(disallow_all=True)

    @cached_property
    def _parsed(self) -> Protego:
        return Protego.parse(self.text)

    @property
    def crawl_delay(self) -> float | None:
        if self.allow_all or self.disallow_all:
            return None
        return self._parsed.crawl_delay(self.agent)

    def allowed(self, url: str) -> bool:
        """Whether the crawler may fetch this URL (its path and query); /robots.txt itself is always allowed."""
        if (urlsplit(url).path or "/") == "/robots.txt" or self.allow_all:
            return True
        if self.disallow_all:
            return False
        return self._parsed.can_fetch(url, self.agent)


def parse_robots(text: str, user_agent: str) -> RobotsRules:
    """The rules of a robots.txt for the product token of `user_agent`, without lines whose value is overlong."""
    lines = [line for line in text.splitlines()
             if len(line.split("#", 1)[0].partition(":")[2].strip()) <= MAX_PATTERN_CHARS]
    return RobotsRules("\n".join(lines), product_token(user_agent))


def robots_url(url: str) -> str:
    """The robots.txt URL of the origin (scheme, host, port) of a URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/robots.txt"


def rules_for_status(status: int, body: bytes, user_agent: str) -> RobotsRules:
    """What a robots.txt response means (RFC 9309 section 2.3.1): 2xx parse it, 4xx allow all, other codes
    (5xx, and 429 which is a server asking us to slow down) disallow all."""
    if 200 <= status < 300:
        text = body[:ROBOTS_MAX_BYTES].decode("utf-8", errors="replace").lstrip("\ufeff")
        return parse_robots(text, user_agent)
    if 400 <= status < 500 and status != 429:
        return RobotsRules.allowing_all()
    return RobotsRules.disallowing_all()


@dataclass
class RobotsVerdict:
    """What robots.txt of an origin says, or why it cannot tell (`failure` becomes the links' reject reason)."""

    rules: RobotsRules
    failure: str | None = None
    detail: str = ""
    fetched_at: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict:
        """Plain data, with the fetch time as wall-clock time (for another process)."""
        rules = self.rules
        return {"text": rules.text, "agent": rules.agent, "allow_all": rules.allow_all,
                "disallow_all": rules.disallow_all, "failure": self.failure, "detail": self.detail,
                "fetched_wall": time.time() - (time.monotonic() - self.fetched_at)}

    @classmethod
    def from_dict(cls, data: dict) -> RobotsVerdict:
        rules = RobotsRules(data["text"], data["agent"], data["allow_all"], data["disallow_all"])
        return cls(rules, data["failure"], data["detail"], time.monotonic() - (time.time() - data["fetched_wall"]))


def robots_verdict(exchange: HttpExchange, config: FetchConfig) -> RobotsVerdict:
    """The verdict of an origin's final (non-redirect) robots.txt response: its status, at most ROBOTS_MAX_BYTES of
    its body, and a Crawl-delay over --max-crawl-delay."""
    body = b""
    if 200 <= exchange.status < 300:
        if exchange.truncated in ("time", "disconnect"):  # a cut-off file could lack the rules that matter
            return RobotsVerdict(RobotsRules.disallowing_all(), "robots-unreachable",
                                 f"robots.txt incomplete ({exchange.truncated})")
        try:  # RFC 9309: parse at least the first 500 KiB of a larger file
            body = decode_body(exchange.body, exchange.header("content-encoding"), ROBOTS_MAX_BYTES, cut=True)
        except FetchFailure as failure:
            return RobotsVerdict(RobotsRules.disallowing_all(), "robots-unreachable",
                                 f"robots.txt: {failure.reason} {failure.detail}")
        if exchange.truncated or len(body) >= ROBOTS_MAX_BYTES:
            body = body[:body.rfind(b"\n") + 1]  # not a rule cut in half
    rules = rules_for_status(exchange.status, body, config.user_agent)
    if rules.disallow_all:
        return RobotsVerdict(rules, "robots-unreachable", f"robots.txt answered {exchange.status}")
    delay = rules.crawl_delay
    if delay is not None and delay > config.host_delay and delay > config.max_crawl_delay:
        return RobotsVerdict(rules, "crawl-delay-too-long",
                             f"Crawl-delay {delay:g}s is over --max-crawl-delay {config.max_crawl_delay:g}s")
    return RobotsVerdict(rules)


class RobotsCache:
    """The robots.txt verdict of each origin, fetched (by `fetch`, given the robots.txt URL) once a day however many
    threads ask, and handed over, per host, to the process that crawls the host next. Thread-safe."""

    def __init__(self, fetch: Callable[[str], RobotsVerdict]):
        self._fetch = fetch
        # All three guarded by `_lock`, which is held only to read or write them (never while fetching):
        self._verdicts: dict[str, RobotsVerdict] = {}  # origin's robots.txt URL -> its verdict
        self._origins: dict[str, set[str]] = {}  # host_key -> its origins with a verdict (host_state reads one host)
        self._locks: dict[str, threading.Lock] = {}  # origin -> the lock held while its robots.txt is fetched
        self._lock = threading.Lock()

    def verdict(self, url: str) -> RobotsVerdict:
        origin = robots_url(url)
        with self._lock:
            fetching = self._locks.setdefault(origin, threading.Lock())
        with fetching:  # one fetch per origin; other threads of the origin wait for its verdict
            with self._lock:
                verdict = self._verdicts.get(origin)
            if verdict is None or time.monotonic() - verdict.fetched_at > ROBOTS_CACHE_SECONDS:
                verdict = self._fetch(origin)
                with self._lock:
                    self._store(origin, verdict)
        return verdict

    def host_state(self, host: str) -> dict:
        """The verdicts of a host's origins (`host_key`) as plain data."""
        with self._lock:
            return {origin: self._verdicts[origin].to_dict() for origin in self._origins.get(host, ())}

    def restore(self, verdicts: dict) -> None:
        """Takes over verdicts of `host_state` from another process, unless one known here is newer."""
        with self._lock:
            for origin, data in verdicts.items():
                verdict = RobotsVerdict.from_dict(data)
                known = self._verdicts.get(origin)
                if known is None or known.fetched_at < verdict.fetched_at:
                    self._store(origin, verdict)

    def _store(self, origin: str, verdict: RobotsVerdict) -> None:
        """Caller holds `_lock`."""
        self._verdicts[origin] = verdict
        self._origins.setdefault(host_key(origin), set()).add(origin)
