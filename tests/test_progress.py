"""The workers' progress lines: totals and a rate, at most one line per interval."""
from __future__ import annotations

import logging

from webtext.pipeline.progress import Progress


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_logs_totals_and_rate_at_most_once_per_interval(caplog):
    clock = FakeClock()
    progress = Progress(logging.getLogger("webtext.test"), "crawl round 0", every_s=30, clock=clock)
    with caplog.at_level(logging.INFO, logger="webtext.test"):
        progress.add(links=10, pages=8)
        clock.now += 29
        progress.add(links=5, pages=5)
        assert not caplog.records
        clock.now += 1
        progress.add(links=15, pages=2)
        clock.now += 10
        progress.add(links=1)
    assert [r.getMessage() for r in caplog.records] == ["crawl round 0: links 30, pages 15 in 30 s (1.0 links/s)"]
    assert progress.line() == "crawl round 0: links 31, pages 15 in 40 s (0.8 links/s)"
