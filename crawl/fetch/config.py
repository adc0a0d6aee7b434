"""The fetcher's settings and its default User-Agent."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_USER_AGENT = "webtext-crawler/0.1 (+https://github.com/webtext-corpus/webtext/blob/main/docs/crawl.md)"


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
