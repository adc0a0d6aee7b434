"""The fetcher against loopback servers: limits, deadlines, redirects, retries, robots.txt and the archive hook."""
from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib

import pytest

from tests.testweb import FailingFirst, drip, dripping, gzip_bomb, gzipped, huge, redirect, reset, sleep_then
from webtext.crawl.fetch.compression import decode_body
from webtext.crawl.fetch.config import FetchConfig
from webtext.crawl.fetch.fetcher import Fetcher
from webtext.crawl.fetch.host_links import crawl_host
from webtext.crawl.fetch.outcomes import FetchFailure
from webtext.crawl.fetch.politeness import host_key
from webtext.crawl.fetch.responses import parse_retry_after
from webtext.crawl.fetch.robots import ROBOTS_MAX_BYTES
from webtext.pipeline.demo_web import LoopbackWeb, RequestContext, Response, Site

PAGE = b"<html><body><p>" + b"A sentence of the page. " * 20 + b"</p></body></html>"
FAST = dict(allowed_networks=("127.0.0.0/8",), host_delay=0.02, retries=1, backoff_base=0.02, connect_timeout=1.0,
            read_timeout=1.0, page_deadline=1.5, max_bytes=200_000, max_decompressed_bytes=1_000_000)


@pytest.fixture
def serve():
    """Starts sites on loopback and a fetcher for them; everything is closed after the test."""
    started = []

    def start(*sites: Site, **overrides) -> Fetcher:
        web = LoopbackWeb(list(sites)).__enter__()
        archive = overrides.pop("archive", None)
        fetcher = Fetcher(FetchConfig(**{**FAST, **overrides}), archive=archive)
        started.append((web, fetcher))
        return fetcher

    yield start
    for web, fetcher in started:
        fetcher.close()
        web.__exit__(None, None, None)


# -- pure helpers --------------------------------------------------------------------------------------------------

def test_host_key_drops_default_ports_and_case():
    assert host_key("http://Example.COM/a") == "example.com"
    assert host_key("https://example.com:443/") == "example.com"
    assert host_key("http://example.com:8080/") == "example.com:8080"
    assert host_key("http://[::1]:81/") == "::1:81"


def test_retry_after_in_seconds_or_as_a_date(monkeypatch):
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None
    monkeypatch.setenv("TZ", "America/New_York")  # asctime dates have no zone: they are UTC, not local time
    time.tzset()
    try:
        assert parse_retry_after("Wed Oct 21 07:28:00 2015", now=1445412470.0) == pytest.approx(10.0)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert parse_retry_after("²") is None and parse_retry_after("١٢") is None  # digits, but not ASCII ones
    assert parse_retry_after(None) is None


def test_decode_body_handles_gzip_members_and_both_deflates():
    text = b"hello world " * 100
    two_members = gzip.compress(text[:600]) + gzip.compress(text[600:])
    assert decode_body(two_members, "gzip", 10_000) == text
    assert decode_body(zlib.compress(text), "deflate", 10_000) == text
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    assert decode_body(raw.compress(text) + raw.flush(), "deflate", 10_000) == text
    assert decode_body(text, None, 10_000) == text


@pytest.mark.parametrize("encoding, body, reason", [
    ("br", b"xx", "bad-encoding"), ("gzip", b"not gzip at all", "bad-encoding"),
    ("gzip", gzip.compress(b"\0" * 200_000), "decompression-bomb"),
    ("gzip, gzip", gzip.compress(gzip.compress(b"<html></html>")), "bad-encoding"),
    ("deflate, gzip", gzip.compress(b"<html></html>"), "bad-encoding"),
])
def test_decode_body_refuses_what_it_cannot_or_must_not_decode(encoding, body, reason):
    with pytest.raises(FetchFailure) as raised:
        decode_body(body, encoding, 100_000)
    assert raised.value.reason == reason


def test_many_gzip_members_are_refused_quickly():
    member = gzip.compress(b"x")
    assert decode_body(member * 100, "gzip", 10_000) == b"x" * 100
    started = time.monotonic()
    with pytest.raises(FetchFailure) as raised:
        decode_body(member * 200_000, "gzip", 10_000_000)
    assert raised.value.reason == "bad-encoding" and "members" in raised.value.detail
    assert time.monotonic() - started < 0.5
    big = gzip.compress(bytes(range(256)) * 20_000, 1)  # a large single member decodes in slices
    assert decode_body(big, "identity, gzip", 10_000_000) == bytes(range(256)) * 20_000


# -- fetching ------------------------------------------------------------------------------------------------------

def test_a_page_is_fetched_with_our_user_agent_after_robots_txt(serve):
    site = Site("s", routes={"/page.html": Response(PAGE)})
    fetcher = serve(site, user_agent="testbot/1.0 (+http://example.org/bot)")
    result = fetcher.fetch_page(site.url("/page.html"))
    assert result.ok and result.body == PAGE and result.status == 200 and result.attempts == 1
    assert [v.path for v in site.log.visits] == ["/robots.txt", "/page.html"]
    assert {v.headers["User-Agent"] for v in site.log.visits} == {"testbot/1.0 (+http://example.org/bot)"}


def test_cookies_are_neither_kept_nor_sent(serve):
    site = Site("s", routes={"/set.html": Response(PAGE, headers={"Set-Cookie": "session=abc; Path=/"}),
                             "/next.html": Response(PAGE)})
    fetcher = serve(site)
    assert fetcher.fetch_page(site.url("/set.html")).ok and fetcher.fetch_page(site.url("/next.html")).ok
    assert all("Cookie" not in visit.headers for visit in site.log.visits)
    assert len(fetcher.session.cookies) == 0


def test_gzip_bodies_are_decoded_and_bombs_refused(serve):
    site = Site("s", routes={"/zipped.html": gzipped(PAGE), "/bomb.html": gzip_bomb()})
    fetcher = serve(site, max_decompressed_bytes=2_000_000)
    assert fetcher.fetch_page(site.url("/zipped.html")).body == PAGE
    assert fetcher.fetch_page(site.url("/bomb.html")).reason == "decompression-bomb"


def test_only_html_is_downloaded(serve):
    site = Site("s", routes={"/file.pdf": Response(b"%PDF" + b"\0" * 100_000, "application/pdf"),
                             "/page.xhtml": Response(PAGE, "application/xhtml+xml"),
                             "/no-type.html": Response(PAGE, "")})
    records = []
    fetcher = serve(site, archive=lambda exchange: (records.append(exchange), ("mem", len(records)))[1])
    result = fetcher.fetch_page(site.url("/file.pdf"))
    assert result.reason == "not-html" and result.detail == "application/pdf"
    pdf = [r for r in records if r.url.endswith(".pdf")][0]
    assert pdf.body == b"" and pdf.truncated == "unspecified"
    assert fetcher.fetch_page(site.url("/page.xhtml")).ok
    assert fetcher.fetch_page(site.url("/no-type.html")).ok


def test_size_limits_streamed_and_declared(serve):
    site = Site("s", routes={"/huge.html": huge,
                             "/declared.html": Response(b"", headers={"Content-Length": "99999999"})})
    fetcher = serve(site)
    result = fetcher.fetch_page(site.url("/huge.html"))
    assert result.reason == "too-large"
    assert result.bytes_received == 200_000
    assert fetcher.fetch_page(site.url("/declared.html")).reason == "too-large"


def test_a_dripping_body_ends_at_the_page_deadline(serve):
    site = Site("s", routes={"/drip.html": drip})
    fetcher = serve(site, page_deadline=0.5)
    started = time.monotonic()
    result = fetcher.fetch_page(site.url("/drip.html"))
    assert result.reason == "timeout"
    assert time.monotonic() - started < 1.5


def test_dripping_headers_end_at_the_page_deadline(serve):
    """A read timeout never fires when a byte arrives every 50 ms; the watchdog closes the socket instead."""
    def drip_headers(ctx: RequestContext) -> None:
        ctx.handler.close_connection = True
        line = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000
        for i in range(len(line)):
            if not ctx.write(line[i:i + 1]):
                return
            time.sleep(0.05)

    site = Site("s", routes={"/slow-headers.html": drip_headers})
    fetcher = serve(site, page_deadline=0.6, read_timeout=5.0)
    started = time.monotonic()
    result = fetcher.fetch_page(site.url("/slow-headers.html"))
    assert result.reason == "timeout"
    assert time.monotonic() - started < 2.0


def test_a_silent_server_trips_the_read_timeout(serve):
    site = Site("s", routes={"/silent.html": sleep_then(3.0, Response(PAGE))})
    fetcher = serve(site, read_timeout=0.3, page_deadline=5.0)
    result = fetcher.fetch_page(site.url("/silent.html"))
    assert result.reason == "timeout" and "read timeout" in result.detail


def test_redirects_are_followed_by_hand_and_each_hop_checked(serve):
    other = Site("other", routes={"/landing.html": Response(PAGE)})
    site = Site("s", routes={"/old": redirect("/new", 301), "/new": redirect("/final.html", 308),
                             "/final.html": Response(PAGE), "/loop-a": redirect("/loop-b"),
                             "/loop-b": redirect("/loop-a"), "/private-hop": redirect("http://10.0.0.1/"),
                             **{f"/chain/{i}": redirect(f"/chain/{i + 1}") for i in range(10)}})
    fetcher = serve(site, other, max_redirects=3)
    site.routes["/elsewhere"] = redirect(other.url("/landing.html"))
    result = fetcher.fetch_page(site.url("/old"))
    assert result.ok and result.final_url == site.url("/final.html") and result.redirects == 2
    assert fetcher.fetch_page(site.url("/loop-a")).reason == "redirect-loop"
    assert fetcher.fetch_page(site.url("/chain/0")).reason == "too-many-redirects"
    assert fetcher.fetch_page(site.url("/private-hop")).reason == "address-blocked"
    site.routes["/to-credentials"] = redirect(f"http://user:secret@127.0.0.1:{site.port}/final.html")
    with_credentials = fetcher.fetch_page(site.url("/to-credentials"))
    assert with_credentials.reason == "bad-redirect" and "secret" not in with_credentials.detail
    assert fetcher.fetch_page(f"http://user:secret@127.0.0.1:{site.port}/final.html").reason == "bad-url"
    assert not any("Authorization" in visit.headers for visit in site.log.visits)
    moved = fetcher.fetch_page(site.url("/elsewhere"))
    assert moved.ok and moved.final_url == other.url("/landing.html")
    assert [v.path for v in other.log.visits] == ["/robots.txt", "/landing.html"]  # robots.txt of the new host


def test_a_redirect_to_another_host_is_handed_on_with_the_chain_so_far(serve):
    other = Site("other", robots="User-agent: *\nDisallow: /private/\nCrawl-delay: 0.3\n",
                 routes={"/landing.html": Response(PAGE), "/hop": redirect("/landing.html")})
    site = Site("s", routes={"/first": redirect("/second", 301)})
    fetcher = serve(site, other, max_redirects=4)
    site.routes.update({"/second": redirect(other.url("/hop")), "/back": redirect(other.url("/to-s")),
                        "/private": redirect(other.url("/private/x.html"))})
    other.routes["/to-s"] = redirect(site.url("/back"))
    result = fetcher.fetch_page(site.url("/first"), stay_on_host=True)
    assert result.pending and not result.ok and result.redirect_to == other.url("/hop") and result.redirects == 2
    assert result.seen == sorted([site.url("/first"), site.url("/second"), other.url("/hop")])
    assert other.log.visits == [] and result.attempts == 2 and result.final_url == site.url("/second")

    # the target host's own crawler (another process) goes on: same-host hops inline, totals carried over
    handed = type(result).from_dict(result.to_dict())
    target, third = (Fetcher(FetchConfig(**{**FAST, "max_redirects": 4})) for _ in range(2))
    try:
        _go_on_elsewhere(site, other, fetcher, target, third, result, handed)
    finally:
        target.close()
        third.close()


def _go_on_elsewhere(site, other, fetcher, target, third, result, handed):
    done = target.fetch_page(site.url("/first"), stay_on_host=True, resume=handed)
    assert done.ok and done.final_url == other.url("/landing.html") and done.redirects == 3 and done.attempts == 4
    assert done.url == site.url("/first") and done.elapsed >= result.elapsed and done.body == PAGE
    assert target.fetch_page(site.url("/private"), resume=fetcher.fetch_page(site.url("/private"), stay_on_host=True)
                             ).reason == "robots-disallowed"  # the target's robots.txt
    loop = fetcher.fetch_page(site.url("/back"), stay_on_host=True)
    assert loop.pending and loop.redirect_to == other.url("/to-s")
    across = target.fetch_page(site.url("/back"), stay_on_host=True, resume=loop)
    assert across.reason == "redirect-loop"  # a loop across hosts

    # the host's state moves with it: no second robots.txt, its Crawl-delay and its clock kept
    robots_before = [v.path for v in other.log.visits].count("/robots.txt")
    third.restore_host(host_key(other.origin), target.host_state(host_key(other.origin)))
    assert third.scheduler.delay(host_key(other.origin)) == pytest.approx(0.3)
    assert third.fetch_page(other.url("/landing.html")).ok
    assert [v.path for v in other.log.visits].count("/robots.txt") == robots_before == 1
    assert other.log.too_soon(0.3) == [] and other.log.overlaps == []


def _bomb(megabytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (1 << 20)
    return b"".join(compressor.compress(zeros) for _ in range(megabytes)) + compressor.flush()


def test_redirect_bodies_are_read_by_us_capped_not_by_requests(serve):
    """requests reads (and decompresses) 3xx bodies itself unless told not to: a bomb there must stay capped."""
    zipped_301 = {"Location": "/page.html", "Content-Encoding": "gzip"}
    bomb = _bomb(100)
    site = Site("s", routes={
        "/robots.txt": Response(gzip.compress(b"moved"), "text/plain", 301,
                                {"Location": "/real-robots.txt", "Content-Encoding": "gzip"}),
        "/real-robots.txt": Response(b"User-agent: *\nDisallow: /private/\n", "text/plain"),
        "/moved": Response(gzip.compress(b"<html>moved</html>"), "text/html", 301, zipped_301),
        "/bomb-redirect": Response(bomb, "text/html", 302, zipped_301),
        "/page.html": Response(PAGE)})
    records = []
    fetcher = serve(site, archive=lambda exchange: (records.append(exchange), ("mem", len(records)))[1])
    moved = fetcher.fetch_page(site.url("/moved"))
    assert moved.ok and moved.final_url == site.url("/page.html")  # a redirected, gzipped robots.txt works too
    tracemalloc.start()
    try:
        result = fetcher.fetch_page(site.url("/bomb-redirect"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.ok and result.redirects == 1
    assert peak < 10_000_000, peak
    record = [r for r in records if r.url.endswith("/bomb-redirect")][0]
    assert record.truncated == "length" and record.body == bomb[:len(record.body)] and len(record.body) < len(bomb)
    assert fetcher.fetch_page(site.url("/private/x.html")).reason == "robots-disallowed"


def test_retry_after_is_honoured_and_errors_retried_with_backoff(serve):
    busy = FailingFirst(Response(PAGE), failures=1, status=503, retry_after=1)
    flaky = FailingFirst(Response(PAGE), failures=1)  # a connection reset, then the page
    site = Site("s", routes={"/busy.html": busy, "/flaky.html": flaky, "/reset.html": reset,
                             "/error.html": Response(b"oops", status=500),
                             "/later.html": Response(b"busy", status=503, headers={"Retry-After": "3600"}),
                             "/missing.html": Response(b"no", status=404)})
    fetcher = serve(site, retries=2)
    result = fetcher.fetch_page(site.url("/busy.html"))
    assert result.ok and result.attempts == 2
    assert busy.times[1] - busy.times[0] >= 1.0
    assert fetcher.fetch_page(site.url("/flaky.html")).ok
    reset_result = fetcher.fetch_page(site.url("/reset.html"))
    assert reset_result.reason == "connection-error" and reset_result.attempts == 3
    error = fetcher.fetch_page(site.url("/error.html"))
    assert error.reason == "http-500" and error.attempts == 3
    missing = fetcher.fetch_page(site.url("/missing.html"))
    assert missing.reason == "http-404" and missing.attempts == 1
    later = fetcher.fetch_page(site.url("/later.html"))
    assert later.reason == "http-503" and later.attempts == 1  # waiting an hour is not an option


def test_retry_after_pauses_the_whole_host_and_a_long_one_ends_it(serve):
    busy = FailingFirst(Response(PAGE), failures=1, status=503, retry_after=1)
    site = Site("s", robots=None, routes={"/busy.html": busy, "/a.html": Response(PAGE)})
    closed = Site("closed", robots=None, routes={
        "/later.html": Response(b"busy", status=429, headers={"Retry-After": "3600"}), "/b.html": Response(PAGE)})
    fetcher = serve(site, closed, retries=0)
    assert fetcher.fetch_page(site.url("/busy.html")).reason == "http-503"
    assert fetcher.fetch_page(site.url("/a.html")).ok
    gaps = dict(site.log.gaps())
    assert gaps["/a.html"] >= 1.0 - 0.01  # the next link waited for the host's Retry-After, not just the delay
    assert fetcher.fetch_page(closed.url("/later.html")).reason == "http-429"
    refused = fetcher.fetch_page(closed.url("/b.html"))
    assert refused.reason == "retry-after-too-long" and "3600" in refused.detail
    assert closed.log.paths() == ["/robots.txt", "/later.html"]


def test_a_link_has_a_deadline_over_all_its_hops(serve):
    site = Site("s", robots=None, routes={f"/hop/{i}": sleep_then(0.3, redirect(f"/hop/{i + 1}")) for i in range(10)})
    fetcher = serve(site, page_deadline=1.0, link_deadline=1.0, max_redirects=8)
    started = time.monotonic()
    result = fetcher.fetch_page(site.url("/hop/0"))
    assert result.reason == "timeout" and 1 <= result.redirects <= 3
    assert time.monotonic() - started < 1.3


def test_robots_txt_is_fetched_once_and_obeyed(serve):
    site = Site("s", robots="User-agent: *\nDisallow: /private/\n",
                routes={"/a.html": Response(PAGE), "/b.html": Response(PAGE), "/private/c.html": Response(PAGE)})
    fetcher = serve(site)
    outcomes = [fetcher.fetch_page(site.url(p)).reason for p in ("/a.html", "/private/c.html", "/b.html")]
    assert outcomes == [None, "robots-disallowed", None]
    assert [v.path for v in site.log.visits] == ["/robots.txt", "/a.html", "/b.html"]


@pytest.mark.parametrize("robots_status, reason", [(503, "robots-unreachable"), (404, None), (403, None)])
def test_unreachable_robots_txt_disallows_and_missing_allows(serve, robots_status, reason):
    site = Site("s", routes={"/robots.txt": Response(b"", "text/plain", robots_status), "/a.html": Response(PAGE)})
    fetcher = serve(site, retries=0)
    assert fetcher.fetch_page(site.url("/a.html")).reason == reason


_drip_robots = dripping("text/plain", b"User-agent: *\nAllow: /\n", b"#", 10)


@pytest.mark.parametrize("robots", [
    _drip_robots,  # cut off by the page deadline: the Disallow lines might have come later
    Response(b"not gzip at all", "text/plain", headers={"Content-Encoding": "gzip"}),
    Response(b"User-agent: *\nAllow: /\n", "text/plain", headers={"Content-Encoding": "br"}),
])
def test_an_incomplete_or_undecodable_robots_txt_disallows(serve, robots):
    site = Site("s", routes={"/robots.txt": robots, "/a.html": Response(PAGE)})
    fetcher = serve(site, retries=0, page_deadline=0.5)
    result = fetcher.fetch_page(site.url("/a.html"))
    assert result.reason == "robots-unreachable"
    assert [v.path for v in site.log.visits] == ["/robots.txt"]


def test_an_oversized_robots_txt_is_parsed_up_to_its_limit(serve):
    text = b"User-agent: *\nDisallow: /private/\n" + b"# a very long comment line\n" * 200_000
    site = Site("s", routes={"/robots.txt": Response(gzip.compress(text), "text/plain",
                                                     headers={"Content-Encoding": "gzip"}),
                             "/a.html": Response(PAGE), "/private/b.html": Response(PAGE)})
    fetcher = serve(site)
    assert fetcher.fetch_page(site.url("/a.html")).ok
    assert fetcher.fetch_page(site.url("/private/b.html")).reason == "robots-disallowed"


@pytest.mark.parametrize("compressed", [False, True])
def test_robots_txt_past_500_kib_is_ignored(serve, compressed):
    before = b"User-agent: *\nDisallow: /early/\n" + b"# padding to the limit of what is parsed\n" * 12_487
    assert len(before) < ROBOTS_MAX_BYTES == 500 * 1024 < len(before) + 24
    text = before + b"Disallow: /cut-in-half/\n" + b"# padding\n" * 1_000_000 + b"Disallow: /late/\n"  # ~10 MB
    body, headers = (gzip.compress(text), {"Content-Encoding": "gzip"}) if compressed else (text, {})
    site = Site("s", routes={"/robots.txt": Response(body, "text/plain", headers=headers),
                             **{f"/{d}/a.html": Response(PAGE) for d in ("early", "cut-in-half", "late")}})
    fetcher = serve(site, max_decompressed_bytes=20_000_000)
    assert fetcher.fetch_page(site.url("/early/a.html")).reason == "robots-disallowed"
    assert fetcher.fetch_page(site.url("/cut-in-half/a.html")).ok  # the line the limit cuts is dropped whole
    assert fetcher.fetch_page(site.url("/late/a.html")).ok  # rules past the limit are not read (RFC 9309 2.5)


def test_a_crawl_delay_over_the_maximum_skips_the_host(serve):
    site = Site("s", robots="User-agent: *\nCrawl-delay: 3600\n", routes={"/a.html": Response(PAGE)})
    fetcher = serve(site, max_crawl_delay=30)
    assert fetcher.fetch_page(site.url("/a.html")).reason == "crawl-delay-too-long"
    assert [v.path for v in site.log.visits] == ["/robots.txt"]


def test_crawl_host_caps_pages_and_gives_up_on_a_dead_host(serve):
    site = Site("s", routes={f"/p{i}.html": Response(PAGE) for i in range(4)}
                | {f"/slow{i}.html": sleep_then(3.0, Response(PAGE)) for i in range(4)})
    fetcher = serve(site, read_timeout=0.2)
    links = [{"url": site.url(f"/p{i}.html"), "url_key": f"a{i}"} for i in range(4)]
    capped = [r.reason for _, r in crawl_host(fetcher, links, max_pages=2)]
    assert capped == [None, None, "host-cap", "host-cap"]
    slow_links = [{"url": site.url(f"/slow{i}.html"), "url_key": f"b{i}"} for i in range(4)]
    reasons = [r.reason for _, r in crawl_host(fetcher, slow_links, max_network_failures=2)]
    assert reasons == ["timeout", "timeout", "host-unreachable", "host-unreachable"]


def test_a_refused_connection_is_a_robots_failure_for_the_whole_host(serve):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fetcher = serve(retries=0)
    result = fetcher.fetch_page(f"http://127.0.0.1:{port}/page.html")
    assert result.reason == "robots-unreachable" and "connection-error" in result.detail
