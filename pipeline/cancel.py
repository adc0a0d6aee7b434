"""Stopping a stage on SIGTERM or Ctrl-C: the signal raises `Cancelled` in the stage, its Beam job is cancelled (the
local runner's workers end, a Dataflow job is cancelled through its result), and a watchdog makes sure it exits."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# the local runner's worker handlers and its side of their data and control channels
WORKER_CHANNELS = ("apache_beam.runners.portability.fn_api_runner", "apache_beam.runners.worker")
GRACE_SECONDS = 20.0  # after the signal, how long the stage may take to cancel its job before its processes are killed


class Cancelled(Exception):
    """A signal asked the stage to stop; raised in the main thread wherever the stage was."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_on_signals(grace_seconds: float = GRACE_SECONDS):
    """While inside, SIGTERM and SIGINT raise Cancelled once (later ones are noted and ignored while the stage cleans
    up); if the process is still running `grace_seconds` after the first, its child processes are killed and it
    exits. Outside the main thread (where Python delivers signals) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handle(signum, frame):
        if received:
            log.warning("%s received again: still stopping", signal.Signals(signum).name)
            return
        received.append(signum)
        # the runner's threads and its side of the worker channels fail as its workers end: expected, not news
        threading.excepthook = _quiet
        for name in WORKER_CHANNELS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        watchdog = threading.Timer(grace_seconds, _force_exit, (signum, grace_seconds))
        watchdog.daemon = True
        watchdog.start()
        raise Cancelled(signum)

    previous = {signum: signal.signal(signum, handle) for signum in SIGNALS}
    excepthook, levels = threading.excepthook, {name: logging.getLogger(name).level for name in WORKER_CHANNELS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        threading.excepthook = excepthook
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def cancel_job(result) -> None:
    """Cancels a Beam job that is still running (a Dataflow job through its result handle); says which."""
    from apache_beam.runners.runner import PipelineState

    try:
        state = result.state
        if PipelineState.is_terminal(state):
            return
        job = getattr(result, "job_id", None)
        label = f"Beam job {job() if callable(job) else job}" if job else "the Beam job"
        result.cancel()
        print(f"cancelled {label}", file=sys.stderr)
    except Exception as error:  # a job that cannot be cancelled still must not hide the stop itself
        print(f"could not cancel the Beam job: {error}", file=sys.stderr)


def _quiet(args: threading.ExceptHookArgs) -> None:
    log.debug("thread %s ended with %r while the stage stopped", getattr(args.thread, "name", "?"), args.exc_value)


def _force_exit(signum: int, grace_seconds: float) -> None:
    print(f"{signal.Signals(signum).name}: the stage did not stop within {grace_seconds:.0f}s; killing its processes",
          file=sys.stderr)
    for pid in descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    os._exit(128 + signum)


def descendants(pid: int) -> list[int]:
    """The processes started by `pid`, at any depth (Linux's /proc; elsewhere none are known)."""
    found, pending = [], [pid]
    while pending:
        parent = pending.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                for child in children.read_text().split():
                    found.append(int(child))
                    pending.append(int(child))
    return found
