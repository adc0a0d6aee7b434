"""Atomic writes: a file or directory is built under a temporary name beside its target, fsynced, then renamed into place."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields `.tmp-NAME-PID` beside `path` to write a file or directory into; when the block succeeds it is
    fsynced and renamed to `path`, and when the block fails it is deleted.

    A directory already at `path` is renamed to `.trash-NAME-PID` for the swap, then deleted: a crash between the
    two renames leaves that copy for the caller to restore (see checkpoint.remove_stale_temps).
    """
    path = Path(path)
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}-{os.getpid()}")
    _remove(temp)
    try:
        yield temp
        fsync_tree(temp)
        if path.is_dir():
            trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{os.getpid()}")
            os.rename(path, trash)
            os.rename(temp, path)
            shutil.rmtree(trash)
        else:
            os.replace(temp, path)
    finally:
        _remove(temp)
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)
