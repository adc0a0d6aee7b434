"""The crawl stage's fetch step at scale: thousands of loopback hosts (127.x.y.z) served by one server."""
from __future__ import annotations

import time

import pytest

from webtext.crawl.fetch.config import FetchConfig
from webtext.crawl.fetch.politeness import host_key
from webtext.pipeline.crawl_stage import HOST_STATE, FetchHosts
from webtext.pipeline.demo_web import ManyAddressServer, loopback_address

SCALE = dict(allowed_networks=("127.0.0.0/8",), host_delay=0.01, retries=0, connect_timeout=5.0, read_timeout=5.0,
             page_deadline=10.0)


def run_bundle(fetch: FetchHosts, elements: list[tuple[str, list]]) -> dict[str, list]:
    """One bundle through the DoFn as a runner drives it; its outputs by tag ('pages' for the main one)."""
    outputs: dict[str, list] = {"pages": [], "log": [], "rejects": [], "redirects": [], "hosts": []}

    def collect(items) -> None:
        for item in items:
            tag = getattr(item, "tag", "pages")
            value = getattr(item, "value", item)
            outputs[tag].append(getattr(value, "value", value))  # finish_bundle's are windowed

    fetch.setup()
    try:
        fetch.start_bundle()
        for element in elements:
            collect(fetch.process(element))
        collect(fetch.finish_bundle())
    finally:
        fetch.teardown()
    return outputs


@pytest.mark.slow
def test_two_thousand_hosts_on_one_server_through_the_fetch_step(tmp_path):
    hosts = 2000
    with ManyAddressServer(robots=b"User-agent: *\nDisallow: /private/\n") as server:
        elements = []
        for index in range(hosts):
            links = [{"url": server.url(index, "/page.html"), "url_key": f"{index}/a"}]
            if index % 10 == 0:
                links.append({"url": server.url(index, "/private/x.html"), "url_key": f"{index}/b"})
            elements.append((host_key(links[0]["url"]), links))
        fetch = FetchHosts(FetchConfig(**SCALE), str(tmp_path / "warc"), str(tmp_path / "journal"), 10_000_000,
                           warc_max_seconds=60, hosts_in_flight=256, max_pages=0,
                           max_failures=5, round_index=0, last_round=False)  # not the last: host states go out
        started = time.monotonic()
        out = run_bundle(fetch, elements)
        seconds = time.monotonic() - started
        hits = dict(server.hits)

    assert len(out["log"]) == hosts + hosts // 10  # every link accounted for, once
    assert len(out["pages"]) == hosts and not out["redirects"]
    assert sorted(r["reason"] for r in out["rejects"]) == ["robots-disallowed"] * (hosts // 10)
    states = dict(out["hosts"])
    assert len(states) == hosts  # each host's state (clock, robots.txt verdict) handed on for the next round
    for index in (0, 1, hosts - 1):
        host = f"{loopback_address(index)}:{server.port}"
        assert list(states[host][HOST_STATE]["robots"]) == [f"http://{host}/robots.txt"]
    for index in range(hosts):  # robots.txt once per host, each link once
        address = loopback_address(index)
        assert hits[address, b"/robots.txt"] == 1 and hits[address, b"/page.html"] == 1
        assert (address, b"/private/x.html") not in hits
    assert seconds < 60, f"{hosts} hosts took {seconds:.1f}s"
