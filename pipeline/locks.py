"""One writer per stage output: RUN/<stage>/_LOCK, a flock'ed file on local disks (train.dirlock), an object on gs://.

On gs:// a lock whose holder ran on this host and is gone (a killed writer rerun on the same machine) is taken over;
one from another machine stays until someone deletes it (`gsutil rm RUN/<stage>/_LOCK`), as the error says.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from webtext.train.dirlock import DirLock, Holder, LockHeld, held_by_message

from . import layout, storage
from .storage import StageError

log = logging.getLogger(__name__)


def lock_path(run, stage: str) -> str:
    return run.path(stage, layout.LOCK)


@contextlib.contextmanager
def stage_lock(run, stage: str) -> Iterator[None]:
    """Held while `stage` writes RUN; a second writer gets a StageError naming the holder."""
    path = lock_path(run, stage)
    if "://" not in path:
        try:
            with DirLock(path, f"the {stage} stage's output"):
                yield
        except LockHeld as error:
            raise StageError(str(error)) from None
        return
    holder = Holder.of_this_process()
    try:
        storage.create_new(path, holder.to_json())
    except FileExistsError:
        other = Holder.from_json(storage.read_bytes(path)) if storage.exists(path) else None
        if other is None or not other.gone():
            raise StageError(held_by_message(path, f"the {stage} stage's output", other)
                             + f"; if that process is gone, delete the lock: gsutil rm {path}") from None
        log.warning("%s: taking over the lock of %s, which is gone", path, other.describe())
        storage.delete([path])
        try:
            storage.create_new(path, holder.to_json())
        except FileExistsError:  # another writer took it over first
            raise StageError(held_by_message(path, f"the {stage} stage's output", None)) from None
    try:
        yield
    finally:
        storage.delete([path])
