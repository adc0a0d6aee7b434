"""Shared pytest fixtures: the real-data folder beside the checkout and small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fake_reddit import *  # noqa: F401,F403 — the fake_reddit fixture (a loopback Reddit API)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _find_shared_data() -> Path | None:
    candidates = [os.environ.get("WEBTEXT_SHARED_DATA"), REPO_ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate, "MANIFEST.md").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data in ../shared/data (always present in CI); skips where a clone lacks it."""
    path = _find_shared_data()
    if path is None:
        pytest.skip("../shared/data is absent (it ships beside the project's CI checkout, not with a clone); "
                    "set WEBTEXT_SHARED_DATA to its path to run this test")
    return path


# Pipelines in tests run in-process on Beam's FnApiRunner: nothing depends on a runner download, and start-up is cheap.
BEAM_TEST_ARGS = ["--runner=FnApiRunner"]


@pytest.fixture
def beam_args() -> list[str]:
    return list(BEAM_TEST_ARGS)


@pytest.fixture
def webtext_cli():
    """Runs the `webtext` command line in-process and returns its exit code."""
    from webtext.pipeline.cli import main

    def run(*argv: str) -> int:
        return main([str(a) for a in argv])

    return run
