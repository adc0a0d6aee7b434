"""One writer per stage output: RUN/<stage>/_LOCK, a flock'ed file on local disks (train.dirlock), an object on gs://.

On gs:// nothing tells whether the holder still lives (it may run on another machine): a lock left by a killed
writer stays until someone deletes it (`gsutil rm RUN/<stage>/_LOCK`), as the error says.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from webtext.train.dirlock import DirLock, Holder, LockHeld, held_by_message

from . import layout, storage
from .storage import StageError


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
        raise StageError(held_by_message(path, f"the {stage} stage's output", other)
                         + f"; if that process is gone, delete the lock: gsutil rm {path}") from None
    try:
        yield
    finally:
        storage.delete([path])
