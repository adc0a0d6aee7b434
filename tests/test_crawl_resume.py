"""A crawl killed with SIGKILL and run again: links an earlier run finished are not fetched again, and the rerun's
docs, rejects, fetch log and counters equal those of an uninterrupted crawl."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.test_crawl_stage import (DOC_FILES, FETCH_LOG_FILES, REJECT_FILES, SAMPLE_OPTIONS, WARC_FILES, outcomes,
                                    rows, without_run_details)
from tests.testweb import redirect, write_links
from webtext.crawl.fetch.journal import read_journal
from webtext.pipeline import layout
from webtext.pipeline.demo_web import serve_sample_web

CLI = "import sys; from webtext.pipeline.cli import main; sys.exit(main(sys.argv[1:]))"


def page_visits(sample) -> Counter:
    return Counter(f"{site.origin}{visit.path}" for site in sample.web.sites for visit in site.log.visits
                   if visit.path != "/robots.txt")


@pytest.mark.slow
def test_a_killed_crawl_resumes_its_warc_files_replay_force_reuses_every_fetch_and_restart_starts_over(
        tmp_path, webtext_cli):
    run = tmp_path / "run"
    with serve_sample_web(24, sites=4) as sample:
        write_links(run, sample.urls)
        slow = ["--host-delay", "0.4", *SAMPLE_OPTIONS[2:], "--runner=FnApiRunner"]
        crawl = subprocess.Popen([sys.executable, "-c", CLI, "crawl", str(run), *slow], start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while len(journal_at_kill(run)) < 8 and crawl.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            os.killpg(crawl.pid, signal.SIGKILL)
            crawl.wait()
        assert crawl.returncode == -signal.SIGKILL  # killed mid-crawl, not finished
        done_before = set(journal_at_kill(run))
        before = page_visits(sample)
        assert 8 <= len(done_before) < len(sample.pages) and not Path(layout.RunDir(str(run)).success_path("crawl")).exists()

        assert webtext_cli("crawl", run, *SAMPLE_OPTIONS, "--runner=FnApiRunner") == 0
        resumed = page_visits(sample)
        assert outcomes(run)[2] == {page.url: page.expect for page in sample.pages}
        refetched = {url for url in done_before if resumed[url] > before[url]}
        assert not refetched, f"fetched again although finished: {sorted(refetched)}"
        assert all(resumed[page.url] > before[page.url] for page in sample.pages  # the rest was fetched now
                   if page.url not in done_before and page.url in resumed)
        docs = without_run_details(rows(run, DOC_FILES))
        assert docs and all(row["warc_file"] for row in rows(run, DOC_FILES))

        replay = tmp_path / "replay"  # the killed run's file may end in a partial record: replay reads what is whole
        write_links(replay, sample.urls)
        assert webtext_cli("crawl", replay, "--from-warc", str(run / WARC_FILES), *SAMPLE_OPTIONS,
                           "--runner=FnApiRunner") == 0
        assert without_run_details(rows(replay, DOC_FILES)) == docs

        assert webtext_cli("crawl", run, *SAMPLE_OPTIONS, "--runner=FnApiRunner", "--force") == 0
        assert page_visits(sample) == resumed  # every link finished: only extraction and the filters ran again
        assert without_run_details(rows(run, DOC_FILES)) == docs

        assert webtext_cli("crawl", run, *SAMPLE_OPTIONS, "--runner=FnApiRunner", "--restart") == 0
        again = page_visits(sample)
        assert all(again[url] > resumed[url] for url in resumed)  # --restart fetched every page again
        assert outcomes(run)[2] == {page.url: page.expect for page in sample.pages}


# -- killed at several points: the rerun equals an uninterrupted crawl, and fetches no finished link again -----------

KILL_OPTIONS = ["--host-delay", "0.2", "--allow-private-addresses", "--retries", "0", "--extract-timeout", "20",
                "--max-pages-per-host", "14", "--runner=FnApiRunner"]
# Counters of the work a run did itself, not of what the crawl made of the links.
WORK_COUNTERS = ("links.resumed", "fetch.redirects-to-other-hosts")
FETCH_DETAILS = ("fetched_at", "elapsed", "warc_file", "warc_offset")


@contextmanager
def resumable_web():
    """The sample web on 3 hosts, plus what has no WARC record (a reset connection; robots.txt's refusals, a host
    cap that bites) and redirects within a host and to another host."""
    with serve_sample_web(30, sites=3) as sample:
        sites = sample.web.sites
        sites[0].routes["/broken.html"] = lambda context: context.reset()
        page = sample.pages[0].response
        sites[0].routes.update({"/hop": redirect("/hop-landing.html"), "/hop-landing.html": page})
        sites[1].routes["/moved"] = redirect(sites[2].url("/landing.html"), 301)
        sites[2].routes["/landing.html"] = page  # no link's own page: every page request belongs to one link
        for site in sites:  # the last link of each host in url_key order: the host cap (14) takes it on the first two
            site.routes["/zz-older.html"] = page
        urls = [*sample.urls, sites[0].url("/broken.html"), sites[0].url("/hop"), sites[1].url("/moved"),
                *(site.url("/zz-older.html") for site in sites)]
        yield sample, urls


def crawl_results(run: str | Path, run_files: Path | None = None) -> dict:
    """What a crawl made of its links: docs, rejects, fetch log (without when and where) and its counters."""
    files = Path(run_files or run)
    counters = json.loads(Path(files, layout.STATS, "crawl.json").read_text())["counters"]
    return {
        "docs": without_run_details(rows(files, DOC_FILES)),
        "rejects": sorted((r["url"], r["reason"], r["detail"], r["item_id"]) for r in rows(files, REJECT_FILES)),
        "fetch_log": sorted(({k: v for k, v in r.items() if k not in FETCH_DETAILS}
                             for r in rows(files, FETCH_LOG_FILES)), key=lambda r: r["url"]),
        "counters": {k: v for k, v in counters.items() if k not in WORK_COUNTERS and not k.endswith(".milliseconds")},
    }


def journal_at_kill(run: Path) -> dict[str, dict]:
    """url -> fetch-log row of every link the journal counts as finished."""
    lines = [line for path in sorted(glob.glob(str(run / layout.FETCH_JOURNAL_GLOB)))
             for line in Path(path).read_bytes().splitlines()]
    return {row["url"]: row for row in read_journal(iter(lines), "journal")}


def kill_crawl_after(run: str | Path, sample, requests: int, env: dict | None = None, options=KILL_OPTIONS) -> Counter:
    """Starts `webtext crawl RUN` in its own process group and SIGKILLs the group once the web has seen `requests`
    more page requests; returns the page requests seen by then."""
    start = page_visits(sample)
    crawl = subprocess.Popen([sys.executable, "-c", CLI, "crawl", str(run), *options], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while (sum((page_visits(sample) - start).values()) < requests and crawl.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.01)
    finally:
        os.killpg(crawl.pid, signal.SIGKILL)
        crawl.wait()
    assert crawl.returncode == -signal.SIGKILL, "the crawl ended before the kill point"
    return page_visits(sample) - start


def assert_no_finished_link_fetched_again(killed: Counter, rerun: Counter, finished: dict[str, dict],
                                          baseline: Counter, hosts: int | None = None) -> None:
    assert set(killed + rerun) == set(baseline)  # every page the uninterrupted crawl asked for, asked for here too
    again = {url for url in rerun if killed[url]}
    finished_urls = {url for row in finished.values() for url in (row["url"], row["final_url"])}
    assert not again & finished_urls, f"fetched again although finished: {sorted(again & finished_urls)}"
    assert all(count == 1 for count in rerun.values()), "the rerun asked for a page twice"
    if hosts is not None:  # where every write is out at once: in flight at the kill, a link per host (and a redirect)
        assert len(again) <= hosts + 1


@pytest.fixture(scope="module")
def web():
    with resumable_web() as (sample, urls):
        yield sample, urls


@pytest.fixture(scope="module")
def uninterrupted(web, tmp_path_factory):
    from webtext.pipeline.cli import main

    sample, urls = web
    run = tmp_path_factory.mktemp("uninterrupted")
    write_links(run, urls)
    before = page_visits(sample)
    assert main(["crawl", str(run), *KILL_OPTIONS]) == 0
    results = crawl_results(run)
    reasons = {reject[1] for reject in results["rejects"]}
    assert {"host-cap", "robots-disallowed", "connection-error", "http-404"} <= reasons  # no WARC record, and one
    assert results["counters"]["docs.written"] > 20
    return results, page_visits(sample) - before


@pytest.mark.slow
@pytest.mark.parametrize("point", [0.1, 0.5, 0.9], ids=["early", "middle", "late"])
def test_a_crawl_killed_at_any_point_resumes_to_the_uninterrupted_result(point, web, uninterrupted, tmp_path,
                                                                          webtext_cli):
    sample, urls = web
    baseline, baseline_visits = uninterrupted
    run = tmp_path / "run"
    write_links(run, urls)
    killed = kill_crawl_after(run, sample, max(1, int(point * sum(baseline_visits.values()))))
    finished = journal_at_kill(run)

    before = page_visits(sample)
    assert webtext_cli("crawl", run, *KILL_OPTIONS) == 0
    rerun = page_visits(sample) - before

    assert crawl_results(run) == baseline
    counters = json.loads(Path(run, layout.STATS, "crawl.json").read_text())["counters"]
    assert counters.get("links.resumed", 0) == len(finished)  # every link the journal held, and no other
    assert_no_finished_link_fetched_again(killed, rerun, finished, baseline_visits, len(sample.web.sites))


@pytest.mark.slow
def test_a_crawl_killed_on_gcs_resumes_from_the_files_it_closed(web, uninterrupted, tmp_path):
    """On gs:// a file appears only once closed: the killed crawl's open WARC and journal files are lost, the closed
    ones (every --warc-max-seconds) hold the links the rerun does not fetch again."""
    pytest.importorskip("gcp_storage_emulator", reason="needs the dev extra (gcp-storage-emulator)")
    gcs = pytest.importorskip("google.cloud.storage", reason="needs the gcp extra (apache-beam[gcp])")
    from google.auth.credentials import AnonymousCredentials

    from tests.cloud_peers import PROJECT, google_env, isolated_env, metadata_server, storage_emulator

    sample, urls = web
    baseline, baseline_visits = uninterrupted
    options = [*KILL_OPTIONS, "--warc-max-seconds", "0.5"]
    with storage_emulator(tmp_path / "gcs") as emulator, metadata_server() as metadata:
        env = isolated_env(tmp_path, block=("torch",), **google_env(emulator, metadata))
        bucket = gcs.Client(project=PROJECT, credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": emulator.url}).bucket(emulator.bucket)
        local = tmp_path / "links-run"
        write_links(local, urls)
        for path in [*sorted((local / layout.LINKS).glob("*.parquet")), local / layout.LINKS / layout.SUCCESS]:
            bucket.blob(f"run/{layout.LINKS}/{path.name}").upload_from_filename(path)  # a finished links stage
        run = f"gs://{emulator.bucket}/run"

        killed = kill_crawl_after(run, sample, int(0.6 * sum(baseline_visits.values())), env=env, options=options)
        journal = [line for blob in bucket.list_blobs(prefix=f"run/{layout.FETCH_JOURNAL}/")
                   for line in blob.download_as_bytes().splitlines()]
        finished = {row["url"]: row for row in read_journal(iter(journal), "journal")}
        assert finished, "no journal file was closed before the kill"

        before = page_visits(sample)
        done = subprocess.run([sys.executable, "-c", CLI, "crawl", run, *options], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        rerun = page_visits(sample) - before

        copy = tmp_path / "copy"
        for blob in bucket.list_blobs(prefix="run/"):
            target = copy / blob.name.removeprefix("run/")
            target.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(target)

    assert crawl_results(run, copy) == baseline
    counters = json.loads(Path(copy, layout.STATS, "crawl.json").read_text())["counters"]
    assert counters["links.resumed"] == len(finished)
    assert_no_finished_link_fetched_again(killed, rerun, finished, baseline_visits)
