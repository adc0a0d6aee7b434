"""Atomic writes: a file or directory is built under a temporary name beside its target, fsynced, then renamed into place."""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"

DISK_REFUSALS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                 errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "not permitted"}
_OS_ERROR_NUMBER = re.compile(r"\(os error (\d+)\)")  # how the safetensors package reports an OSError


class DiskError(Exception):
    """A write the file system refused (full, read-only, not allowed), naming what was being written; the temporary
    files of that write are gone and what was at its path before is intact."""

    def __init__(self, reason: str, path: str | os.PathLike):
        super().__init__(f"{reason} while writing {path}")
        self.reason = reason


def refusal(error: BaseException) -> str | None:
    """Why the file system refused a write, when `error` (or its cause) is such a refusal: "no space left on device"."""
    while error is not None:
        if isinstance(error, DiskError):
            return error.reason
        number = error.errno if isinstance(error, OSError) else None
        if number is None:
            found = _OS_ERROR_NUMBER.search(str(error))
            number = int(found.group(1)) if found else None
        if number in DISK_REFUSALS:
            return DISK_REFUSALS[number]
        error = error.__cause__ or error.__context__
    return None


def fsync_dir(directory: str | os.PathLike) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync a file, or every file and directory under a directory."""
    if path.is_dir():
        for child in path.iterdir():
            fsync_tree(child)
        fsync_dir(path)
    else:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _discard(path: Path) -> None:
    """_remove, quietly: cleaning up after a failed write must not hide its error."""
    try:
        _remove(path)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields `.tmp-NAME-PID` beside `path` to write a file or directory into; when the block succeeds it is
    fsynced and renamed to `path`, and when the block fails it is deleted. A write the file system refuses (disk
    full, read-only) is a DiskError naming `path`.

    A directory already at `path` is renamed to `.trash-NAME-PID` for the swap, then deleted: a crash between the
    two renames leaves that copy for the caller to restore (see checkpoint.remove_stale_temps).
    """
    path = Path(path)
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}-{os.getpid()}")
    try:
        _remove(temp)
        yield temp
        fsync_tree(temp)
        if path.is_dir():
            trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{os.getpid()}")
            os.rename(path, trash)
            os.rename(temp, path)
            shutil.rmtree(trash)
        else:
            os.replace(temp, path)
    except Exception as error:
        _discard(temp)
        reason = refusal(error)
        if reason is None:
            raise
        raise DiskError(reason, path) from None
    finally:
        _discard(temp)
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)
