"""A crawl killed with SIGKILL and run again: links whose fetch the WARC files hold are not fetched again."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.test_crawl_stage import DOC_FILES, SAMPLE_OPTIONS, WARC_FILES, outcomes, rows, warc_files, without_run_details
from tests.testweb import write_links
from webtext.pipeline import layout
from webtext.pipeline.crawl_stage import index_warc
from webtext.pipeline.demo_web import serve_sample_web

CLI = "import sys; from webtext.pipeline.cli import main; sys.exit(main(sys.argv[1:]))"


def archived_pages(run: Path) -> set[str]:
    """URLs of the pages (not robots.txt) with a whole response record in the run's WARC files so far."""
    return {key for path in warc_files(run) for key, _ in index_warc(path) if not key.endswith("/robots.txt")}


def page_visits(sample) -> Counter:
    return Counter(f"{site.origin}{visit.path}" for site in sample.web.sites for visit in site.log.visits
                   if visit.path != "/robots.txt")


@pytest.mark.slow
def test_a_killed_crawl_resumes_from_its_warc_files_and_restart_starts_over(tmp_path, webtext_cli):
    run = tmp_path / "run"
    with serve_sample_web(24, sites=4) as sample:
        write_links(run, sample.urls)
        slow = ["--host-delay", "0.4", *SAMPLE_OPTIONS[2:], "--runner=FnApiRunner"]
        crawl = subprocess.Popen([sys.executable, "-c", CLI, "crawl", str(run), *slow], start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while len(archived_pages(run)) < 8 and crawl.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            os.killpg(crawl.pid, signal.SIGKILL)
            crawl.wait()
        assert crawl.returncode == -signal.SIGKILL  # killed mid-crawl, not finished
        done_before = archived_pages(run)
        before = page_visits(sample)
        assert 8 <= len(done_before) < len(sample.pages) and not Path(layout.RunDir(str(run)).success_path("crawl")).exists()

        assert webtext_cli("crawl", run, *SAMPLE_OPTIONS, "--runner=FnApiRunner") == 0
        resumed = page_visits(sample)
        assert outcomes(run)[2] == {page.url: page.expect for page in sample.pages}
        refetched = {url for url in done_before if resumed[url] > before[url]}
        assert not refetched, f"fetched again although archived: {sorted(refetched)}"
        assert all(resumed[page.url] > before[page.url] for page in sample.pages  # the rest was fetched now
                   if page.url not in done_before and page.url in resumed)
        docs = without_run_details(rows(run, DOC_FILES))
        assert docs and all(row["warc_file"] for row in rows(run, DOC_FILES))

        replay = tmp_path / "replay"  # the killed run's file may end in a partial record: replay reads what is whole
        write_links(replay, sample.urls)
        assert webtext_cli("crawl", replay, "--from-warc", str(run / WARC_FILES), *SAMPLE_OPTIONS,
                           "--runner=FnApiRunner") == 0
        assert without_run_details(rows(replay, DOC_FILES)) == docs

        assert webtext_cli("crawl", run, *SAMPLE_OPTIONS, "--runner=FnApiRunner", "--restart") == 0
        again = page_visits(sample)
        assert all(again[url] > resumed[url] for url in resumed)  # --restart fetched every page again
        assert outcomes(run)[2] == {page.url: page.expect for page in sample.pages}
