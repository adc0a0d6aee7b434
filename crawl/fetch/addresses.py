"""Address guard: resolve each host, refuse non-public addresses, and pin the checked answer for the connection.

A request goes through `PinnedAdapter`, which checks the host before sending and makes urllib3 connect to exactly the
addresses that were checked (the Host header, SNI and certificate check still use the host name), so a DNS answer that
changes between the check and the connection (rebinding) cannot reach a private address.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence
from urllib.parse import urlsplit

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.poolmanager import PoolManager
from urllib3.util import connection as urllib3_connection

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
MAX_ADDRESSES_PER_CONNECTION = 4  # a name with dozens of dead addresses must not multiply the connect timeout


class AddressBlocked(Exception):
    """The host resolves to an address we must not connect to (private, loopback, …)."""

    def __init__(self, host: str, address: str, why: str):
        super().__init__(f"{host} resolves to {address} ({why})")
        self.host, self.address, self.why = host, address, why

    def __reduce__(self):
        return (AddressBlocked, (self.host, self.address, self.why))


class ResolveFailed(Exception):
    """The host name has no address (NXDOMAIN, no A/AAAA record, resolver failure)."""


def address_problem(address: IPAddress) -> str | None:
    """Why an address is not a public unicast one, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 address itself
            return address_problem(address.ipv4_mapped)
        embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            problem = address_problem(embedded)
            if problem:
                return f"{problem} (embedded in {address})"
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    checks = (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
              ("link-local", address.is_link_local), ("multicast", address.is_multicast),
              ("reserved", address.is_reserved), ("site-local", site_local), ("private", address.is_private))
    for why, hit in checks:
        if hit:
            return why
    if not address.is_global:  # shared address space (100.64/10), documentation and benchmarking ranges
        return "not-global"
    return None


def system_resolve(host: str, port: int) -> list[str]:
    """All addresses of a host in the system resolver's preferred order."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise ResolveFailed(f"cannot resolve {host}: {error}") from None
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in answers:
        address = str(sockaddr[0]).partition("%")[0]  # drop an IPv6 scope id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ResolveFailed(f"{host} has no address")
    return addresses


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass
class AddressGuard:
    """Resolves hosts, refuses blocked addresses and remembers (pins) the checked answers for a while."""

    allow_private: bool = False
    allowed_networks: Sequence[str] = ()
    resolver: Resolver = system_resolve
    pin_seconds: float = 300.0
    _networks: list = field(init=False, repr=False)
    # (host, port) -> (monotonic until, checked addresses); written by host threads, read by connecting threads
    _pins: dict[tuple[str, int], tuple[float, tuple[str, ...]]] = field(init=False, repr=False, default_factory=dict)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)  # guards _pins, not resolving

    def __post_init__(self) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in self.allowed_networks]

    def refusal(self, address: IPAddress) -> str | None:
        """Why we must not connect to this address, or None."""
        if self.allow_private or any(address in network for network in self._networks):
            return None
        return address_problem(address)

    def check(self, host: str, port: int) -> tuple[str, ...]:
        """The addresses to connect to for host:port; raises AddressBlocked or ResolveFailed.

        Every address of the answer must pass: a name that resolves to a public and a private address is refused."""
        host = host.strip("[]").rstrip(".").lower()
        key = (host, port)
        with self._lock:
            pinned = self._pins.get(key)
        if pinned and pinned[0] > time.monotonic():
            return pinned[1]
        literal = _literal_address(host)
        addresses = [str(literal)] if literal is not None else list(self.resolver(host, port))
        for text in addresses:
            why = self.refusal(ipaddress.ip_address(text))
            if why:
                raise AddressBlocked(host, text, why)
        checked = tuple(addresses)
        with self._lock:
            self._pins[key] = (time.monotonic() + self.pin_seconds, checked)
        return checked

    def pinned(self, host: str, port: int) -> tuple[str, ...] | None:
        """The checked addresses of host:port (even when due for a re-check), or None if it was never checked."""
        with self._lock:
            pinned = self._pins.get((host.strip("[]").rstrip(".").lower(), port))
        return pinned[1] if pinned else None


# -- observing the sockets a thread opens (the fetcher's deadline watchdog closes them) -------------------------------

_observers = threading.local()


@contextmanager
def observe_sockets(callback: Callable[[socket.socket], None], deadline: float | None = None) -> Iterator[None]:
    """Calls `callback(sock)` for each socket a pinned connection uses in this thread while inside the block; new
    connections in the block give up at `deadline` (monotonic), whatever their connect timeout."""
    previous = getattr(_observers, "callback", None), getattr(_observers, "deadline", None)
    _observers.callback, _observers.deadline = callback, deadline
    try:
        yield
    finally:
        _observers.callback, _observers.deadline = previous


def _notify(sock: socket.socket | None) -> None:
    callback = getattr(_observers, "callback", None)
    if callback is not None and sock is not None:
        callback(sock)


class _PinnedConnectionMixin:
    """Connects to the guard's pinned addresses of the host instead of resolving the name again."""

    address_guard: AddressGuard  # set on the per-guard subclass
    _raw_sock: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        addresses = self.address_guard.pinned(self.host, self.port)
        if not addresses:
            raise NewConnectionError(self, f"refusing to connect to {self.host}:{self.port}: its address was never checked")
        last_error: Exception | None = None
        deadline = getattr(_observers, "deadline", None)
        for address in addresses[:MAX_ADDRESSES_PER_CONNECTION]:
            timeout = self.timeout
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    last_error = last_error or ConnectTimeoutError(self, f"no time left to connect to {self.host}")
                    break
                timeout = left if not isinstance(timeout, (int, float)) else min(timeout, left)
            try:
                sock = urllib3_connection.create_connection(
                    (address, self.port), timeout, source_address=self.source_address,
                    socket_options=self.socket_options)
            except socket.timeout as error:
                last_error = ConnectTimeoutError(self, f"connection to {self.host} ({address}) timed out")
                last_error.__cause__ = error
            except OSError as error:
                last_error = NewConnectionError(self, f"failed to connect to {self.host} ({address}): {error}")
            else:
                self._raw_sock = sock
                _notify(sock)
                return sock
        assert last_error is not None
        raise last_error

    def request(self, *args, **kwargs):
        if self._raw_sock is not None and self.sock is not None:  # a kept-alive connection serving another request
            _notify(self._raw_sock)
        return super().request(*args, **kwargs)


class PinnedPoolManager(PoolManager):
    """A PoolManager whose connections go to the guard's pinned addresses."""

    def __init__(self, address_guard: AddressGuard, **kwargs):
        super().__init__(**kwargs)
        guarded = {"address_guard": address_guard}
        http_connection = type("PinnedHTTPConnection", (_PinnedConnectionMixin, HTTPConnection), guarded)
        https_connection = type("PinnedHTTPSConnection", (_PinnedConnectionMixin, HTTPSConnection), guarded)
        self.pool_classes_by_scheme = {
            "http": type("PinnedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_connection}),
            "https": type("PinnedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_connection}),
        }


class PinnedAdapter(HTTPAdapter):
    """A requests adapter that checks every request's host with the guard and connects only to the checked addresses."""

    def __init__(self, address_guard: AddressGuard, **kwargs):
        self.address_guard = address_guard
        super().__init__(**kwargs)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        self.poolmanager = PinnedPoolManager(self.address_guard, num_pools=connections, maxsize=maxsize,
                                             block=block, **pool_kwargs)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        raise RuntimeError("proxies are not supported: they would bypass the address guard")

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        if parts.hostname is None:
            raise ResolveFailed(f"no host in {request.url!r}")
        self.address_guard.check(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        return super().send(request, **kwargs)
