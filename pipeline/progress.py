"""Running totals that a worker logs every so often, so a long local run shows how far it is."""
from __future__ import annotations

import logging
import threading
import time

PROGRESS_SECONDS = 30.0


class Progress:
    """Counts per worker process; `add` logs a line of totals and the rate since the start at most every `every_s`.

    The first name given to `add` is the one the rate is computed for. Thread-safe (the crawl adds from host threads).
    """

    def __init__(self, logger: logging.Logger, label: str, every_s: float = PROGRESS_SECONDS,
                 clock=time.monotonic):
        self.logger, self.label, self.every_s, self.clock = logger, label, every_s, clock
        self.totals: dict[str, int] = {}
        self.started = self.last_logged = clock()
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, count in counts.items():
                self.totals[name] = self.totals.get(name, 0) + count
            now = self.clock()
            if now - self.last_logged < self.every_s:
                return
            self.last_logged = now
            line = self.line(now)
        self.logger.info("%s", line)

    def line(self, now: float | None = None) -> str:
        elapsed = max((self.clock() if now is None else now) - self.started, 1e-9)
        parts = ", ".join(f"{name} {count:,}" for name, count in self.totals.items())
        first = next(iter(self.totals), None)
        rate = f" ({self.totals[first] / elapsed:,.1f} {first}/s)" if first else ""
        return f"{self.label}: {parts} in {elapsed:,.0f} s{rate}"
