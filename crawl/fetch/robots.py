"""robots.txt per RFC 9309: groups by product token, longest-match allow/disallow with `*` and `$`, Crawl-delay,
what a response means (status, size, Crawl-delay limit) and the verdicts cached per origin for a day.

urllib.robotparser is not enough: it applies the first matching rule instead of the longest, ignores `*` and `$`
inside paths and treats an unreachable file as allow-all. The fetching itself is the Fetcher's.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

from .compression import decode_body
from .config import FetchConfig
from .outcomes import FetchFailure
from .politeness import host_key
from .warc import HttpExchange

ROBOTS_MAX_BYTES = 512 * 1024  # RFC 9309 asks crawlers to parse at least 500 KiB
ROBOTS_CACHE_SECONDS = 24 * 3600  # RFC 9309: a cached robots.txt should not be used for longer than 24 hours
MAX_PATTERN_CHARS = 2048  # longer Allow/Disallow values are ignored (no real path is that long)
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")


def product_token(user_agent: str) -> str:
    """The robots.txt product token of a User-Agent string: its first word before any '/' (e.g. 'webtext-crawler')."""
    token = user_agent.strip().split()[0] if user_agent.strip() else ""
    return token.split("/")[0].lower()


def normalize_path(path: str) -> str:
    """Percent-encoding made comparable: non-ASCII and spaces encoded as UTF-8, escapes of unreserved characters
    decoded, other escapes upper-cased (RFC 9309 section 2.2.2)."""
    def unescape(match: re.Match) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    encoded = "".join(c if 0x20 < ord(c) < 0x7F else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in path)
    return _ESCAPE_RE.sub(unescape, encoded)


@dataclass(frozen=True)
class Rule:
    allow: bool
    pattern: str  # normalised; may contain `*` and a final `$`

    @property
    def priority(self) -> int:
        """Longest match wins: the length of the pattern in octets (RFC 9309 section 2.2.2)."""
        return len(self.pattern)

    def matches(self, path: str) -> bool:
        return pattern_matches(self.pattern, path)


def pattern_matches(pattern: str, path: str) -> bool:
    """Whether a robots.txt pattern (`*` any characters, a final `$` the end) matches a path from its start.

    Linear, unlike a backtracking regex: the first piece is a prefix, each later piece is found leftmost after the
    previous one (leftmost leaves the most room for the rest), and with `$` the last piece must end the path."""
    anchored = pattern.endswith("$")
    pieces = (pattern[:-1] if anchored else pattern).split("*")
    first, rest = pieces[0], pieces[1:]
    if not path.startswith(first):
        return False
    if not rest:
        return not anchored or len(path) == len(first)
    position = len(first)
    middle, last = rest[:-1], rest[-1]
    for piece in middle:
        found = path.find(piece, position)
        if found < 0:
            return False
        position = found + len(piece)
    if anchored:
        return len(path) - len(last) >= position and path.endswith(last)
    return path.find(last, position) >= 0


@dataclass
class RobotsRules:
    """The rules that apply to one crawler on one origin."""

    rules: list[Rule] = field(default_factory=list)
    crawl_delay: float | None = None
    allow_all: bool = False
    disallow_all: bool = False

    @classmethod
    def allowing_all(cls) -> RobotsRules:
        return cls(allow_all=True)

    @classmethod
    def disallowing_all(cls) -> RobotsRules:
        return cls(disallow_all=True)

    def allowed(self, url: str) -> bool:
        """Whether the crawler may fetch this URL (its path and query); /robots.txt itself is always allowed."""
        parts = urlsplit(url)
        path = parts.path or "/"
        if path == "/robots.txt":
            return True
        if self.allow_all:
            return True
        if self.disallow_all:
            return False
        target = normalize_path(path + ("?" + parts.query if parts.query else ""))
        best: Rule | None = None
        for rule in self.rules:
            if rule.matches(target):
                better = best is None or rule.priority > best.priority
                tie_goes_to_allow = best is not None and rule.priority == best.priority and rule.allow
                if better or tie_goes_to_allow:
                    best = rule
        return best is None or best.allow


@dataclass
class _Group:
    agents: list[str] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    crawl_delay: float | None = None


def _parse_groups(text: str) -> list[_Group]:
    groups: list[_Group] = []
    current: _Group | None = None
    last_was_agent = False
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].strip()
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip().lower().replace("_", "-"), value.strip()
        if key in ("user-agent", "useragent"):
            if current is None or not last_was_agent:
                current = _Group()
                groups.append(current)
            current.agents.append(value.lower())
            last_was_agent = True
            continue
        last_was_agent = False
        if current is None:
            continue  # rules before any user-agent line belong to no group
        if key in ("allow", "disallow"):
            pattern = normalize_path(value)
            if pattern and len(pattern) <= MAX_PATTERN_CHARS:  # an empty Disallow allows everything
                current.rules.append(Rule(allow=key == "allow", pattern=pattern))
        elif key in ("crawl-delay", "crawldelay"):
            try:
                delay = float(value)
            except ValueError:
                continue
            if delay >= 0 and delay == delay:  # not NaN
                current.crawl_delay = delay if current.crawl_delay is None else max(current.crawl_delay, delay)
    return groups


def _agent_matches(agent: str, token: str) -> bool:
    agent = agent.split("/")[0].strip()
    return bool(agent) and agent != "*" and agent == token


def parse_robots(text: str, user_agent: str) -> RobotsRules:
    """The rules of the groups for our product token (all of them merged), else of the `*` groups, else none."""
    token = product_token(user_agent)
    groups = _parse_groups(text)
    chosen = [g for g in groups if any(_agent_matches(a, token) for a in g.agents)]
    if not chosen:
        chosen = [g for g in groups if "*" in g.agents]
    rules = [rule for group in chosen for rule in group.rules]
    delays = [g.crawl_delay for g in chosen if g.crawl_delay is not None]
    return RobotsRules(rules=rules, crawl_delay=max(delays) if delays else None)


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
        return {"rules": [(rule.allow, rule.pattern) for rule in rules.rules], "crawl_delay": rules.crawl_delay,
                "allow_all": rules.allow_all, "disallow_all": rules.disallow_all, "failure": self.failure,
                "detail": self.detail, "fetched_wall": time.time() - (time.monotonic() - self.fetched_at)}

    @classmethod
    def from_dict(cls, data: dict) -> RobotsVerdict:
        rules = RobotsRules([Rule(allow, pattern) for allow, pattern in data["rules"]], data["crawl_delay"],
                            data["allow_all"], data["disallow_all"])
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
    threads ask, and handed over, per host, to the process that crawls the host next."""

    def __init__(self, fetch: Callable[[str], RobotsVerdict]):
        self._fetch = fetch
        self._verdicts: dict[str, RobotsVerdict] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def verdict(self, url: str) -> RobotsVerdict:
        origin = robots_url(url)
        with self._lock:
            lock = self._locks.setdefault(origin, threading.Lock())
        with lock:
            verdict = self._verdicts.get(origin)
            if verdict is None or time.monotonic() - verdict.fetched_at > ROBOTS_CACHE_SECONDS:
                verdict = self._fetch(origin)
                self._verdicts[origin] = verdict
        return verdict

    def host_state(self, host: str) -> dict:
        """The verdicts of a host's origins (`host_key`) as plain data."""
        with self._lock:
            return {origin: verdict.to_dict() for origin, verdict in self._verdicts.items() if host_key(origin) == host}

    def restore(self, verdicts: dict) -> None:
        """Takes over verdicts of `host_state` from another process, unless one known here is newer."""
        with self._lock:
            for origin, data in verdicts.items():
                verdict = RobotsVerdict.from_dict(data)
                known = self._verdicts.get(origin)
                if known is None or known.fetched_at < verdict.fetched_at:
                    self._verdicts[origin] = verdict
