"""Extraction in a child process with a per-page time limit and a memory limit.

A pathological page is killed with its process (reject `extract-timeout`) instead of hanging a worker thread that
Python could never stop; a page that needs too much memory is a reject (`extract-error`), not a dead worker.
"""
from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import time
from typing import BinaryIO

from .language import identify_language
from .pages import ExtractConfig, Page, PageResult, process_page, quiet_libraries


class _Frames:
    """Length-prefixed pickles over a pair of pipes."""

    def __init__(self, reader: BinaryIO, writer: BinaryIO):
        self.reader, self.writer = reader, writer

    def send(self, value) -> None:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        self.writer.write(struct.pack(">Q", len(data)) + data)
        self.writer.flush()

    def receive(self, deadline: float | None = None):
        size = struct.unpack(">Q", self._read(8, deadline))[0]
        return pickle.loads(self._read(size, deadline))

    def _read(self, size: int, deadline: float | None) -> bytes:
        fd = self.reader.fileno()
        chunks, missing = [], size
        while missing:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    raise TimeoutError
            chunk = os.read(fd, min(missing, 1 << 20))
            if not chunk:
                raise EOFError("the other side closed the pipe")
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)


class ExtractionSandbox:
    """Processes pages in a child process, at most `timeout` seconds each; a page over time kills the child
    (the page is rejected `extract-timeout`) and the next page starts a fresh one. Not thread-safe."""

    STARTUP_SECONDS = 120.0

    def __init__(self, config: ExtractConfig, timeout: float = 30.0, memory_mb: int = 0):
        self.config, self.timeout, self.memory_mb = config, timeout, memory_mb
        self._process: subprocess.Popen | None = None
        self._frames: _Frames | None = None
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
        assert self._frames is not None
        try:
            try:
                self._frames.send(page)
            except BrokenPipeError:  # the child died while idle (e.g. killed for memory): one fresh start
                self._stop()
                self.restarts += 1
                self._start()
                self._frames.send(page)
            result = self._frames.receive(deadline=time.monotonic() + self.timeout)
        except TimeoutError:
            self._stop()
            self.restarts += 1
            return PageResult("extract-timeout", f"no result within {self.timeout:g}s",
                              seconds=time.perf_counter() - started)
        except (EOFError, BrokenPipeError, OSError) as error:
            code = self._stop()
            self.restarts += 1
            return PageResult("extract-error", f"the extraction process died ({code}): {error}"[:300],
                              seconds=time.perf_counter() - started)
        return result

    def close(self) -> None:
        if self._process is not None:
            try:
                self._frames.writer.close()  # the child ends when its input does
                self._process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._stop()

    def _spawn(self) -> None:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self._process = subprocess.Popen([sys.executable, "-m", "webtext.crawl.extract.sandbox", "--sandbox"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._frames = _Frames(self._process.stdout, self._process.stdin)
        self._frames.send((self.config, self.memory_mb))

    def _start(self) -> None:
        """Waits for the spawned (or a newly spawned) child to say it is ready."""
        if self._process is None:
            self._spawn()
        assert self._frames is not None
        try:
            ready = self._frames.receive(deadline=time.monotonic() + self.STARTUP_SECONDS)
        except (TimeoutError, EOFError) as error:
            self._stop()
            raise RuntimeError(f"the extraction sandbox did not start: {error!r}") from None
        if ready != "ready":
            self._stop()
            raise RuntimeError(f"the extraction sandbox answered {ready!r} instead of 'ready'")
        self._ready = True

    def _stop(self) -> int | None:
        process, self._process, self._frames, self._ready = self._process, None, None, False
        if process is None:
            return None
        if process.poll() is None:
            process.kill()
        code = process.wait()
        for pipe in (process.stdin, process.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        return code

    def __enter__(self) -> ExtractionSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InlineExtractor:
    """The same interface without a child process or time limit (benchmarks, tests, trusted input)."""

    def __init__(self, config: ExtractConfig):
        self.config = config

    def process(self, page: Page) -> PageResult:
        return process_page(page, self.config)

    def close(self) -> None:
        pass


def _sandbox_main() -> None:
    """The child: read (config, memory) then pages, answer each with its PageResult, until stdin closes."""
    reader = os.fdopen(os.dup(0), "rb", buffering=0)
    writer = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    quiet_libraries()
    frames = _Frames(reader, writer)
    config, memory_mb = frames.receive()
    if memory_mb:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import trafilatura  # noqa: F401 (imported before answering "ready", so the first page is not slow)

    identify_language("warm up the model")
    frames.send("ready")
    while True:
        try:
            page = frames.receive()
        except EOFError:
            return
        try:
            result = process_page(page, config)
        except MemoryError:
            result = PageResult("extract-error", f"out of memory (limit {memory_mb} MB)")
        frames.send(result)


if __name__ == "__main__" and sys.argv[1:] == ["--sandbox"]:
    from webtext.crawl.extract.sandbox import _sandbox_main as main  # the importable module, so results pickle by its name

    main()
