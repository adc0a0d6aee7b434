"""A fake Reddit API on 127.0.0.1 over real HTTP (OAuth token endpoint, subreddit listings with
`after` pagination and rate-limit headers) and the pytest fixture that points PRAW at it.

Use from a test module or conftest.py with `from tests.fake_reddit import *` (it exports the
fixture `fake_reddit` and the helpers). The fixture writes a praw.ini into a temporary directory
and sets $XDG_CONFIG_HOME to it, which is where PRAW looks first on Linux and macOS (APPDATA on
Windows is removed for the test); the praw.ini of the current directory, read after it, must not
define the same site."""
from __future__ import annotations

import base64
import html
import json
import math
import os
import random
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

__all__ = [
    "FakeReddit",
    "FakeRedditSite",
    "SeenRequest",
    "api_listing_children",
    "fake_reddit",
    "generated_api_submissions",
    "reset_praw_config_cache",
]

PAGE_CAP = 100  # Reddit returns at most 100 children per page
LISTING_CAP = 1000  # and about 1,000 per listing
_TIME_FILTER_SECONDS = {"hour": 3600, "day": 86400, "week": 7 * 86400, "month": 31 * 86400, "year": 366 * 86400}


@dataclass(frozen=True)
class SeenRequest:
    """One request the fake saw (the Authorization header only as whether it was present and valid)."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    authorized: bool
    status: int
    at: float  # time.monotonic() when it arrived
    user_agent: str


class FakeReddit:
    """The Reddit API pieces PRAW uses for application-only, read-only listings.

    - `POST /api/v1/access_token` with HTTP Basic client credentials and
      `grant_type=client_credentials`; wrong credentials get 401 as on Reddit.
    - `GET /r/NAME/{top,new,hot,controversial}` with `limit` (at most 100 a page), `after`
      (a `t3_` fullname), `t` (time filter of top/controversial) and `raw_json`; without
      `raw_json=1` strings come HTML-escaped, as Reddit does. A bearer token is required.
    - Rate-limit headers on API responses: `x-ratelimit-used`, `x-ratelimit-remaining`,
      `x-ratelimit-reset` over fixed windows of `ratelimit_window_s` seconds with
      `ratelimit_budget` requests each; a request over the budget gets 429.
    """

    def __init__(
        self,
        client_id: str = "fake-client-id",
        client_secret: str | None = None,
        ratelimit_budget: int = 1000,
        ratelimit_window_s: float = 1.0,
        now: float | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret or "fake-secret-" + secrets.token_hex(8)
        self.ratelimit_budget = ratelimit_budget
        self.ratelimit_window_s = ratelimit_window_s
        self.now = now  # the clock for time filters; None is the real time
        self.requests: list[SeenRequest] = []
        self.subreddits: dict[str, list[dict]] = {}
        self.tokens: set[str] = set()
        self._lock = threading.Lock()
        self._window_start: float | None = None
        self._window_used = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- content ----------------------------------------------------------------------------
    def add_subreddit(self, name: str, submissions: list[dict]) -> None:
        """Serve `submissions` (t3 data dicts) as r/NAME; listings order them like Reddit does."""
        self.subreddits[name.lower()] = [dict(item) for item in submissions]

    def listing(self, name: str, sort: str, time_filter: str = "all") -> list[dict]:
        """The whole listing r/NAME/sort as served, before pagination (capped at 1,000)."""
        items = list(self.subreddits[name.lower()])
        if sort in ("top", "controversial") and time_filter != "all":
            now = self.now if self.now is not None else time.time()
            oldest = now - _TIME_FILTER_SECONDS[time_filter]
            items = [item for item in items if float(item.get("created_utc", 0)) >= oldest]
        if sort == "top":
            items.sort(key=lambda item: (-int(item.get("score", 0)), item["id"]))
        elif sort == "new":
            items.sort(key=lambda item: (-float(item.get("created_utc", 0)), item["id"]))
        elif sort == "controversial":
            items.sort(key=lambda item: (int(item.get("score", 0)) - int(item.get("num_comments", 0)), item["id"]))
        return items[:LISTING_CAP]  # "hot" keeps the given order

    # ---- lifecycle ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "FakeReddit is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeReddit:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-reddit", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> FakeReddit:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ---- bookkeeping (called from handler threads) ---------------------------------------------
    def _record(self, request: SeenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_ratelimit(self) -> tuple[bool, dict[str, str]]:
        """Count one API request; (allowed, headers) for the current window."""
        with self._lock:
            now = time.monotonic()
            if self._window_start is None or now >= self._window_start + self.ratelimit_window_s:
                self._window_start, self._window_used = now, 0
            allowed = self._window_used < self.ratelimit_budget
            if allowed:
                self._window_used += 1
            remaining = self.ratelimit_budget - self._window_used
            reset = max(1, math.ceil(self._window_start + self.ratelimit_window_s - now))
            headers = {
                "x-ratelimit-used": str(self._window_used),
                "x-ratelimit-remaining": f"{float(remaining):.1f}",
                "x-ratelimit-reset": str(reset),
            }
            return allowed, headers

    def api_requests(self) -> list[SeenRequest]:
        """The listing requests seen (everything but the token endpoint)."""
        with self._lock:
            return [r for r in self.requests if r.path != "/api/v1/access_token"]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeReddit
    protocol_version = "HTTP/1.1"
    server_version = "FakeReddit/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep the test output quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode("utf-8")).items()}
        if parts.path.rstrip("/") != "/api/v1/access_token":
            self._finish(parts.path, {}, form, False, 404, {"message": "Not Found", "error": 404})
            return
        if not self._client_credentials_ok():
            self._finish(parts.path, {}, form, False, 401, {"message": "Unauthorized", "error": 401})
            return
        if form.get("grant_type") != "client_credentials":
            self._finish(parts.path, {}, form, True, 200, {"error": "unsupported_grant_type"})
            return
        token = secrets.token_hex(16)
        with self.fake._lock:
            self.fake.tokens.add(token)
        body = {"access_token": token, "token_type": "bearer", "expires_in": 86400, "scope": "*"}
        self._finish(parts.path, {}, form, True, 200, body)

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        authorized = self._bearer_ok()
        if not authorized:
            self._finish(parts.path, query, {}, False, 401, {"message": "Unauthorized", "error": 401})
            return
        allowed, ratelimit = self.fake._take_ratelimit()
        if not allowed:
            self._finish(parts.path, query, {}, True, 429, {"message": "Too Many Requests", "error": 429}, ratelimit)
            return
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) != 3 or segments[0] != "r" or segments[2] not in ("top", "new", "hot", "controversial"):
            self._finish(parts.path, query, {}, True, 404, {"message": "Not Found", "error": 404}, ratelimit)
            return
        name, sort = segments[1], segments[2]
        if name.lower() not in self.fake.subreddits:
            self._finish(parts.path, query, {}, True, 404, {"message": "Not Found", "error": 404}, ratelimit)
            return
        time_filter = query.get("t", "all")
        if sort in ("top", "controversial") and time_filter not in ("all", *_TIME_FILTER_SECONDS):
            self._finish(parts.path, query, {}, True, 400, {"message": "Bad Request", "error": 400}, ratelimit)
            return
        body = _listing_page(self.fake.listing(name, sort, time_filter), query)
        self._finish(parts.path, query, {}, True, 200, body, ratelimit)

    def _client_credentials_ok(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, self.fake.client_id) and secrets.compare_digest(password, self.fake.client_secret)

    def _bearer_ok(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return False
        with self.fake._lock:
            return header[7:] in self.fake.tokens

    def _finish(self, path: str, query: dict, form: dict, authorized: bool, status: int, body: dict,
                extra_headers: dict[str, str] | None = None) -> None:
        self.fake._record(SeenRequest(
            method=self.command, path=path, query=query, form={k: v for k, v in form.items() if k != "password"},
            authorized=authorized, status=status, at=time.monotonic(), user_agent=self.headers.get("User-Agent", ""),
        ))
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _listing_page(items: list[dict], query: dict[str, str]) -> dict:
    """One page of a Listing: `limit` children (capped at 100) after the `after` fullname."""
    try:
        limit = max(1, min(int(query.get("limit", "25")), PAGE_CAP))
    except ValueError:
        limit = 25
    start = 0
    after = query.get("after")
    if after:
        ids = [_fullname(item) for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    page = items[start:start + limit]
    more = start + limit < len(items)
    raw = query.get("raw_json") == "1"
    children = [{"kind": "t3", "data": item if raw else _html_escaped(item)} for item in page]
    return {
        "kind": "Listing",
        "data": {
            "after": _fullname(page[-1]) if page and more else None,
            "before": None,
            "dist": len(children),
            "modhash": "",
            "geo_filter": None,
            "children": children,
        },
    }


def _fullname(item: dict) -> str:
    return item.get("name") or "t3_" + item["id"]


def _html_escaped(item: dict) -> dict:
    """What Reddit sends without raw_json=1: `&`, `<` and `>` escaped in strings."""
    return {key: html.escape(value, quote=False) if isinstance(value, str) else value for key, value in item.items()}


# ---- content helpers ------------------------------------------------------------------------

def api_listing_children(path: str | Path) -> list[dict]:
    """The t3 data dicts of a recorded Reddit Listing response (Listing -> data -> children -> data)."""
    listing = json.loads(Path(path).read_text(encoding="utf-8"))
    return [child["data"] for child in listing["data"]["children"] if child.get("kind") == "t3"]


def generated_api_submissions(n: int, seed: int, subreddit: str, urls: list[str] | None = None) -> list[dict]:
    """`n` deterministic t3 dicts as the API returns them (float created_utc, unescaped URLs):
    link posts with varied scores (some URLs posted twice), self posts, NSFW posts and media links;
    with `urls`, the link posts point at those URLs in turn."""
    rng = random.Random(seed)
    items = []
    base_time = 1_500_000_000
    for index in range(n):
        submission_id = f"{subreddit[:3].lower()}{seed:x}{index:05d}"
        permalink = f"/r/{subreddit}/comments/{submission_id}/post_{index}/"
        kind = rng.random()
        item = {
            "id": submission_id,
            "name": "t3_" + submission_id,
            "title": f"Post {index} in r/{subreddit} & friends",
            "subreddit": subreddit,
            "permalink": permalink,
            "created_utc": float(base_time + index * 3600 + rng.randrange(3600)),
            "score": rng.choice((0, 1, 2, 3, 5, 12, 40, 250, 1800)),
            "num_comments": rng.randrange(500),
            "author": f"author{rng.randrange(1000)}",
            "is_self": False,
            "over_18": False,
        }
        if kind < 0.15:
            item.update(is_self=True, url="https://www.reddit.com" + permalink, domain="self." + subreddit)
        elif kind < 0.20:
            item.update(over_18=True, url=f"https://adult.example.com/{index}", domain="adult.example.com")
        elif kind < 0.30:
            item.update(url=f"https://i.imgur.com/{submission_id}.jpg", domain="i.imgur.com")
        else:
            # consecutive link posts share a URL, so the links stage has submissions to merge
            url = urls[index % len(urls)] if urls else f"https://news{index // 2 % 7}.example.com/story/{index // 2}?a=1&b=2"
            item.update(url=url, domain=urlsplit(url).hostname or "")
        items.append(item)
    return items


# ---- PRAW configuration ----------------------------------------------------------------------

def reset_praw_config_cache() -> None:
    """PRAW reads praw.ini once per process; forget it so the next `praw.Reddit` reads it again."""
    from praw.config import Config

    Config.CONFIG = None


@dataclass
class FakeRedditSite:
    """What a test needs to point PRAW (or `webtext links --praw-site`) at the fake."""

    server: FakeReddit
    site: str  # a praw.ini site with the right credentials
    bad_site: str  # the same endpoints with a wrong client_secret
    config_dir: Path  # holds praw.ini; $XDG_CONFIG_HOME points here during the test
    env: dict[str, str] = field(default_factory=dict)  # environment a subprocess needs to find praw.ini

    @property
    def requests(self) -> list[SeenRequest]:
        return self.server.requests

    @property
    def client_secret(self) -> str:
        return self.server.client_secret

    @property
    def wrong_secret(self) -> str:
        return _wrong_secret(self.server.client_secret)


def _wrong_secret(secret: str) -> str:
    return "wrong-" + secret[::-1]


def write_praw_ini(config_dir: Path, server: FakeReddit, site: str, bad_site: str) -> Path:
    """A praw.ini with two sites pointing at the fake: `site` (valid) and `bad_site` (wrong secret)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    common = (
        f"client_id={server.client_id}\n"
        "user_agent=python:webtext-tests:0 (fake reddit)\n"
        f"oauth_url={server.url}\n"
        f"reddit_url={server.url}\n"
        f"short_url={server.url}\n"
        "check_for_updates=False\n"
    )
    text = (
        f"[{site}]\n{common}client_secret={server.client_secret}\n\n"
        f"[{bad_site}]\n{common}client_secret={_wrong_secret(server.client_secret)}\n"
    )
    path = config_dir / "praw.ini"
    path.write_text(text, encoding="utf-8")
    return path


DEFAULT_SUBREDDITS = {"news": (250, 11), "science": (130, 12)}  # name: (submissions, seed)


@pytest.fixture
def fake_reddit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRedditSite]:
    """A started FakeReddit serving r/news (250 generated submissions) and r/science (130), with
    a praw.ini in `config_dir` ($XDG_CONFIG_HOME for the test) defining `site` and `bad_site`.
    PRAW's praw_* environment variables are cleared for the test so they cannot override it."""
    server = FakeReddit().start()
    try:
        for name, (count, seed) in DEFAULT_SUBREDDITS.items():
            server.add_subreddit(name, generated_api_submissions(count, seed, name))
        config_dir = tmp_path / "praw-config"
        write_praw_ini(config_dir, server, "webtext-fake", "webtext-fake-badsecret")
        for name in list(os.environ):
            if name.lower().startswith("praw_"):
                monkeypatch.delenv(name)
        monkeypatch.delenv("APPDATA", raising=False)
        monkeypatch.setenv("XDG_CONFIG_HOME", str(config_dir))
        reset_praw_config_cache()
        yield FakeRedditSite(
            server=server, site="webtext-fake", bad_site="webtext-fake-badsecret", config_dir=config_dir,
            env={"XDG_CONFIG_HOME": str(config_dir)},
        )
    finally:
        server.stop()
        reset_praw_config_cache()
