"""The fetcher's settings and its default User-Agent."""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_USER_AGENT = "webtext-crawler/0.1 (+https://github.com/webtext-corpus/webtext/blob/main/docs/crawl.md)"


@dataclass(frozen=True)
class FetchConfig:
    """How to fetch: identity, limits, timeouts, retries, politeness and the address policy (fields with help are
    `webtext crawl` options)."""

    user_agent: str = field(default=DEFAULT_USER_AGENT, metadata={
        "help": "User-Agent with a contact URL; name your own crawl here"})
    host_delay: float = field(default=1.0, metadata={"min": 0,
        "help": "seconds between the end of one request to a host and the start of the next"})
    max_crawl_delay: float = field(default=60.0, metadata={"min": 0,
        "help": "honour robots.txt Crawl-delay up to this many seconds; hosts asking more are skipped"})
    connect_timeout: float = field(default=10.0, metadata={"min": 0, "help": "seconds to connect"})
    read_timeout: float = field(default=30.0, metadata={"min": 0, "help": "seconds without a byte from the server"})
    page_deadline: float = field(default=60.0, metadata={"min": 0,
        "help": "seconds one response may take in all, headers and body"})
    link_deadline: float = field(default=0.0, metadata={"min": 0,
        "help": "seconds one link may take in all: redirects, retries and their waits (0: 3 page deadlines)"})
    max_bytes: int = field(default=5_000_000, metadata={"min": 1, "help": "largest body as received"})
    max_decompressed_bytes: int = field(default=25_000_000, metadata={"min": 1,
        "help": "largest body after gzip/deflate (bigger: a decompression bomb)"})
    max_redirects: int = field(default=5, metadata={"min": 0, "help": "redirects followed per link"})
    retries: int = field(default=3, metadata={"min": 0, "help": "retries after connection errors, 429 and 5xx"})
    backoff_base: float = field(default=1.0, metadata={"min": 0,
        "help": "first retry waits about this many seconds, doubling each time"})
    backoff_max: float = 60.0
    retry_after_max: float = field(default=120.0, metadata={"min": 0,
        "help": "longest Retry-After we wait for; longer means giving up"})
    allow_private_addresses: bool = field(default=False, metadata={
        "help": "allow loopback, private, link-local … addresses (tests, the demo)"})
    allowed_networks: tuple[str, ...] = field(default=(), metadata={
        "help": "CIDR networks allowed despite the address guard (e.g. 127.0.0.0/8)"})
    ca_bundle: str | None = None  # a CA file instead of the system's (tests with their own certificates)

    @property
    def link_budget(self) -> float:
        return self.link_deadline if self.link_deadline > 0 else 3 * self.page_deadline
