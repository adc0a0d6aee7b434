"""The run directory: every stage reads and writes under one RUN root, local or any Beam filesystem (gs://…)."""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Iterable

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    mtime: float = 0.0


def join(base: str, *parts: str) -> str:
    path = base
    for part in parts:
        path = FileSystems.join(path, part)
    return path


def match(pattern: str) -> list[FileEntry]:
    """Files matching a glob, sorted by path; an empty list when nothing matches."""
    results = FileSystems.match([pattern])[0].metadata_list
    entries = (FileEntry(m.path, m.size_in_bytes, m.last_updated_in_seconds or 0.0) for m in results)
    return sorted(entries, key=lambda e: e.path)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()


def write_bytes(path: str, data: bytes) -> None:
    """Writes to a temporary name and renames, so readers never see a half-written file.

    The temporary name is unique, so two attempts at the same file (a retried bundle on Dataflow) cannot collide."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def delete(paths: Iterable[str]) -> None:
    paths = [p for p in paths if FileSystems.exists(p)]
    if paths:
        FileSystems.delete(paths)


class RunDir:
    """Paths and small files of one run; big data goes through Beam transforms."""

    def __init__(self, root: str):
        self.root = root.rstrip("/") if "://" in root else root

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    def stage_files(self, pattern: str) -> list[FileEntry]:
        return match(self.path(pattern))

    def read_json(self, *parts: str):
        return json.loads(read_bytes(self.path(*parts)))

    def write_json(self, data, *parts: str) -> None:
        write_bytes(self.path(*parts), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def clear(self, folder: str, patterns: Iterable[str] = ("*",)) -> None:
        """Deletes the files a stage wrote before, so a forced rerun leaves no stale shards."""
        doomed = []
        for pattern in patterns:
            doomed.extend(e.path for e in match(self.path(folder, pattern)))
        delete(sorted(set(doomed)))

    # -- completion markers ---------------------------------------------------------------------------------

    def success_path(self, stage: str) -> str:
        return self.path(stage, SUCCESS)

    def read_success(self, stage: str) -> dict | None:
        path = self.success_path(stage)
        if not exists(path):
            return None
        try:
            return json.loads(read_bytes(path))
        except ValueError:
            log.warning("%s is not valid JSON; the stage will run again", path)
            return None

    def write_success(self, stage: str, fingerprint: str, info: dict | None = None) -> None:
        write_bytes(self.success_path(stage),
                    (json.dumps({"fingerprint": fingerprint, **(info or {})}, indent=2, sort_keys=True) + "\n").encode())


def fingerprint(config: dict, inputs: Iterable[FileEntry], upstream: Iterable[str] = ()) -> str:
    """A hash of a stage's options, its external input files (name, size, mtime) and its upstream stages' fingerprints."""
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for entry in sorted(inputs, key=lambda e: e.path):
        digest.update(f"\n{entry.path}\t{entry.size}\t{entry.mtime:.3f}".encode())
    for upstream_fingerprint in upstream:
        digest.update(f"\n{upstream_fingerprint}".encode())
    return digest.hexdigest()
