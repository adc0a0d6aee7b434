"""The Fetcher: one link at a time through robots.txt, the address guard, redirects by hand, retries and limits.

Every response is handed to an `archive` callback (the WARC writer) as it was received.
"""
from __future__ import annotations

import dataclasses
import http.client
import http.cookiejar
import logging
import random
import socket
import ssl
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from .addresses import (MAX_ADDRESSES_PER_CONNECTION, AddressBlocked, AddressGuard, PinnedAdapter, ResolveFailed,
                        observe_sockets, system_resolve)
from .config import FetchConfig
from .outcomes import FetchFailure, FetchResult, error_detail
from .politeness import HostScheduler, host_key, server_key
from .responses import (PAGE_STATUSES, backoff_seconds, follow_redirect, is_html, page_outcome, parse_retry_after,
                        redirect_target, retryable_status)
from .robots import ROBOTS_MAX_BYTES, RobotsCache, RobotsRules, RobotsVerdict, robots_verdict
from .warc import HttpExchange
from .watchdog import Deadline, Watchdog

log = logging.getLogger(__name__)

SMALL_BODY_BYTES = 64 * 1024  # what we keep of error pages and redirect bodies


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
        # Shared by every host thread of the worker; what guards each (see also each class's own comments):
        self.config = config  # read only
        self.archive = archive  # the caller's; the stage's WarcWriter serialises writes under its own lock
        self.scheduler = scheduler or HostScheduler(config.host_delay)  # its Condition
        self.guard = AddressGuard(allow_private=config.allow_private_addresses,  # its _lock (the pins)
                                  allowed_networks=config.allowed_networks, resolver=resolver or system_resolve)
        # requests.Session: only read after this (headers, adapters); urllib3's PoolManager and pools lock themselves;
        # the cookie jar stores nothing (_NoCookies)
        self.session = self._session()
        self.watchdog = Watchdog()  # its Condition; each Deadline its own lock
        self._rng = random.Random(seed)  # random() is one C call, atomic under the GIL
        self.robots = RobotsCache(self._fetch_robots)  # its _lock (the maps), a lock per origin (one fetch each)
        self._refused_hosts: dict[str, tuple[float, str]] = {}  # host -> (monotonic until, why): long Retry-After
        self._refused_lock = threading.Lock()  # guards _refused_hosts

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
        state["robots"] = self.robots.host_state(host)
        with self._refused_lock:
            refused = self._refused_hosts.get(host)
        if refused:
            state["refused"] = (time.time() + refused[0] - time.monotonic(), refused[1])
        return state

    def restore_host(self, host: str, state: dict) -> None:
        """Takes over a `host_state` from another process: no request before the host is ready again, its
        robots.txt not fetched again (while the verdict is fresh), its Crawl-delay and refusal kept."""
        self.scheduler.restore_host(host, state.get("schedule") or {})
        self.robots.restore(state.get("robots") or {})
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
        verdict = self.robots.verdict(url)
        if verdict.failure:
            raise FetchFailure(verdict.failure, verdict.detail)
        if not verdict.rules.allowed(url):
            raise FetchFailure("robots-disallowed", urlsplit(url).path[:200])

    # -- robots.txt -------------------------------------------------------------------------------------------------

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
                verdict = robots_verdict(exchange, self.config)
                delay = verdict.rules.crawl_delay
                if verdict.failure is None and delay is not None and delay > self.config.host_delay:
                    self.scheduler.set_delay(host_key(robots_address), delay)
                return verdict
            current = target
        return RobotsVerdict(RobotsRules.allowing_all())  # too many redirects: unavailable, so allowed

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
            with self.scheduler.turn(host, not_before=not_before, servers=self._servers(url)):
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
            elif retryable_status(exchange.status):
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

    def _servers(self, url: str) -> list[str]:
        """The servers (`server_key`) the URL's host resolves to, as the address guard pinned them for the connections
        (checked now if never before: the host's first request is held per server too); none when it cannot resolve
        or is refused (the exchange then fails with the reason, holding only the host)."""
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            addresses = self.guard.pinned(parts.hostname or "", port) or self.guard.check(parts.hostname or "", port)
        except (AddressBlocked, ResolveFailed, ValueError):
            return []
        return [server_key(address, port, parts.scheme) for address in addresses[:MAX_ADDRESSES_PER_CONNECTION]]

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

    def _failure(self, error: Exception, guard: Deadline) -> FetchFailure:
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
            return FetchFailure("tls-error", error_detail(error))
        bad_url = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
                   urllib3.exceptions.LocationParseError, UnicodeError)
        if isinstance(error, bad_url):
            return FetchFailure("bad-url", error_detail(error))
        connection = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                      urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
        if isinstance(error, connection):
            return FetchFailure("connection-error", error_detail(error), retryable=True)
        return FetchFailure("fetch-error", error_detail(error))
