"""Politeness and concurrency: one request in flight per host and per server (resolved address), with a delay
between requests, many hosts at once.

`HostScheduler` hands out turns per host; `HostPool` runs one thread per host in flight, so a worker crawls many hosts
concurrently while each host's pages are fetched strictly one after another.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


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


def server_key(address: str, port: int, scheme: str = "http") -> str:
    """The politeness key of a server: a resolved address with the port unless it is the scheme's default. Distinct
    from every `host_key` (a leading '@'), so a host named by its address and the server itself are two keys."""
    default = {"http": 80, "https": 443}.get(scheme.lower())
    address = f"[{address}]" if ":" in address else address
    return f"@{address}" if port == default else f"@{address}:{port}"


class HostScheduler:
    """At most one request in flight per host, and at least the host's delay from the end of one request to the
    start of the next. A turn may also name the servers (`server_key`) the host resolves to: they are held and
    spaced the same way, so two names of one server (aliases, an address and its name) are never asked at once nor
    sooner than the delay apart. Shared by all threads of a process; `host_state`/`restore_host` hand a host over to
    the process that crawls it next (the crawl stage's redirect rounds); server clocks stay with the process."""

    def __init__(self, default_delay: float = 1.0):
        self.default_delay = default_delay
        # Every field below is read and written only while holding _condition (all host threads share them).
        self._condition = threading.Condition()
        self._busy: set[str] = set()  # hosts and servers with a request in flight
        self._free_at: dict[str, float] = {}  # host or server -> monotonic time it may get its next request
        self._delays: dict[str, float] = {}
        self._deferred: dict[str, float] = {}  # host -> monotonic time before which it gets no request

    def set_delay(self, host: str, delay: float) -> None:
        """A longer delay for one host (its robots.txt Crawl-delay); applies from its last request on."""
        with self._condition:
            previous = self.delay(host)
            self._delays[host] = max(delay, self.default_delay)
            if host in self._free_at:
                self._free_at[host] += self._delays[host] - previous
            self._condition.notify_all()

    def defer(self, host: str, until: float) -> None:
        """No request to the host before `until` (a monotonic time), whichever thread asks: its Retry-After."""
        with self._condition:
            self._deferred[host] = max(until, self._deferred.get(host, 0.0))
            self._condition.notify_all()

    def delay(self, host: str) -> float:
        return self._delays.get(host, self.default_delay)

    def host_state(self, host: str) -> dict:
        """What this scheduler knows of a host, in wall-clock time, for another process (or machine) that crawls the
        host next: when it may get its next request, until when it is deferred, and its delay if longer."""
        with self._condition:
            offset = time.time() - time.monotonic()
            state: dict = {}
            if host in self._free_at:
                state["free_at"] = self._free_at[host] + offset
            if host in self._deferred:
                state["deferred"] = self._deferred[host] + offset
            if host in self._delays:
                state["delay"] = self._delays[host]
            return state

    def restore_host(self, host: str, state: dict) -> None:
        """Takes over a host's `host_state` from elsewhere: the later times and the longer delay win."""
        with self._condition:
            offset = time.monotonic() - time.time()
            if state.get("delay") is not None:
                self._delays[host] = max(state["delay"], self._delays.get(host, self.default_delay))
            if state.get("free_at") is not None:
                self._free_at[host] = max(self._free_at.get(host, 0.0), state["free_at"] + offset)
            if state.get("deferred") is not None:
                self._deferred[host] = max(self._deferred.get(host, 0.0), state["deferred"] + offset)
            self._condition.notify_all()

    @contextmanager
    def turn(self, host: str, not_before: float = 0.0, servers: Iterable[str] = ()) -> Iterator[None]:
        """Waits until the host and its `servers` are idle and their delays (and `not_before`, a monotonic time) have
        passed; holds them all (taken at once, so two turns sharing servers cannot deadlock). After the turn each of
        them waits the host's delay (its Crawl-delay, if longer) before its next request, from whichever host."""
        keys = [host, *(s for s in dict.fromkeys(servers) if s != host)]
        with self._condition:
            while True:
                if not any(key in self._busy for key in keys):
                    ready_at = max(self._deferred.get(host, 0.0), not_before,
                                   *(self._free_at.get(key, 0.0) for key in keys))
                    wait = ready_at - time.monotonic()
                    if wait <= 0:
                        self._busy.update(keys)
                        break
                    self._condition.wait(wait)
                else:
                    self._condition.wait()
        try:
            yield
        finally:
            with self._condition:
                self._busy.difference_update(keys)
                free_at = time.monotonic() + self.delay(host)
                for key in keys:
                    self._free_at[key] = max(free_at, self._free_at.get(key, 0.0))
                self._prune()
                self._condition.notify_all()

    def _prune(self) -> None:
        now = time.monotonic()
        if len(self._free_at) > 100_000:  # forget hosts whose delay is long over
            for host in [h for h, t in self._free_at.items() if t < now and h not in self._busy]:
                del self._free_at[host]
        if len(self._deferred) > 1_000:
            for host in [h for h, t in self._deferred.items() if t < now]:
                del self._deferred[host]


@dataclass
class HostDone:
    """Marks the end of one host's results in a `HostPool`'s output."""

    host: str
    error: str | None = None


class HostPool:
    """Crawls hosts concurrently: `submit` a host and its items, read results with `ready()` or `drain()`.

    Each host runs in its own pool thread; `crawl_host(host, items)` yields results that are queued for the caller.
    The caller must keep reading: a full result queue makes the host threads wait (back-pressure)."""

    def __init__(self, crawl_host: Callable[[str, list], Iterable[Any]], max_hosts: int = 64, max_queued: int = 256):
        self.crawl_host = crawl_host
        self.max_hosts = max(1, max_hosts)
        self._executor = ThreadPoolExecutor(max_workers=self.max_hosts, thread_name_prefix="host")
        self._results: queue.Queue = queue.Queue(maxsize=max_queued)  # host threads -> caller; the queue locks itself
        self._cancelled = threading.Event()
        self.in_flight = 0  # the caller's thread only (submit, _take): host threads never touch it

    def submit(self, host: str, items: list) -> Iterator[Any]:
        """Starts a host; while all threads are busy, first yields results until one host finishes."""
        while self.in_flight >= self.max_hosts:
            yield from self._take(block=True)
        self.in_flight += 1
        self._executor.submit(self._run, host, items)

    def ready(self) -> Iterator[Any]:
        """The results available now, without waiting."""
        yield from self._take(block=False)

    def drain(self) -> Iterator[Any]:
        """All remaining results, waiting for every submitted host to finish."""
        while self.in_flight:
            yield from self._take(block=True)

    def close(self) -> None:
        """Stops the host threads (each after its current item) even when nobody reads their results any more."""
        self._cancelled.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        while True:
            try:
                self._results.get_nowait()
            except queue.Empty:
                break

    def _take(self, block: bool) -> Iterator[Any]:
        """One result (waiting for it if `block`), then whatever else is already queued."""
        try:
            item = self._results.get(block=block)
        except queue.Empty:
            return
        while True:
            if isinstance(item, HostDone):
                self.in_flight -= 1
                if item.error:
                    log.error("host %s failed: %s", item.host, item.error)
            yield item
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return

    def _run(self, host: str, items: list) -> None:
        error = None
        try:
            for result in self.crawl_host(host, items):
                if not self._put(result):
                    return  # closed: the rest of the host's links are not fetched
        except Exception as exc:  # a bug must not lose the host's accounting: the caller sees HostDone.error
            log.exception("crawling %s failed", host)
            error = f"{type(exc).__name__}: {exc}"
        self._put(HostDone(host, error))

    def _put(self, item: Any) -> bool:
        """Queues a result, waiting while the queue is full; False once the pool is closed."""
        while not self._cancelled.is_set():
            try:
                self._results.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
