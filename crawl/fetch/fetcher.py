"""The HTTP fetcher: polite, bounded and guarded fetching of HTML pages, with robots.txt, redirects and retries.

Every response is handed to an `archive` callback (the WARC writer) as it was received. Each outcome that is not a
page ready for extraction carries a reject reason (`timeout`, `too-large`, `robots-disallowed`, `http-404`, …).
"""
from __future__ import annotations

import dataclasses
import datetime
import email.utils
import http.client
import http.cookiejar
import logging
import random
import socket
import ssl
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from webtext.crawl.addresses import (AddressBlocked, AddressGuard, PinnedAdapter, ResolveFailed, observe_sockets,
                                     system_resolve)
from webtext.crawl.politeness import HostScheduler
from webtext.crawl.robots import ROBOTS_MAX_BYTES, RobotsRules, Rule, robots_url, rules_for_status
from webtext.crawl.warc import HttpExchange

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "webtext-crawler/0.1 (+https://github.com/webtext-corpus/webtext/blob/main/docs/crawl.md)"
HTML_TYPES = ("text/html", "application/xhtml+xml")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PAGE_STATUSES = frozenset({200, 203})
SMALL_BODY_BYTES = 64 * 1024  # what we keep of error pages and redirect bodies
ROBOTS_CACHE_SECONDS = 24 * 3600  # RFC 9309: a cached robots.txt should not be used for longer than 24 hours
NETWORK_FAILURES = frozenset({"timeout", "connection-error", "dns-error", "tls-error"})


@dataclass(frozen=True)
class FetchConfig:
    """How to fetch: identity, limits, timeouts, retries, politeness and the address policy."""

    user_agent: str = DEFAULT_USER_AGENT
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    page_deadline: float = 60.0  # the most one exchange may take, first byte to last: slow drips end here
    link_deadline: float = 0.0  # the most one link may take, all hops, retries and waits (0: 3 page deadlines)
    max_bytes: int = 5_000_000  # body bytes as received
    max_decompressed_bytes: int = 25_000_000
    max_redirects: int = 5
    retries: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = 120.0
    host_delay: float = 1.0
    max_crawl_delay: float = 60.0
    allow_private_addresses: bool = False
    allowed_networks: tuple[str, ...] = ()
    ca_bundle: str | None = None  # a CA file instead of the system's (tests with their own certificates)

    @property
    def link_budget(self) -> float:
        return self.link_deadline if self.link_deadline > 0 else 3 * self.page_deadline


class FetchFailure(Exception):
    """Why a fetch ended without a page; `retryable` failures are tried again up to the retry limit."""

    def __init__(self, reason: str, detail: str = "", retryable: bool = False, exchange: HttpExchange | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.retryable, self.exchange = reason, detail, retryable, exchange


@dataclass
class FetchResult:
    """The outcome of fetching one link: a page ready for extraction (`reason` is None) or why not."""

    url: str
    reason: str | None = None
    detail: str = ""
    final_url: str | None = None
    status: int | None = None
    content_type: str = ""
    body: bytes = b""  # content-decoded
    bytes_received: int = 0  # as received, over all exchanges of this link
    elapsed: float = 0.0
    attempts: int = 0
    redirects: int = 0
    fetched_at: float = 0.0  # epoch seconds
    warc_file: str | None = None
    warc_offset: int | None = None
    redirect_to: str | None = None  # not done yet: a redirect to another host, to be followed by that host's crawler
    seen: list[str] = field(default_factory=list)  # with `redirect_to`: the URLs of the chain so far (loops)

    @property
    def ok(self) -> bool:
        """A page ready for extraction."""
        return self.reason is None and self.redirect_to is None

    @property
    def pending(self) -> bool:
        """Stopped at a redirect to another host: `Fetcher.fetch_page(resume=…)` goes on from there."""
        return self.reason is None and self.redirect_to is not None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FetchResult:
        return cls(**data)


# -- small pure helpers, shared with the WARC replay ------------------------------------------------------------------

def host_key(url: str) -> str:
    """The politeness key of a URL: its lower-cased host, with the port unless it is the scheme's default."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return host if port in (None, default) else f"{host}:{port}"


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


def decode_body(raw: bytes, content_encoding: str | None, limit: int, cut: bool = False) -> bytes:
    """The body with its Content-Encoding (gzip, deflate, identity) undone, refusing more than `limit` bytes
    (or, with `cut`, keeping the first `limit` bytes).

    One compression layer at most: real servers never stack them, and each layer would multiply a bomb."""
    encodings = [e.strip().lower() for e in (content_encoding or "").split(",") if e.strip()]
    layers = [e for e in encodings if e not in ("identity", "none")]
    if len(layers) > 1:
        raise FetchFailure("bad-encoding", f"more than one Content-Encoding: {', '.join(layers)[:200]}")
    data = raw
    for encoding in layers:
        if encoding in ("gzip", "x-gzip"):
            data = _inflate(data, zlib.MAX_WBITS | 16, limit, cut)
        elif encoding == "deflate":
            try:
                data = _inflate(data, zlib.MAX_WBITS, limit, cut)
            except FetchFailure as failure:
                if failure.reason != "bad-encoding":
                    raise
                data = _inflate(data, -zlib.MAX_WBITS, limit, cut)  # raw deflate without the zlib header, as IIS sends
        else:
            raise FetchFailure("bad-encoding", f"unsupported Content-Encoding {encoding!r}")
    if len(data) > limit and cut:
        return data[:limit]
    if len(data) > limit:
        raise FetchFailure("too-large", f"body of {len(data):,} bytes is over {limit:,}")
    return data


MAX_GZIP_MEMBERS = 100
_INFLATE_SLICE = 64 * 1024


def _inflate(data: bytes, wbits: int, limit: int, cut: bool = False) -> bytes:
    """Decompresses in slices (no copies of the rest of the body per member), at most MAX_GZIP_MEMBERS members."""
    output = bytearray()
    view = memoryview(data)
    position, members = 0, 0
    try:
        while position < len(data):
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise FetchFailure("bad-encoding", f"more than {MAX_GZIP_MEMBERS} gzip members")
            inflater = zlib.decompressobj(wbits)
            while not inflater.eof and position < len(data):
                piece = view[position:position + _INFLATE_SLICE]
                position += len(piece)
                output += inflater.decompress(piece, limit - len(output) + 1)
                if len(output) > limit and cut:
                    return bytes(output[:limit])
                if len(output) > limit:
                    raise FetchFailure("decompression-bomb", f"decompresses to more than {limit:,} bytes "
                                       f"from {len(data):,}")
            if not inflater.eof:
                break  # a truncated stream: keep what decompressed
            position -= len(inflater.unused_data)
            if not wbits & 16:
                break  # gzip may have several members, zlib and raw deflate streams one
    except zlib.error as error:
        raise FetchFailure("bad-encoding", f"corrupt compressed body: {error}") from None
    return bytes(output)


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


def _retryable_status(status: int) -> bool:
    return status == 429 or (500 <= status < 600 and status not in (501, 505))


# -- the deadline watchdog ------------------------------------------------------------------------------------------

class _Deadline:
    """One exchange's deadline; the sockets it used are shut down when it passes, which ends any blocked read."""

    def __init__(self, at: float):
        self.at = at
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class Watchdog:
    """A thread that enforces exchange deadlines, so no read can outlive its deadline (a header that drips in
    byte by byte never trips a read timeout)."""

    def __init__(self):
        self._condition = threading.Condition()
        self._active: set[_Deadline] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextmanager
    def deadline(self, at: float) -> Iterator[_Deadline]:
        guard = _Deadline(at)
        with self._condition:
            self._active.add(guard)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
                self._thread.start()
            self._condition.notify()
        try:
            yield guard
        finally:
            with self._condition:
                self._active.discard(guard)

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()

    def _run(self) -> None:
        with self._condition:
            while not self._closed:
                now = time.monotonic()
                for guard in [g for g in self._active if g.at <= now]:
                    self._active.discard(guard)
                    guard.expire()
                nearest = min((g.at for g in self._active), default=None)
                self._condition.wait(None if nearest is None else max(0.0, nearest - now))


# -- robots.txt verdicts --------------------------------------------------------------------------------------------

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


# -- the fetcher ----------------------------------------------------------------------------------------------------

class _NoRedirectSession(requests.Session):
    """A Session that never looks at redirects: requests would otherwise read (and decompress, uncapped) the body of
    every 3xx response itself, even with allow_redirects=False. We follow redirects by hand."""

    def get_redirect_target(self, resp):
        return None


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Stores and sends no cookies: a crawler needs none, and one jar shared by all host threads would grow forever."""

    def set_ok(self, cookie, request) -> bool:
        return False

    def return_ok(self, cookie, request) -> bool:
        return False


class Fetcher:
    """Fetches pages politely and safely. Thread-safe: one instance serves all host threads of a worker."""

    def __init__(self, config: FetchConfig, archive: Callable[[HttpExchange], tuple[str, int]] | None = None,
                 scheduler: HostScheduler | None = None, resolver: Callable[[str, int], list[str]] | None = None,
                 seed: int | None = None):
        self.config = config
        self.archive = archive
        self.scheduler = scheduler or HostScheduler(config.host_delay)
        self.guard = AddressGuard(allow_private=config.allow_private_addresses,
                                  allowed_networks=config.allowed_networks, resolver=resolver or system_resolve)
        self.session = self._session()
        self.watchdog = Watchdog()
        self._rng = random.Random(seed)
        self._robots: dict[str, RobotsVerdict] = {}
        self._robots_locks: dict[str, threading.Lock] = {}
        self._robots_lock = threading.Lock()
        self._refused_hosts: dict[str, tuple[float, str]] = {}  # host -> (monotonic until, why): long Retry-After
        self._refused_lock = threading.Lock()

    def _session(self) -> requests.Session:
        session = _NoRedirectSession()
        session.trust_env = False  # no proxies or .netrc from the environment: they would bypass the guard
        session.cookies.set_policy(_NoCookies())
        adapter = PinnedAdapter(self.guard, pool_connections=256, pool_maxsize=4, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.clear()
        session.headers.update({
            "User-Agent": self.config.user_agent,
            "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
            "Accept-Encoding": "gzip, deflate",
        })
        session.verify = self.config.ca_bundle or True
        return session

    def close(self) -> None:
        self.session.close()
        self.watchdog.close()

    # -- pages ------------------------------------------------------------------------------------------------------

    def fetch_page(self, url: str, stay_on_host: bool = False, resume: FetchResult | None = None) -> FetchResult:
        """Fetches one link: robots.txt and the address guard at every hop, redirects by hand, retries, limits.

        With `stay_on_host`, a redirect to another host (another `host_key`) is not followed: the result comes back
        `pending`, with `redirect_to` and the chain so far, for the crawler of that host to go on with
        `fetch_page(url, resume=result)` (the link's budget, hop count, loop check and totals carry over)."""
        started = time.monotonic()
        if resume is None:
            result = FetchResult(url=url, fetched_at=time.time())
            current, seen, first_hop, spent = url, {url}, 0, 0.0
        else:
            result = dataclasses.replace(resume, redirect_to=None, seen=[])
            current, seen, first_hop, spent = resume.redirect_to, set(resume.seen), resume.redirects, resume.elapsed
        until = started + max(0.0, self.config.link_budget - spent)
        try:
            if current is None:
                raise FetchFailure("fetch-error", "resumed without a redirect target")
            for hop in range(first_hop, self.config.max_redirects + 1):
                if urlsplit(current).scheme.lower() not in ("http", "https"):
                    raise FetchFailure("bad-url", f"not an http(s) URL: {current[:200]}")
                if "@" in urlsplit(current).netloc:
                    raise FetchFailure("bad-url", "URL with credentials")
                self._check_host(current)
                self._check_robots(current)
                exchange = self._attempts(current, result, page=True, until=until)
                result.final_url, result.status = current, exchange.status
                target = redirect_target(current, exchange)
                if target is None:
                    result.content_type = exchange.header("content-type", "") or ""
                    result.body = page_outcome(exchange, self.config)
                    return result
                previous, current = current, follow_redirect(current, target, hop, seen, self.config.max_redirects)
                result.redirects += 1
                if stay_on_host and host_key(current) != host_key(previous):
                    result.redirect_to, result.seen = current, sorted(seen)
                    return result
            raise FetchFailure("too-many-redirects", f"more than {self.config.max_redirects} redirects")
        except FetchFailure as failure:
            result.reason, result.detail = failure.reason, failure.detail[:500]
        finally:
            result.elapsed = spent + time.monotonic() - started
        return result

    # -- handing a host over to another process -----------------------------------------------------------------------

    def host_state(self, host: str) -> dict:
        """What this fetcher knows of a host (`host_key`): its scheduler state, its robots.txt verdicts and a refusal
        (long Retry-After), as plain data with wall-clock times, for the process that crawls the host next."""
        state: dict = {"schedule": self.scheduler.host_state(host)}
        with self._robots_lock:
            state["robots"] = {origin: verdict.to_dict() for origin, verdict in self._robots.items()
                               if host_key(origin) == host}
        with self._refused_lock:
            refused = self._refused_hosts.get(host)
        if refused:
            state["refused"] = (time.time() + refused[0] - time.monotonic(), refused[1])
        return state

    def restore_host(self, host: str, state: dict) -> None:
        """Takes over a `host_state` from another process: no request before the host is ready again, its
        robots.txt not fetched again (while the verdict is fresh), its Crawl-delay and refusal kept."""
        self.scheduler.restore_host(host, state.get("schedule") or {})
        with self._robots_lock:
            for origin, data in (state.get("robots") or {}).items():
                verdict = RobotsVerdict.from_dict(data)
                known = self._robots.get(origin)
                if known is None or known.fetched_at < verdict.fetched_at:
                    self._robots[origin] = verdict
        if state.get("refused"):
            until, why = state["refused"]
            with self._refused_lock:
                self._refused_hosts[host] = (time.monotonic() + until - time.time(), why)

    def _check_host(self, url: str) -> None:
        """Refuses a host that asked for a longer pause (Retry-After) than --retry-after-max, until the pause ends."""
        host = host_key(url)
        with self._refused_lock:
            refused = self._refused_hosts.get(host)
            if refused and refused[0] <= time.monotonic():
                del self._refused_hosts[host]
                refused = None
        if refused:
            raise FetchFailure("retry-after-too-long", refused[1])

    def _refuse_host(self, host: str, seconds: float) -> None:
        why = f"{host} asked for a pause of {seconds:g}s (Retry-After), over --retry-after-max " \
              f"{self.config.retry_after_max:g}s"
        with self._refused_lock:
            self._refused_hosts[host] = (time.monotonic() + seconds, why)

    def _check_robots(self, url: str) -> None:
        verdict = self.robots(url)
        if verdict.failure:
            raise FetchFailure(verdict.failure, verdict.detail)
        if not verdict.rules.allowed(url):
            raise FetchFailure("robots-disallowed", urlsplit(url).path[:200])

    # -- robots.txt -------------------------------------------------------------------------------------------------

    def robots(self, url: str) -> RobotsVerdict:
        """The cached robots.txt verdict of the URL's origin, fetched once (per day) even with many threads asking."""
        origin = robots_url(url)
        with self._robots_lock:
            lock = self._robots_locks.setdefault(origin, threading.Lock())
        with lock:
            verdict = self._robots.get(origin)
            if verdict is None or time.monotonic() - verdict.fetched_at > ROBOTS_CACHE_SECONDS:
                verdict = self._fetch_robots(origin)
                self._robots[origin] = verdict
        return verdict

    def _fetch_robots(self, robots_address: str) -> RobotsVerdict:
        current = robots_address
        until = time.monotonic() + self.config.link_budget  # its own budget: the verdict serves every link
        for hop in range(6):  # RFC 9309: follow at least five redirects
            try:
                exchange = self._attempts(current, None, page=False, until=until)
                target = redirect_target(current, exchange)
            except FetchFailure as failure:
                if hop == 0 and failure.reason in ("address-blocked", "dns-error", "tls-error", "bad-url"):
                    return RobotsVerdict(RobotsRules.disallowing_all(), failure.reason, failure.detail)
                return RobotsVerdict(RobotsRules.disallowing_all(), "robots-unreachable",
                                     f"robots.txt: {failure.reason} {failure.detail}".strip())
            if target is None:
                return self._robots_verdict(robots_address, exchange)
            current = target
        return RobotsVerdict(RobotsRules.allowing_all())  # too many redirects: unavailable, so allowed

    def _robots_verdict(self, robots_address: str, exchange: HttpExchange) -> RobotsVerdict:
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
        rules = rules_for_status(exchange.status, body, self.config.user_agent)
        if rules.disallow_all:
            return RobotsVerdict(rules, "robots-unreachable", f"robots.txt answered {exchange.status}")
        delay = rules.crawl_delay
        if delay is not None and delay > self.config.host_delay:
            if delay > self.config.max_crawl_delay:
                return RobotsVerdict(rules, "crawl-delay-too-long",
                                     f"Crawl-delay {delay:g}s is over --max-crawl-delay {self.config.max_crawl_delay:g}s")
            self.scheduler.set_delay(host_key(robots_address), delay)
        return RobotsVerdict(rules)

    # -- one URL, with retries --------------------------------------------------------------------------------------

    def _attempts(self, url: str, result: FetchResult | None, page: bool, until: float) -> HttpExchange:
        """Requests a URL until it answers with something other than a retryable error, the retries run out or the
        link's deadline (`until`, monotonic) would pass. A Retry-After (and a 429) pauses the whole host."""
        host = host_key(url)
        not_before = 0.0
        for attempt in range(self.config.retries + 1):
            if time.monotonic() >= until:
                raise FetchFailure("timeout", f"link not done within {self.config.link_budget:g}s")
            failure: FetchFailure | None = None
            with self.scheduler.turn(host, not_before=not_before):
                try:
                    exchange = self._exchange(url, page, until)
                except FetchFailure as error:
                    failure, exchange = error, error.exchange
            if result is not None:
                result.attempts += 1
            if exchange is not None:
                self._archive(exchange, result)
            last = attempt == self.config.retries
            if failure is not None:
                if not failure.retryable or last:
                    raise failure
                wait = backoff_seconds(attempt, self.config, self._rng)
                if time.monotonic() + wait >= until:
                    raise failure
            elif _retryable_status(exchange.status):
                retry_after = parse_retry_after(exchange.header("retry-after"))
                if retry_after is not None and retry_after > self.config.retry_after_max:
                    self._refuse_host(host, retry_after)
                    return exchange  # the server asks for a longer pause than we wait: give up on this host
                wait = retry_after if retry_after is not None else backoff_seconds(attempt, self.config, self._rng)
                if retry_after is not None or exchange.status == 429:
                    self.scheduler.defer(host, time.monotonic() + wait)
                if last or time.monotonic() + wait >= until:
                    return exchange
            else:
                return exchange
            log.debug("retrying %s in %.2fs (attempt %d)", url, wait, attempt + 1)
            not_before = time.monotonic() + wait
        raise AssertionError("unreachable")

    def _archive(self, exchange: HttpExchange, result: FetchResult | None) -> None:
        if result is not None:
            result.bytes_received += len(exchange.body)
        if self.archive is None:
            return
        try:
            exchange.warc_file, exchange.warc_offset = self.archive(exchange)
        except Exception:  # an archive problem must be loud but not lose the link's accounting
            log.exception("could not archive the response of %s", exchange.url)
            raise
        if result is not None:
            result.warc_file, result.warc_offset = exchange.warc_file, exchange.warc_offset

    # -- one HTTP exchange ------------------------------------------------------------------------------------------

    def _exchange(self, url: str, page: bool, until: float) -> HttpExchange:
        """One GET with a streamed, size-capped body, all of it within the page deadline and the link's `until`."""
        config = self.config
        started = time.time()
        deadline = min(time.monotonic() + config.page_deadline, until)
        left = max(0.001, deadline - time.monotonic())
        peers: list[str] = []

        def watch(sock: socket.socket) -> None:
            guard.attach(sock)
            try:
                peers.append(sock.getpeername()[0])
            except OSError:
                pass

        with self.watchdog.deadline(deadline) as guard, observe_sockets(watch, deadline):
            try:
                response = self.session.get(url, stream=True, allow_redirects=False,
                                            timeout=(min(config.connect_timeout, left), min(config.read_timeout, left)))
            except Exception as error:
                raise self._failure(error, guard) from None
            exchange = self._start_exchange(url, response, started, peers[-1] if peers else None)
            limit, skipped = self._body_limit(exchange, page)
            try:
                complete = self._read_body(response, exchange, limit, skipped, deadline)
            except Exception as error:
                response.raw.close()
                exchange.truncated = "time" if guard.expired else "disconnect"
                failure = self._failure(error, guard)
                failure.exchange = exchange
                raise failure from None
            if guard.expired:  # the watchdog closed the socket: what looked like the end of the body was not
                complete, exchange.truncated = False, "time"
            if complete:
                response.raw.release_conn()
            else:
                response.raw.close()  # unread data stays on the socket: do not reuse the connection
        return exchange

    def _body_limit(self, exchange: HttpExchange, page: bool) -> tuple[int, str | None]:
        """How much of the body to read, or why it is not read at all (a WARC-Truncated value)."""
        if not page:
            return (ROBOTS_MAX_BYTES if 200 <= exchange.status < 300 else SMALL_BODY_BYTES), None
        if exchange.status in PAGE_STATUSES:
            if not is_html(exchange.header("content-type")):
                return 0, "unspecified"  # only HTML is downloaded
            declared = exchange.header("content-length")
            if declared and declared.isdigit() and int(declared) > self.config.max_bytes:
                return 0, "length"
            return self.config.max_bytes, None
        return SMALL_BODY_BYTES, None

    @staticmethod
    def _start_exchange(url: str, response: requests.Response, started: float, ip: str | None) -> HttpExchange:
        raw = response.raw
        request_headers = [("Host", urlsplit(url).netloc.rpartition("@")[2])]
        request_headers += list(response.request.headers.items())
        return HttpExchange(
            url=url, status=response.status_code, reason_phrase=response.reason or "",
            http_version={10: "HTTP/1.0", 11: "HTTP/1.1"}.get(getattr(raw, "version", 11), "HTTP/1.1"),
            response_headers=list(raw.headers.items()), request_headers=request_headers,
            ip=ip, started_at=started)

    @staticmethod
    def _read_body(response: requests.Response, exchange: HttpExchange, limit: int, skipped: str | None,
                   deadline: float) -> bool:
        """Reads the body as received into the exchange; returns whether it was read to the end."""
        if skipped:
            exchange.truncated = skipped
            return False
        chunks, size = [], 0
        while True:
            if time.monotonic() > deadline:
                exchange.body, exchange.truncated = b"".join(chunks), "time"
                return False
            chunk = response.raw.read1(64 * 1024, decode_content=False) or b""
            if not chunk:
                break
            if size + len(chunk) > limit:
                chunks.append(chunk[: limit - size])
                exchange.body, exchange.truncated = b"".join(chunks), "length"
                return False
            chunks.append(chunk)
            size += len(chunk)
        exchange.body = b"".join(chunks)
        return True

    def _failure(self, error: Exception, guard: _Deadline) -> FetchFailure:
        """The reject reason of an exception raised while requesting or reading."""
        if guard.expired:
            return FetchFailure("timeout", f"no complete response within the page deadline "
                                f"({self.config.page_deadline:g}s) or the link's ({self.config.link_budget:g}s)")
        if isinstance(error, FetchFailure):
            return error
        if isinstance(error, AddressBlocked):
            return FetchFailure("address-blocked", str(error))
        if isinstance(error, ResolveFailed):
            return FetchFailure("dns-error", str(error))
        if isinstance(error, requests.exceptions.ConnectTimeout):
            return FetchFailure("timeout", f"connect timeout ({self.config.connect_timeout:g}s)", retryable=True)
        timeouts = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, socket.timeout, TimeoutError)
        if isinstance(error, timeouts):
            return FetchFailure("timeout", f"read timeout ({self.config.read_timeout:g}s)")
        if isinstance(error, (requests.exceptions.SSLError, urllib3.exceptions.SSLError, ssl.SSLError)):
            return FetchFailure("tls-error", _short(error))
        bad_url = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
                   urllib3.exceptions.LocationParseError, UnicodeError)
        if isinstance(error, bad_url):
            return FetchFailure("bad-url", _short(error))
        connection = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                      urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
        if isinstance(error, connection):
            return FetchFailure("connection-error", _short(error), retryable=True)
        return FetchFailure("fetch-error", _short(error))


def _short(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:300]


# -- a host's links, one after another ----------------------------------------------------------------------------

def redirect_item(link: dict, result: FetchResult) -> dict:
    """A link whose fetch stopped at a redirect to another host, as an item for `crawl_host` of that host."""
    return {"redirected_link": link, "result": result.to_dict()}


def _work(item: dict) -> tuple[dict, FetchResult | None]:
    """(link, the result to resume or None) of a `crawl_host` item: a link row or a `redirect_item`."""
    if "redirected_link" in item:
        return item["redirected_link"], FetchResult.from_dict(item["result"])
    return item, None


def crawl_host(fetcher: Fetcher, links: Iterable[dict], max_pages: int = 0,
               max_network_failures: int = 0, stay_on_host: bool = False) -> Iterator[tuple[dict, FetchResult]]:
    """Fetches one host's links in order of `url_key`, yielding (link, result) for every link.

    An item may also be a `redirect_item` (a link that another host redirected here): its fetch goes on from the
    redirect. With `stay_on_host`, a redirect to another host ends a link's fetch as a `pending` result.
    After `max_pages` links (0: no cap) the rest are rejected `host-cap`; after `max_network_failures` consecutive
    network failures (0: never) the host counts as down and the rest are rejected `host-unreachable`."""
    failures_in_a_row = 0
    work = sorted((_work(item) for item in links), key=lambda pair: (pair[0].get("url_key") or "", pair[0]["url"]))
    for index, (link, resume) in enumerate(work):
        url = link["url"]
        if max_pages and index >= max_pages:
            yield link, _ended(url, resume, "host-cap", f"more than {max_pages} links on this host")
            continue
        if max_network_failures and failures_in_a_row >= max_network_failures:
            yield link, _ended(url, resume, "host-unreachable",
                               f"{failures_in_a_row} network failures in a row on this host")
            continue
        try:
            result = fetcher.fetch_page(url, stay_on_host=stay_on_host, resume=resume)
        except Exception as error:  # a bug: keep the link in the accounting and go on with the host
            log.exception("fetching %s failed unexpectedly", url)
            result = _ended(url, resume, "fetch-error", _short(error))
        failures_in_a_row = failures_in_a_row + 1 if result.reason in NETWORK_FAILURES else 0
        yield link, result


def _ended(url: str, resume: FetchResult | None, reason: str, detail: str) -> FetchResult:
    """A link's result without (further) fetching: keeps what a resumed link had so far."""
    if resume is None:
        return FetchResult(url=url, reason=reason, detail=detail)
    return dataclasses.replace(resume, reason=reason, detail=detail, redirect_to=None, seen=[])
