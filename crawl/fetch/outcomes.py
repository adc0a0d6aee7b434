"""What fetching one link gives: a page ready for extraction, or a reject reason (`timeout`, `http-404`, …)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .warc import HttpExchange

NETWORK_FAILURES = frozenset({"timeout", "connection-error", "dns-error", "tls-error"})


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
    recovered: bool = False  # an earlier run's outcome, read back from its journal and WARC files, not fetched now

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


def error_detail(error: Exception) -> str:
    """An exception as a reject detail: its type and message, cut short."""
    return f"{type(error).__name__}: {error}"[:300]
