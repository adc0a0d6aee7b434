"""Exchange deadlines enforced by a thread that shuts the sockets of an exchange whose deadline has passed."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator


class Deadline:
    """One exchange's deadline; the sockets it used are shut down when it passes, which ends any blocked read."""

    def __init__(self, at: float):
        self.at = at
        self.expired = False  # written under _lock (by the watchdog thread); read by the exchange's thread
        self._sockets: list[socket.socket] = []  # guarded by _lock: appended by the exchange's thread
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
        self._condition = threading.Condition()  # guards _active, _thread and _closed
        self._active: set[Deadline] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextmanager
    def deadline(self, at: float) -> Iterator[Deadline]:
        guard = Deadline(at)
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
