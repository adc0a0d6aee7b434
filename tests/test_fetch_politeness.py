"""Politeness: one request in flight per host, the delay between requests, many hosts at once."""
from __future__ import annotations

import threading
import time

from tests.testweb import sleep_then
from webtext.crawl.fetch.config import FetchConfig
from webtext.crawl.fetch.fetcher import Fetcher
from webtext.crawl.fetch.host_links import crawl_host
from webtext.crawl.fetch.politeness import HostDone, HostPool, HostScheduler
from webtext.pipeline.demo_web import LoopbackWeb, ManyAddressServer, Response, Site, loopback_address

PAGE = b"<html><body><p>page</p></body></html>"


def test_scheduler_one_turn_at_a_time_per_host_with_the_delay_between():
    scheduler = HostScheduler(default_delay=0.03)
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def worker():
        for _ in range(4):
            with scheduler.turn("example.com"):
                start = time.monotonic()
                time.sleep(0.005)
                end = time.monotonic()
            with lock:
                spans.append((start, end))

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans.sort()
    assert len(spans) == 20
    gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
    assert min(gaps) >= 0.03 - 0.002


def test_scheduler_runs_different_hosts_at_once_and_honours_not_before():
    scheduler = HostScheduler(default_delay=1.0)
    started = time.monotonic()

    def hold(host):
        with scheduler.turn(host):
            time.sleep(0.2)

    threads = [threading.Thread(target=hold, args=(f"host{i}",)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 1.0
    with scheduler.turn("other", not_before=time.monotonic() + 0.1):
        assert time.monotonic() - started >= 0.3


def test_a_longer_crawl_delay_extends_the_wait():
    scheduler = HostScheduler(default_delay=0.01)
    with scheduler.turn("h"):
        pass
    ended = time.monotonic()
    scheduler.set_delay("h", 0.15)
    with scheduler.turn("h"):
        assert time.monotonic() - ended >= 0.15 - 0.002


def test_host_pool_crawls_hosts_concurrently_each_in_sequence():
    """20 hosts that answer after 0.2 s, 2 pages each: in sequence that is over 8 s; concurrently under 2 s."""
    sites = [Site(f"h{i}", robots=None, routes={f"/p{j}.html": sleep_then(0.2, Response(PAGE)) for j in range(2)})
             for i in range(20)]
    config = FetchConfig(allowed_networks=("127.0.0.0/8",), host_delay=0.05, retries=0)
    with LoopbackWeb(sites) as web:
        fetcher = Fetcher(config)
        pool = HostPool(lambda host, links: crawl_host(fetcher, links), max_hosts=32)
        started = time.monotonic()
        results, done = [], []
        for site in sites:
            links = [{"url": site.url(f"/p{j}.html"), "url_key": str(j)} for j in range(2)]
            for item in pool.submit(site.name, links):
                (done if isinstance(item, HostDone) else results).append(item)
        for item in pool.drain():
            (done if isinstance(item, HostDone) else results).append(item)
        elapsed = time.monotonic() - started
        pool.close()
        fetcher.close()
        assert web.overlaps() == {}
        assert web.too_soon(0.05) == {}
    assert len(results) == 40 and all(result.ok for _, result in results)
    assert len(done) == 20 and not any(d.error for d in done)
    assert elapsed < 2.0, elapsed


def test_host_pool_applies_back_pressure_and_reports_crashes():
    def crawl(host, items):
        if host == "bad":
            yield "first"
            raise RuntimeError("boom")
        for item in items:
            time.sleep(0.01)
            yield item

    pool = HostPool(crawl, max_hosts=2)
    outputs = []
    for host in ("a", "bad", "c", "d"):
        outputs += list(pool.submit(host, [host + "1", host + "2"]))
        assert pool.in_flight <= 2
    outputs += list(pool.drain())
    pool.close()
    done = {item.host: item.error for item in outputs if isinstance(item, HostDone)}
    assert done == {"a": None, "bad": "RuntimeError: boom", "c": None, "d": None}
    assert sorted(item for item in outputs if isinstance(item, str)) == ["a1", "a2", "c1", "c2", "d1", "d2", "first"]


def test_host_pool_closes_when_nobody_reads_its_results():
    """A bundle that fails stops reading; teardown must still end the host threads instead of hanging."""
    def crawl(host, items):
        for item in items:
            time.sleep(0.001)
            yield item

    pool = HostPool(crawl, max_hosts=4, max_queued=2)
    for host in ("a", "b", "c"):
        list(pool.submit(host, list(range(1000))))
    time.sleep(0.1)  # the threads now wait on a full queue
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 2.0


def test_scheduler_defer_holds_the_host_for_every_thread():
    scheduler = HostScheduler(0.0)
    scheduler.defer("h", time.monotonic() + 0.2)
    started = time.monotonic()
    with scheduler.turn("h"):
        assert time.monotonic() - started >= 0.2 - 0.005
    with scheduler.turn("other"):
        assert time.monotonic() - started < 0.3


def crawl_hosts_at_once(fetcher: Fetcher, hosts: dict[str, list[str]]) -> list:
    """Each host's URLs in a thread of its own, as the crawl stage's fetch step runs them; the results."""
    pool = HostPool(lambda host, links: crawl_host(fetcher, links), max_hosts=len(hosts))
    results = []
    for host, urls in hosts.items():
        links = [{"url": url, "url_key": f"{host}/{i}"} for i, url in enumerate(urls)]
        results += [item for item in pool.submit(host, links) if not isinstance(item, HostDone)]
    results += [item for item in pool.drain() if not isinstance(item, HostDone)]
    pool.close()
    return results


def test_aliases_of_one_server_are_never_asked_at_once_nor_within_the_delay():
    """127.0.0.1, 0x7f000001, 2130706433 and localhost are four hosts (four robots.txt, one per origin) but one
    server: their requests, robots.txt included, come one at a time and the delay apart."""
    site = Site("s", robots="User-agent: *\nDisallow: /private/\n",
                routes={f"/p{j}.html": sleep_then(0.05, Response(PAGE)) for j in range(3)})
    delay = 0.1
    with LoopbackWeb([site]):
        aliases = ["127.0.0.1", "0x7f000001", "2130706433", "localhost"]
        hosts = {alias: [f"http://{alias}:{site.port}/p{j}.html" for j in range(3)] for alias in aliases}
        fetcher = Fetcher(FetchConfig(allowed_networks=("127.0.0.0/8", "::1/128"), host_delay=delay, retries=0))
        results = crawl_hosts_at_once(fetcher, hosts)
        fetcher.close()
        assert len(results) == 12 and all(result.ok for _, result in results), [r.reason for _, r in results]
        assert site.log.paths().count("/robots.txt") == 4  # robots.txt stays per origin (RFC 9309)
        assert len(site.log.visits) == 16
        assert site.log.overlaps == []
        assert site.log.too_soon(delay) == []


def test_a_crawl_delay_holds_the_server_for_its_other_names_too():
    site = Site("s", robots="User-agent: *\nCrawl-delay: 0.4\n", routes={"/a.html": Response(PAGE)})
    with LoopbackWeb([site]):
        fetcher = Fetcher(FetchConfig(allowed_networks=("127.0.0.0/8",), host_delay=0.01, retries=0))
        assert fetcher.fetch_page(f"http://127.0.0.1:{site.port}/a.html").ok
        assert fetcher.fetch_page(f"http://2130706433:{site.port}/a.html").ok  # its own robots.txt, same server
        fetcher.close()
    gaps = site.log.gaps()
    assert [path for path, _ in gaps] == ["/a.html", "/robots.txt", "/a.html"]
    assert gaps[0][1] >= 0.4 - 0.01 and gaps[1][1] >= 0.4 - 0.01  # 127.0.0.1's Crawl-delay held the server


def test_different_servers_behind_one_port_are_crawled_at_once():
    """127.1.0.1 and 127.1.0.2 (one socket on 0.0.0.0) are two servers: crawled in parallel, not one after another."""
    with ManyAddressServer(latency=0.3) as server:
        hosts = {loopback_address(i): [server.url(i, f"/p{j}.html") for j in range(2)] for i in range(2)}
        fetcher = Fetcher(FetchConfig(allowed_networks=("127.0.0.0/8",), host_delay=0.05, retries=0))
        started = time.monotonic()
        results = crawl_hosts_at_once(fetcher, hosts)
        elapsed = time.monotonic() - started
        fetcher.close()
    assert len(results) == 4 and all(result.ok for _, result in results)
    assert elapsed < 1.7, elapsed  # one server after the other: 6 x 0.3 s + 4 delays = 2 s; at once about 1 s
