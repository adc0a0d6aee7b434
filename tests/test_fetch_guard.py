"""The address guard: blocked address classes, every address of an answer checked, answers pinned for the
connection (a rebinding DNS answer cannot redirect it), HTTPS to a pinned address with the right SNI and Host."""
from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import pytest

from webtext.crawl.fetch.addresses import AddressBlocked, AddressGuard, ResolveFailed, address_problem
from webtext.crawl.fetch.config import FetchConfig
from webtext.crawl.fetch.fetcher import Fetcher
from webtext.pipeline.demo_web import LoopbackWeb, Response, Site

TLS = Path(__file__).parent / "data" / "tls"
PAGE = b"<html><body><p>hello</p></body></html>"


@pytest.mark.parametrize("address, why", [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"), ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"),
    ("240.0.0.1", "reserved"), ("100.64.0.1", "not-global"), ("192.0.2.10", "private"),
    ("::1", "loopback"), ("fe80::1", "link-local"), ("fc00::1", "private"), ("ff02::1", "multicast"),
    ("::", "unspecified"), ("fec0::1", "site-local"),
])
def test_non_public_addresses_are_refused(address, why):
    assert address_problem(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize("address", ["::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::", "2002:a9fe:a9fe::"])
def test_ipv4_addresses_embedded_in_ipv6_are_refused(address):
    assert address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert address_problem(ipaddress.ip_address(address)) is None


def test_every_address_of_an_answer_must_pass():
    guard = AddressGuard(resolver=lambda host, port: ["93.184.216.34", "10.0.0.7"])
    with pytest.raises(AddressBlocked) as raised:
        guard.check("mixed.example", 80)
    assert raised.value.address == "10.0.0.7" and raised.value.why == "private"


def test_allowed_networks_and_the_allow_all_switch():
    guard = AddressGuard(allowed_networks=["127.0.0.0/8"])
    assert guard.check("127.0.0.1", 80) == ("127.0.0.1",)
    with pytest.raises(AddressBlocked):
        guard.check("::1", 80)
    with pytest.raises(AddressBlocked):
        guard.check("10.0.0.1", 80)
    assert AddressGuard(allow_private=True).check("10.0.0.1", 80) == ("10.0.0.1",)


def test_unresolvable_names_fail_cleanly():
    with pytest.raises(ResolveFailed):
        AddressGuard().check("no-such-host.invalid", 80)


def test_the_connection_goes_to_the_checked_address_not_a_new_dns_answer():
    """A name only our resolver knows: had urllib3 resolved it again, the request would fail."""
    site = Site("pinned", routes={"/page.html": Response(PAGE)}, robots=None, host="rebind.test")
    answers = iter([["127.0.0.1"]] + [["10.0.0.1"]] * 10)
    config = FetchConfig(allowed_networks=("127.0.0.0/8",), retries=0, host_delay=0.0)
    with LoopbackWeb([site]):
        fetcher = Fetcher(config, resolver=lambda host, port: next(answers))
        try:
            result = fetcher.fetch_page(site.url("/page.html"))
        finally:
            fetcher.close()
    assert result.ok, result
    assert result.body == PAGE
    hosts = {visit.headers.get("Host") for visit in site.log.visits}
    assert hosts == {f"rebind.test:{site.port}"}


def test_a_rebinding_answer_after_the_pin_expires_is_refused():
    site = Site("rebind", routes={"/a.html": Response(PAGE), "/b.html": Response(PAGE)}, robots=None,
                host="rebind.test")
    config = FetchConfig(allowed_networks=("127.0.0.0/8",), retries=0, host_delay=0.0)

    def rebinding(host: str, port: int) -> list[str]:  # loopback until the first page was served, then private
        return ["10.0.0.1"] if "/a.html" in site.log.paths() else ["127.0.0.1"]

    with LoopbackWeb([site]):
        fetcher = Fetcher(config, resolver=rebinding)
        fetcher.guard.pin_seconds = 0.0  # re-resolve on every request
        try:
            first = fetcher.fetch_page(site.url("/a.html"))
            second = fetcher.fetch_page(site.url("/b.html"))
        finally:
            fetcher.close()
    assert first.ok
    assert second.reason == "address-blocked" and "10.0.0.1" in second.detail
    assert [v.path for v in site.log.visits] == ["/robots.txt", "/a.html"]


def test_https_to_a_pinned_address_keeps_sni_host_header_and_certificate_check():
    server_names: list[str | None] = []
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(TLS / "server.pem", TLS / "server.key")
    tls.sni_callback = lambda sock, name, context: server_names.append(name)
    site = Site("tls", routes={"/page.html": Response(PAGE)}, robots=None, host="pinned.test", tls=tls)
    config = FetchConfig(allowed_networks=("127.0.0.0/8",), retries=0, host_delay=0.0, ca_bundle=str(TLS / "ca.pem"))
    with LoopbackWeb([site]):
        fetcher = Fetcher(config, resolver=lambda host, port: ["127.0.0.1"])
        try:
            result = fetcher.fetch_page(site.url("/page.html"))
            names_seen = list(server_names)
            wrong_name = fetcher.fetch_page(f"https://127.0.0.1:{site.port}/page.html")
        finally:
            fetcher.close()
    assert result.ok, result
    assert result.body == PAGE
    assert names_seen and set(names_seen) == {"pinned.test"}
    assert {v.headers.get("Host") for v in site.log.visits} == {f"pinned.test:{site.port}"}
    assert wrong_name.reason == "tls-error"  # the certificate is for pinned.test, not for the address


def test_a_connection_tries_few_addresses_and_only_while_the_link_has_time(monkeypatch):
    """A name with many dead addresses must not multiply the connect timeout past the link's deadline."""
    import socket

    from webtext.crawl.fetch import addresses

    tried = []

    def dead(address, timeout, **kwargs):
        tried.append((address[0], timeout))
        raise socket.timeout("timed out")

    monkeypatch.setattr(addresses.urllib3_connection, "create_connection", dead)
    many = [f"127.0.0.{i}" for i in range(2, 12)]
    config = FetchConfig(allowed_networks=("127.0.0.0/8",), retries=0, host_delay=0.0, connect_timeout=10.0,
                         page_deadline=0.5)
    fetcher = Fetcher(config, resolver=lambda host, port: many)
    try:
        result = fetcher.fetch_page("http://many.test/page.html")
    finally:
        fetcher.close()
    assert result.reason == "robots-unreachable" and "timeout" in result.detail
    assert len(tried) == addresses.MAX_ADDRESSES_PER_CONNECTION
    assert all(timeout <= 0.5 for _, timeout in tried)
