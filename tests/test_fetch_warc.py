"""WARC archiving: what the fetcher received, as received, in valid rotating .warc.gz files that read back."""
from __future__ import annotations

import random
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator

from tests.testweb import gzipped, huge, redirect
from webtext.crawl.fetch.config import FetchConfig
from webtext.crawl.fetch.fetcher import Fetcher
from webtext.crawl.fetch.responses import page_outcome
from webtext.crawl.fetch.warc import HttpExchange, WarcWriter, iter_responses, read_response_at
from webtext.pipeline.demo_web import LoopbackWeb, Response, Site

PAGE = b"<html><body><p>" + "Größe und Qualität. ".encode() * 30 + b"</p></body></html>"
CONFIG = FetchConfig(allowed_networks=("127.0.0.0/8",), host_delay=0.0, retries=0, max_bytes=100_000)


def crawl_into_warc(tmp_path: Path, paths: list[str], max_file_bytes: int = 10_000_000):
    site = Site("s", routes={"/page.html": Response(PAGE), "/zipped.html": gzipped(PAGE),
                             "/moved": redirect("/page.html", 301), "/huge.html": huge,
                             "/missing.html": Response(b"gone", status=404)})
    writer = WarcWriter(str(tmp_path), "test", max_file_bytes=max_file_bytes)
    with LoopbackWeb([site]):
        fetcher = Fetcher(CONFIG, archive=writer.write)
        results = {path: fetcher.fetch_page(site.url(path)) for path in paths}
        fetcher.close()
    writer.close()
    return site, writer, results


def test_responses_are_archived_as_received_and_read_back(tmp_path):
    site, writer, results = crawl_into_warc(tmp_path, ["/page.html", "/zipped.html", "/moved", "/missing.html"])
    assert len(writer.files) == 1
    with open(writer.files[0], "rb") as handle:
        records = list(iter_responses(handle, writer.files[0]))
    by_url = {r.url: r for r in records}
    assert set(by_url) == {site.url(p) for p in ("/robots.txt", "/page.html", "/zipped.html", "/moved", "/missing.html")}
    zipped = by_url[site.url("/zipped.html")]
    assert zipped.header("Content-Encoding") == "gzip" and zipped.body != PAGE  # stored as received
    assert page_outcome(zipped, CONFIG) == PAGE
    assert by_url[site.url("/moved")].status == 301 and by_url[site.url("/moved")].header("Location") == "/page.html"
    assert by_url[site.url("/missing.html")].status == 404
    assert {r.ip for r in records} == {"127.0.0.1"}
    for path in ("/page.html", "/zipped.html"):
        result = results[path]
        assert result.warc_file == writer.files[0]
        with open(result.warc_file, "rb") as handle:
            again = read_response_at(handle, result.warc_file, result.warc_offset)
        assert again.url == site.url(path) and page_outcome(again, CONFIG) == PAGE
    moved = results["/moved"]  # the link's record is its final response
    with open(moved.warc_file, "rb") as handle:
        assert read_response_at(handle, moved.warc_file, moved.warc_offset).url == site.url("/page.html")


def test_warc_files_are_valid_with_request_records_and_digests(tmp_path):
    _, writer, _ = crawl_into_warc(tmp_path, ["/page.html", "/huge.html"])
    with open(writer.files[0], "rb") as handle:
        iterator = ArchiveIterator(handle, check_digests=True)
        kinds = []
        for record in iterator:
            kinds.append(record.rec_type)
            record.content_stream().read()
            if record.rec_type == "response" and record.rec_headers.get_header("WARC-Truncated") is None:
                assert record.digest_checker.passed is not False
    assert kinds[0] == "warcinfo"
    assert kinds.count("response") == kinds.count("request") == 3
    with open(writer.files[0], "rb") as handle:
        huge_record = [r for r in iter_responses(handle) if r.url.endswith("/huge.html")][0]
    assert huge_record.truncated == "length" and len(huge_record.body) == CONFIG.max_bytes


def test_warc_files_rotate_by_size(tmp_path):
    writer = WarcWriter(str(tmp_path), "rot", max_file_bytes=2_000)
    exchange = HttpExchange(url="http://example.com/", status=200, reason_phrase="OK",
                            response_headers=[("Content-Type", "text/html")], body=random.Random(0).randbytes(3000))
    locations = [writer.write(exchange) for _ in range(5)]
    writer.close()
    assert len(writer.files) == 5 and [Path(f).name for f in writer.files][:2] == ["rot-00000.warc.gz", "rot-00001.warc.gz"]
    for path, offset in locations:
        with open(path, "rb") as handle:
            assert read_response_at(handle, path, offset).body == exchange.body


def test_common_crawl_style_records_replay(tmp_path):
    """Common Crawl stores payloads decoded, renames Content-Encoding, and has request, metadata and revisit records."""
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    from webtext.pipeline.crawl_stage import best_ref, index_warc

    path = tmp_path / "CC-MAIN-test.warc.gz"
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        url = "http://Example.com:80/story?b=2&a=1"
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), ("X-Crawler-Content-Encoding", "gzip")],
                                   protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(url, "request", payload=io.BytesIO(b""),
                                                      http_headers=StatusAndHeaders("GET /story HTTP/1.1", [],
                                                                                    is_http_request=True)))
        writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(PAGE), http_headers=headers))
        writer.write_record(writer.create_warc_record(url, "metadata", payload=io.BytesIO(b"fetchTimeMs: 12"),
                                                      warc_content_type="application/warc-fields"))
    with open(path, "rb") as handle:
        records = list(iter_responses(handle, str(path)))
    assert len(records) == 1 and page_outcome(records[0], CONFIG) == PAGE
    index = dict(index_warc(str(path)))
    assert set(index) == {"http://Example.com:80/story?b=2&a=1", "http://example.com/story?a=1&b=2"}
    retried = ("f", 10, 503, None, 100.0)
    final = ("f", 20, 200, None, 50.0)
    assert best_ref([retried, final]) == final  # a retried 5xx loses to an answer, even an older one


def test_warcinfo_matches_the_record_version_and_request_lines_keep_the_query(tmp_path):
    writer = WarcWriter(str(tmp_path), "v")
    for url in ("http://example.com?q=1", "http://example.com/a/b?x=2#frag", "http://example.com"):
        writer.write(HttpExchange(url=url, status=200, response_headers=[("Content-Type", "text/html")], body=PAGE))
    writer.close()
    with open(writer.files[0], "rb") as handle:
        records = [(r.rec_type, r.rec_headers.protocol, r.raw_stream.read(), r.http_headers)
                   for r in ArchiveIterator(handle)]
    info = records[0][2].decode()
    versions = {protocol for _, protocol, _, _ in records}
    assert len(versions) == 1 and f"WARC File Format {versions.pop().split('/')[1]}" in info
    request_lines = [http.statusline for kind, _, _, http in records if kind == "request"]
    assert [line.split()[0] for line in request_lines] == ["/?q=1", "/a/b?x=2", "/"]
