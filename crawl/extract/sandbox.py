"""Extraction in a child process with a per-page time limit and a memory limit.

A pathological page is killed with its process (reject `extract-timeout`) instead of hanging a worker thread that
Python could never stop; a page that needs too much memory is a reject (`extract-error`), not a dead worker.
"""
from __future__ import annotations

import importlib
import multiprocessing
import os
import threading
import time
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Iterator

from .language import identify_language
from .pages import ExtractConfig, Page, PageResult, process_page, quiet_libraries

# A fresh interpreter, not a fork: a Beam worker has gRPC and other threads whose locks a forked child would inherit.
_CONTEXT = multiprocessing.get_context("spawn")
# Numeric libraries in the child start one thread each (their pools would count against the memory limit).
_CHILD_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_environment_lock = threading.Lock()


class ExtractionSandbox:
    """Processes pages in a child process, at most `timeout` seconds each; a page over time kills the child
    (the page is rejected `extract-timeout`) and the next page starts a fresh one. Not thread-safe."""

    STARTUP_SECONDS = 120.0

    def __init__(self, config: ExtractConfig, timeout: float = 30.0, memory_mb: int = 0):
        self.config, self.timeout, self.memory_mb = config, timeout, memory_mb
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None
        self._ready = False
        self.restarts = 0  # children killed or lost, each replaced by a fresh one

    def start(self) -> None:
        """Spawns the child now, so it imports its libraries while the caller goes on; `process` waits for it."""
        if self._process is None:
            self._spawn()

    def process(self, page: Page) -> PageResult:
        started = time.perf_counter()
        if not self._ready:
            self._start()
        assert self._connection is not None
        try:
            try:
                self._connection.send(page)
            except (BrokenPipeError, ConnectionResetError):  # the child died while idle (e.g. killed for memory)
                self._stop()
                self.restarts += 1
                self._start()
                self._connection.send(page)
            if not self._connection.poll(self.timeout):
                self._stop()
                self.restarts += 1
                return PageResult("extract-timeout", f"no result within {self.timeout:g}s",
                                  seconds=time.perf_counter() - started)
            return self._connection.recv()
        except (EOFError, OSError) as error:
            code = self._stop()
            self.restarts += 1
            return PageResult("extract-error", f"the extraction process died ({code}): {error}"[:300],
                              seconds=time.perf_counter() - started)

    def close(self) -> None:
        if self._process is not None:
            self._connection.close()  # the child ends when its input does
            self._process.join(timeout=5)
            self._stop()

    def _spawn(self) -> None:
        ours, theirs = _CONTEXT.Pipe()
        process = _CONTEXT.Process(target=serve_pages, args=(theirs, self.config, self.memory_mb),
                                   name="webtext-extraction", daemon=True)
        with _child_environment():
            process.start()
        theirs.close()  # only the child holds its end: its death is an EOF here
        self._process, self._connection = process, ours

    def _start(self) -> None:
        """Waits for the spawned (or a newly spawned) child to say it is ready."""
        if self._process is None:
            self._spawn()
        assert self._connection is not None
        try:
            if not self._connection.poll(self.STARTUP_SECONDS):
                raise TimeoutError(f"no answer within {self.STARTUP_SECONDS:g}s")
            ready = self._connection.recv()
        except (TimeoutError, EOFError, OSError) as error:
            self._stop()
            raise RuntimeError(f"the extraction sandbox did not start: {error!r}") from None
        if ready != "ready":
            self._stop()
            raise RuntimeError(f"the extraction sandbox answered {ready!r} instead of 'ready'")
        self._ready = True

    def _stop(self) -> int | None:
        process, connection = self._process, self._connection
        self._process, self._connection, self._ready = None, None, False
        if connection is not None:
            connection.close()
        if process is None:
            return None
        if process.is_alive():
            process.kill()
        process.join()
        code = process.exitcode
        process.close()
        return code

    def __enter__(self) -> ExtractionSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def _child_environment() -> Iterator[None]:
    """The child's environment variables, set while it starts (a spawned child copies this process's)."""
    with _environment_lock:
        saved = {name: os.environ.get(name) for name in _CHILD_ENVIRONMENT}
        os.environ.update(_CHILD_ENVIRONMENT)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class InlineExtractor:
    """The same interface without a child process or time limit (benchmarks, tests, trusted input)."""

    def __init__(self, config: ExtractConfig):
        self.config = config

    def process(self, page: Page) -> PageResult:
        return process_page(page, self.config)

    def close(self) -> None:
        pass


def serve_pages(connection: Connection, config: ExtractConfig, memory_mb: int) -> None:
    """The child: under the memory limit, answer each page with its PageResult until the parent closes the pipe."""
    quiet_libraries()
    if memory_mb:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    importlib.import_module("trafilatura")  # before answering "ready", so the first page is not slow

    identify_language("warm up the model")
    connection.send("ready")
    while True:
        try:
            page = connection.recv()
        except EOFError:
            return
        try:
            result = process_page(page, config)
        except MemoryError:
            result = PageResult("extract-error", f"out of memory (limit {memory_mb} MB)")
        connection.send(result)
