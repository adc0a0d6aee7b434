"""One writer per directory on a local disk: a lock file, held with flock, that names its holder (pid, host, start).

The kernel drops a flock when its process ends, however it ends, so the file left by a killed writer is stale by
definition and the next writer takes it over. (flock is reliable on local disks; on NFS it depends on the mount.)
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = "_LOCK"


class LockHeld(RuntimeError):
    """Another process writes the directory; the message names the lock file and its holder."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    started: str  # UTC, ISO 8601
    command: str = ""

    @classmethod
    def of_this_process(cls) -> "Holder":
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(os.getpid(), socket.gethostname(), started, " ".join(["webtext", *sys.argv[1:]])[:200])

    @classmethod
    def from_json(cls, data: bytes) -> "Holder | None":
        try:
            record = json.loads(data)
            return cls(int(record["pid"]), str(record["host"]), str(record["started"]), str(record.get("command", "")))
        except (ValueError, KeyError, TypeError):
            return None

    def to_json(self) -> bytes:
        return (json.dumps({"pid": self.pid, "host": self.host, "started": self.started, "command": self.command})
                + "\n").encode()

    def gone(self) -> bool:
        """True when the holder ran on this host and its process no longer exists (a killed writer's lock)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, under another user
            return False
        return False

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.started}" + (f" ({self.command})" if self.command else "")


def held_by_message(lock: str, what: str, holder: Holder | None) -> str:
    who = holder.describe() if holder else "another process"
    return f"{lock}: {what} is being written by {who}; wait for it to end (or stop it), then run again"


class DirLock:
    """The lock of one directory's writer: `with DirLock(DIR / LOCK_NAME, "what DIR is"):` raises LockHeld when taken."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None
        self._made_directory = False

    def acquire(self) -> "DirLock":
        self._made_directory = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes (PEP 446)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = Holder.from_json(os.pread(fd, 4096, 0))
                os.close(fd)
                raise LockHeld(held_by_message(str(self.path), self.what, holder)) from None
            if self._still_at_path(fd):
                break
            os.close(fd)  # the holder removed the file between our open and our flock: lock the new one
        previous = Holder.from_json(os.pread(fd, 4096, 0))
        if previous is not None:
            log.warning("%s: taking over the lock of %s, which ended without releasing it", self.path,
                        previous.describe())
        os.ftruncate(fd, 0)
        os.pwrite(fd, Holder.of_this_process().to_json(), 0)
        self._fd = fd
        return self

    def _still_at_path(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it, so nobody locks a file about to vanish
        finally:
            os.close(self._fd)
            self._fd = None
        self._remove_directory_if_made()

    def _remove_directory_if_made(self) -> None:
        """A writer that wrote nothing leaves no directory behind (e.g. a training refused at once)."""
        if self._made_directory:
            with contextlib.suppress(OSError):  # not empty: what the writer wrote stays
                self.path.parent.rmdir()

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
