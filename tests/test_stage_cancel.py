"""A stage stopped by SIGTERM (Airflow killing its task, `kill PID`) mid-run: its Beam job and worker processes end, it
exits non-zero saying so, writes no _SUCCESS, and the same command run again succeeds."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_crawl_resume import journal_at_kill
from tests.test_crawl_stage import SAMPLE_OPTIONS, outcomes
from tests.testweb import write_links
from webtext.pipeline import layout
from webtext.pipeline.demo_web import serve_sample_web

CLI = "import sys; from webtext.pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
LOCAL_RUNNER = ["--direct_num_workers=2"]  # the default multi-process local runner: workers are processes of its group


def start_stage(args: list, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLI, *map(str, args)], start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(condition, process: subprocess.Popen, what: str, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert process.poll() is None, f"the stage ended before {what}: {process.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {limit:.0f}s"
        time.sleep(0.1)


def stop_and_collect(process: subprocess.Popen, send) -> str:
    """Sends the signal, waits for the stage and every process of its group to end; returns the stage's stderr."""
    pgid = process.pid
    try:
        send()
        _, stderr = process.communicate(timeout=120)
        deadline = time.monotonic() + 60
        while group_exists(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_exists(pgid), "processes of the stopped stage's group are still running"
        return stderr
    finally:
        if group_exists(pgid):
            os.killpg(pgid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_sigterm_stops_a_links_stage_whose_worker_is_waiting_on_reddit(fake_reddit, tmp_path, webtext_cli):
    run = tmp_path / "run"
    fake_reddit.server.ratelimit_budget, fake_reddit.server.ratelimit_window_s = 1, 3600  # PRAW then waits an hour
    links = ["links", run, "--praw-site", fake_reddit.site, "--praw-subreddits", "news"]
    stage = start_stage([*links, *LOCAL_RUNNER], env=dict(os.environ, **fake_reddit.env))
    wait_until(lambda: fake_reddit.server.api_requests(), stage, "listing request from a worker")
    time.sleep(0.5)  # PRAW is sleeping in the worker until the rate-limit window resets

    stderr = stop_and_collect(stage, lambda: os.kill(stage.pid, signal.SIGTERM))  # `kill PID`: the stage alone
    assert stage.returncode == 128 + signal.SIGTERM
    assert "webtext links: stopped by SIGTERM during links" in stderr
    assert "Traceback" not in stderr
    assert not Path(layout.RunDir(str(run)).success_path("links")).exists()

    fake_reddit.server.ratelimit_budget = 1000
    assert webtext_cli(*links, "--runner=FnApiRunner") == 0
    assert Path(layout.RunDir(str(run)).success_path("links")).exists()


@pytest.mark.slow
def test_sigterm_to_its_process_group_stops_a_crawl_that_then_resumes(tmp_path, webtext_cli):
    run = tmp_path / "run"
    with serve_sample_web(24, sites=4) as sample:
        write_links(run, sample.urls)
        slow = ["--host-delay", "2", *SAMPLE_OPTIONS[2:]]
        crawl = start_stage(["crawl", run, *slow, *LOCAL_RUNNER])
        wait_until(lambda: len(journal_at_kill(Path(run))) >= 4, crawl, "finished links")

        stderr = stop_and_collect(crawl, lambda: os.killpg(crawl.pid, signal.SIGTERM))  # as Airflow kills a task
        assert crawl.returncode == 128 + signal.SIGTERM
        assert "webtext crawl: stopped by SIGTERM during crawl" in stderr
        assert "Traceback" not in stderr  # workers ending with their group are expected, not reported as errors
        assert not Path(layout.RunDir(str(run)).success_path("crawl")).exists()
        assert len(journal_at_kill(Path(run))) < len(sample.urls)

        assert webtext_cli("crawl", run, *SAMPLE_OPTIONS, "--runner=FnApiRunner") == 0
        assert outcomes(run)[2] == {page.url: page.expect for page in sample.pages}
