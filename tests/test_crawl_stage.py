"""The crawl stage end to end over loopback webs: the fault zoo, accounting, politeness, WARC replay, worker-count
independence and extraction quality on the real pages of the extraction benchmark."""
from __future__ import annotations

import glob
import gzip
import json
from pathlib import Path

import pytest

from benchmarks.extraction_metric import extraction_scores
from tests.testweb import RETRY_AFTER, ZOO_OPTIONS, article_page, bind_zoo, build_zoo, redirect, write_links
from webtext.crawl.fetch.warc import iter_responses
from webtext.pipeline import layout
from webtext.pipeline.demo_web import LoopbackWeb, Response, Site, serve_sample_web
from webtext.pipeline.storage import read_rows as read_parquet_rows

SAMPLE_OPTIONS = ["--host-delay", "0.05", "--allow-private-addresses", "--retries", "0", "--extract-timeout", "20"]
# What the crawl writes under RUN (its shard prefixes inside the layout's folders).
DOC_FILES = f"{layout.DOCS}/docs-*.parquet"
REJECT_FILES = f"{layout.REJECTS}/crawl/rejects-*.parquet"
FETCH_LOG_FILES = f"{layout.FETCH_LOG}/fetch-log-*.parquet"
WARC_FILES = f"{layout.WARC}/*.warc.gz"


def rows(run: Path, pattern: str) -> list[dict]:
    return [row for path in sorted(glob.glob(str(run / pattern))) for row in read_parquet_rows(path)]


def warc_files(run: Path) -> list[str]:
    return sorted(glob.glob(str(run / WARC_FILES)))


def archived_urls(run: Path) -> set[str]:
    """The URLs of every response record in the run's WARC files."""
    archived = set()
    for path in warc_files(run):
        with open(path, "rb") as handle:
            archived |= {record.url for record in iter_responses(handle, with_body=False)}
    return archived


def outcomes(run: Path) -> tuple[list[dict], list[dict], dict[str, str]]:
    """Docs, rejects, and url -> "doc" or reject reason (checking that no link is in two places)."""
    docs, rejects = rows(run, DOC_FILES), rows(run, REJECT_FILES)
    found: dict[str, str] = {}
    for url, outcome in [(d["url"], "doc") for d in docs] + [(r["url"], r["reason"]) for r in rejects]:
        assert url not in found, f"{url} is both {found[url]} and {outcome}"
        found[url] = outcome
    return docs, rejects, found


def without_run_details(docs: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in d.items() if k not in ("fetched_at", "warc_file", "warc_offset")} for d in docs),
                  key=lambda d: d["doc_id"])


@pytest.mark.slow
def test_the_fault_zoo(tmp_path, webtext_cli, beam_args):
    zoo = build_zoo()
    with LoopbackWeb(zoo.sites) as web:
        bind_zoo(zoo)
        links = write_links(tmp_path, list(zoo.expected))
        assert webtext_cli("crawl", tmp_path, *ZOO_OPTIONS, *beam_args) == 0
        overlaps, too_soon = web.overlaps(), web.too_soon(zoo.delays())
    assert overlaps == {}, "a host saw two requests at once"
    assert too_soon == {}, "a host saw requests faster than its delay"
    busy_gaps = [b - a for a, b in zip(zoo.busy.times, zoo.busy.times[1:])]
    assert len(zoo.busy.times) == 2 and min(busy_gaps) >= RETRY_AFTER  # Retry-After honoured, retries bounded

    docs, rejects, found = outcomes(tmp_path)
    assert found == zoo.expected  # every link exactly once, each fault with its reason
    assert len(docs) + len(rejects) == len(links)

    stats = json.loads(Path(tmp_path, layout.STATS, "crawl.json").read_text())["counters"]
    assert stats["links.read"] == len(links) and stats["docs.written"] == len(docs)
    assert sum(v for k, v in stats.items() if k.startswith("reject.")) == len(rejects)

    by_url = {d["url"]: d for d in docs}
    latin1 = by_url[zoo.sites[2].url("/latin1.html")]
    assert "crème brûlée" in latin1["text"] and latin1["charset"] == "cp1252"
    assert "“it’s fine” — and paid €5" in by_url[zoo.sites[2].url("/cp1252.html")]["text"]
    japanese = [r for r in rejects if r["url"].endswith("/sjis.html")][0]
    assert japanese["detail"].startswith("ja ")  # decoded right, so identified right
    link = next(row for row in links if row["url"] in by_url)
    doc = by_url[link["url"]]
    assert doc["url_key"] == link["url_key"] and doc["score"] == link["score"] and doc["subreddits"] == ["test"]
    assert doc["reddit_title"] == link["title"] and doc["language"] == "en" and doc["n_words"] > 50

    log = rows(tmp_path, FETCH_LOG_FILES)
    assert sorted(r["url"] for r in log) == sorted(zoo.expected)
    log_by_url = {r["url"]: r for r in log}
    moved = log_by_url[zoo.sites[1].url("/to-other-host")]
    assert moved["final_url"] == zoo.sites[2].url("/redirected.html") and moved["redirects"] == 1
    assert log_by_url[zoo.sites[1].url("/busy.html")]["attempts"] == 2

    archived = archived_urls(tmp_path)
    assert doc["final_url"] in archived and doc["warc_file"] in warc_files(tmp_path)
    assert zoo.sites[1].url("/bomb.html") in archived  # rejects are archived too


@pytest.mark.slow
def test_redirects_to_another_host_are_crawled_by_that_hosts_worker(tmp_path, webtext_cli):
    """Links on A redirect to B while B has links of its own, on two worker processes: B still sees one request at a
    time, never sooner than its Crawl-delay, and its robots.txt once; A's redirected links go on under B's rules."""
    crawl_delay = 0.1
    a = Site("a", robots="User-agent: *\nDisallow: /private/\n")
    b = Site("b", robots=f"User-agent: *\nDisallow: /private/\nCrawl-delay: {crawl_delay}\n")
    b.routes.update({f"/own/{i}.html": Response(article_page(14 + i, "B")) for i in range(6)})
    b.routes.update({f"/landing/{i}.html": Response(article_page(20 + i, "B")) for i in range(6)})
    b.routes["/private/x.html"] = Response(article_page(26, "B"))
    with LoopbackWeb([a, b]) as web:
        a.routes.update({f"/moved/{i}": redirect(b.url(f"/hop/{i}"), 301) for i in range(6)})
        b.routes.update({f"/hop/{i}": redirect(f"/landing/{i}.html") for i in range(6)})  # then within B
        a.routes["/to-private"] = redirect(b.url("/private/x.html"))
        a.routes["/ping"] = redirect(b.url("/pong"))
        b.routes["/pong"] = redirect(a.url("/ping"))
        a.routes.update({f"/chain/{i}": redirect((b if i % 2 == 0 else a).url(f"/chain/{i + 1}")) for i in range(8)})
        b.routes.update({f"/chain/{i}": redirect((b if i % 2 == 0 else a).url(f"/chain/{i + 1}")) for i in range(8)})
        expected = {**{a.url(f"/moved/{i}"): "doc" for i in range(6)},
                    **{b.url(f"/own/{i}.html"): "doc" for i in range(6)},
                    a.url("/to-private"): "robots-disallowed", a.url("/ping"): "redirect-loop",
                    a.url("/chain/0"): "too-many-redirects", a.url("/missing.html"): "http-404"}
        write_links(tmp_path, list(expected))
        assert webtext_cli("crawl", tmp_path, *SAMPLE_OPTIONS, "--max-redirects", "4", "--direct_num_workers=2") == 0
        assert web.overlaps() == {}, "a host saw two requests at once"
        assert web.too_soon({"a": 0.05, "b": crawl_delay}) == {}, "a host saw requests faster than its delay"
        assert a.log.paths().count("/robots.txt") == 1 and b.log.paths().count("/robots.txt") == 1
        assert "/private/x.html" not in b.log.paths()

    docs, rejects, found = outcomes(tmp_path)
    assert found == expected and len(docs) + len(rejects) == len(expected)  # every link once, with its reason
    log = {row["url"]: row for row in rows(tmp_path, FETCH_LOG_FILES)}
    assert sorted(log) == sorted(expected)
    moved = log[a.url("/moved/3")]
    assert moved["final_url"] == b.url("/landing/3.html") and moved["redirects"] == 2 and moved["attempts"] == 3
    assert {d["url"]: d["final_url"] for d in docs}[a.url("/moved/3")] == b.url("/landing/3.html")
    assert log[a.url("/chain/0")]["redirects"] == 4
    assert {a.url("/moved/3"), b.url("/hop/3"), b.url("/landing/3.html")} <= archived_urls(tmp_path)  # every hop


def test_without_links_the_stage_says_what_to_run(tmp_path, webtext_cli, beam_args, capsys):
    assert webtext_cli("crawl", tmp_path, *beam_args) == 2
    assert "webtext links" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sample_crawl(tmp_path_factory):
    """The sample web crawled once on the in-process runner; the web stays up for the tests that crawl again."""
    from webtext.pipeline.cli import main

    run = tmp_path_factory.mktemp("sample")
    with serve_sample_web(24, sites=4) as sample:
        write_links(run, sample.urls)
        assert main(["crawl", str(run), *SAMPLE_OPTIONS, "--runner=FnApiRunner"]) == 0
        yield run, sample


@pytest.mark.slow
def test_the_sample_web_gives_the_expected_documents(sample_crawl):
    run, sample = sample_crawl
    docs, rejects, found = outcomes(run)
    assert found == {page.url: page.expect for page in sample.pages}
    assert sample.web.overlaps() == {} and sample.web.too_soon(0.05) == {}
    assert len({d["doc_id"] for d in docs}) == len(docs)
    assert all(d["title"] and d["date"] and d["language"] == "en" for d in docs)


@pytest.mark.slow
def test_worker_count_does_not_change_the_documents(sample_crawl, tmp_path, webtext_cli):
    run, sample = sample_crawl
    write_links(tmp_path, sample.urls)
    assert webtext_cli("crawl", tmp_path, *SAMPLE_OPTIONS, "--direct_num_workers=2") == 0
    assert without_run_details(rows(tmp_path, DOC_FILES)) == without_run_details(rows(run, DOC_FILES))
    assert outcomes(tmp_path)[2] == outcomes(run)[2]


@pytest.mark.slow
def test_replay_from_warc_gives_the_same_documents_offline(sample_crawl, tmp_path, webtext_cli, beam_args):
    run, sample = sample_crawl
    write_links(tmp_path, sample.urls)
    warcs = str(run / WARC_FILES)
    assert webtext_cli("crawl", tmp_path, "--from-warc", warcs, *beam_args) == 0
    assert without_run_details(rows(tmp_path, DOC_FILES)) == without_run_details(rows(run, DOC_FILES))
    replayed = outcomes(tmp_path)[2]
    for url, outcome in outcomes(run)[2].items():
        assert replayed[url] == ("not-in-warc" if outcome == "robots-disallowed" else outcome)
    assert webtext_cli("crawl", tmp_path, "--from-warc", warcs, *beam_args) == 0  # unchanged: skipped
    assert webtext_cli("crawl", tmp_path, "--from-warc", str(tmp_path / "nothing-*.warc.gz"), *beam_args) == 2


@pytest.mark.slow
@pytest.mark.realdata
def test_extraction_quality_on_real_pages_through_the_stage(shared_data, tmp_path, webtext_cli, beam_args):
    """The 91 benchmark pages served over loopback (as text/html, no charset in the header), crawled by the stage;
    word-level F1 of the documents' text against the ground-truth article bodies."""
    bench = shared_data / "extraction-benchmark"
    truth = json.loads((bench / "ground-truth.json").read_text())
    sites = [Site(f"bench{i}") for i in range(6)]
    paths = {}
    for index, page_id in enumerate(sorted(truth)):
        site = sites[index % len(sites)]
        site.routes[f"/{page_id}.html"] = Response(gzip.decompress((bench / "html" / f"{page_id}.html.gz").read_bytes()),
                                                   "text/html")
        paths[page_id] = (site, f"/{page_id}.html")
    with LoopbackWeb(sites) as web:
        urls = {page_id: site.url(path) for page_id, (site, path) in paths.items()}
        write_links(tmp_path, list(urls.values()))
        assert webtext_cli("crawl", tmp_path, "--host-delay", "0.02", "--allow-private-addresses", "--languages", "all",
                           "--skip-rules", "all", *beam_args) == 0
        assert web.overlaps() == {}
    docs, rejects, found = outcomes(tmp_path)
    assert len(found) == len(truth)
    text_by_url = {d["url"]: d["text"] for d in docs}
    precision, recall, f1 = extraction_scores({i: text_by_url.get(url) for i, url in urls.items()},
                                              {i: t["articleBody"] for i, t in truth.items()})
    assert f1 >= 0.96, (precision, recall, f1)
    assert len(docs) >= 89, [r["reason"] for r in rejects]
