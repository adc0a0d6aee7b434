"""Full disks and read-only folders for tests: a small tmpfs, or a read-only bind mount, in a private mount namespace
(`unshare`), so nothing outside the command sees it; as root (CI) or wherever user namespaces are allowed."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FULL_DISK = r'''
set -u
dir=$1 src=$2 out=$3 free=$4; shift 4
mount -t tmpfs -o size=64m tmpfs "$dir" || exit 97
cp -a "$src/." "$dir/"
cat /dev/zero > "$dir/.filler" 2>/dev/null
truncate -s "-$free" "$dir/.filler"
"$@"
code=$?
rm -f "$dir/.filler"
cp -a "$dir/." "$out/"
exit $code
'''

READ_ONLY = r'''
set -u
dir=$1; shift
mount --bind "$dir" "$dir" && mount -o remount,bind,ro "$dir" || exit 97
"$@"
'''


def _unshare() -> list[str]:
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]


@functools.cache
def _why_no_mounts() -> str:
    """'' where this process may mount in a private namespace; else why not."""
    if shutil.which("unshare") is None:
        return "no `unshare` command (util-linux) to make a private mount namespace"
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run([*_unshare(), "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {folder}"],
                              capture_output=True, text=True)
    if done.returncode:
        return f"cannot mount in a private namespace here (no root, no user namespaces): {done.stderr.strip()}"
    return ""


def needs_mounts() -> None:
    if _why_no_mounts():
        pytest.skip(_why_no_mounts())


def run_on_full_disk(folder: Path, argv: list[str], free: str = "16k", source: Path | None = None,
                     env: dict | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    """Runs argv with `folder` a tmpfs holding a copy of `source` and only `free` bytes left; returns the result
    and a copy of what the tmpfs held at the end (beside `folder`, named after it + "-after")."""
    needs_mounts()
    source = source or folder
    after = folder.with_name(folder.name + "-after")
    folder.mkdir(parents=True, exist_ok=True)
    after.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([*_unshare(), "sh", "-c", FULL_DISK, "sh", str(folder), str(source), str(after), free,
                           *argv], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode != 97, done.stderr
    return done, after


def run_on_read_only(folder: Path, argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs argv with `folder` and everything under it read-only (for root too, unlike chmod)."""
    needs_mounts()
    done = subprocess.run([*_unshare(), "sh", "-c", READ_ONLY, "sh", str(folder), *argv], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode != 97, done.stderr
    return done


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes: what a failed command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_files(folder: Path) -> list[str]:
    """Files or folders left by an interrupted atomic write (storage's NAME.tmp-…, the trainer's .tmp-NAME-PID)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp-" in p.name)
