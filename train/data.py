"""The shard loader: (x, y) windows of block_size + 1 tokens from memory-mapped shards, a seeded permutation per
epoch split across ranks, prefetched; its state goes into checkpoints so a resumed run sees the same batches.
Damaged shards are found without slowing it: totals at open, token ids per batch, sha256 in a background thread."""
from __future__ import annotations

import queue
import threading
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .shard_format import BackgroundChecksums, Manifest, Shard, ShardFormatError, check_manifest, check_shard


def open_split(manifest: Manifest, split: str) -> list[Shard]:
    """Memory-map every shard of a split, checking each against its manifest entry (cheap checks only)."""
    check_manifest(manifest, splits=[split])
    shards = []
    for info in manifest.split(split):
        shard = Shard(manifest.path_of(info))
        check_shard(manifest, info, shard)
        shards.append(shard)
    return shards


class WindowIndex:
    """Numbers every window of a list of shards 0..count-1 and gathers batches of them.

    With `vocab_size`, every gathered batch is checked for token ids outside the vocabulary (a damaged shard);
    with `checksums`, each gather also reports a sha256 mismatch found in the background so far.
    """

    def __init__(self, shards: list[Shard], block_size: int, vocab_size: int | None = None,
                 checksums: BackgroundChecksums | None = None):
        self.block_size = block_size
        self.vocab_size = vocab_size
        self.checksums = checksums
        self.shards = shards  # keeps the memory maps alive
        self.segments = [segment.tokens for shard in shards for segment in shard.segments]
        self.segment_paths = [shard.path for shard in shards for _ in shard.segments]
        self.segment_starts = [int(start) for shard in shards
                               for start in np.cumsum([0] + [len(s.tokens) for s in shard.segments[:-1]])]
        per_segment = [max(0, (len(tokens) - 1) // block_size) for tokens in self.segments]
        self.first_window = np.concatenate([[0], np.cumsum(per_segment)]).astype(np.int64)
        self.count = int(self.first_window[-1])
        if self.count == 0:
            raise ShardFormatError(f"no window of {block_size + 1} tokens fits in shards "
                                   f"{[str(shard.path) for shard in shards]}")

    def gather(self, window_ids: np.ndarray, out: np.ndarray | None = None, dtype=np.int64) -> np.ndarray:
        """Rows of block_size + 1 tokens (int64 unless `dtype` says), copied out of the memory maps."""
        out = np.empty((len(window_ids), self.block_size + 1), dtype=dtype) if out is None else out
        segment_ids = np.searchsorted(self.first_window, window_ids, side="right") - 1
        starts = (window_ids - self.first_window[segment_ids]) * self.block_size
        for row, (segment_id, start) in enumerate(zip(segment_ids.tolist(), starts.tolist())):
            out[row] = self.segments[segment_id][start:start + self.block_size + 1]
        if self.vocab_size is not None and out.size and int(out.max()) >= self.vocab_size:
            self._refuse_out_of_vocabulary(out, segment_ids, starts)
        if self.checksums is not None:
            self.checksums.raise_if_failed()
        return out

    def _refuse_out_of_vocabulary(self, rows: np.ndarray, segment_ids: np.ndarray, starts: np.ndarray):
        row, column = (int(i) for i in np.argwhere(rows >= self.vocab_size)[0])
        segment_id = int(segment_ids[row])
        position = self.segment_starts[segment_id] + int(starts[row]) + column
        raise ShardFormatError(f"{self.segment_paths[segment_id]}: token id {int(rows[row, column])} at token {position} "
                               f"is outside the vocabulary of {self.vocab_size}: the shard is damaged "
                               "(--verify-shards checks every shard in full before training)")

    def confirm(self) -> None:
        """Wait for the background sha256 checks of these shards; raises ShardFormatError on a mismatch."""
        if self.checksums is not None:
            self.checksums.wait()


def open_windows(manifest: Manifest, split: str, block_size: int, rank: int = 0, world_size: int = 1,
                 checksums: bool = True) -> WindowIndex:
    """The windows of a split with the default checks: totals at open, token ids on every batch drawn and, with
    `checksums`, this rank's share of the split's sha256 (every world_size-th shard) in a background thread."""
    shards = open_split(manifest, split)
    background = BackgroundChecksums(manifest, manifest.split(split)[rank::world_size]) if checksums else None
    return WindowIndex(shards, block_size, vocab_size=manifest.vocab_size, checksums=background)


@dataclass
class LoaderState:
    seed: int
    epoch: int = 0
    position: int = 0  # windows of this epoch's permutation consumed by all ranks together

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> "LoaderState":
        return cls(seed=int(record["seed"]), epoch=int(record["epoch"]), position=int(record["position"]))


class TrainBatches:
    """Endless batches of (x, y): each step all ranks take the next world * micro_batch windows of a
    seeded permutation, rank r the r-th slice; an epoch ends when fewer than that remain."""

    def __init__(self, index: WindowIndex, micro_batch: int, rank: int = 0, world_size: int = 1,
                 state: LoaderState | None = None, seed: int = 0):
        if world_size * micro_batch > index.count:
            raise ShardFormatError(f"one step needs {world_size * micro_batch} windows, the split has only {index.count}")
        self.index = index
        self.micro_batch = micro_batch
        self.rank = rank
        self.world_size = world_size
        self.state = state or LoaderState(seed=seed)
        self._permutation_epoch: int | None = None
        self._permutation = np.empty(0, dtype=np.int64)

    def _order(self, epoch: int) -> np.ndarray:
        if self._permutation_epoch != epoch:
            rng = np.random.default_rng([self.state.seed, epoch])
            self._permutation = rng.permutation(self.index.count)
            self._permutation_epoch = epoch
        return self._permutation

    def next_window_ids(self) -> np.ndarray:
        """This rank's window ids for the next micro-batch; advances the shared state."""
        per_step = self.world_size * self.micro_batch
        if self.state.position + per_step > self.index.count:
            self.state.epoch += 1
            self.state.position = 0
        order = self._order(self.state.epoch)
        start = self.state.position + self.rank * self.micro_batch
        self.state.position += per_step
        return order[start:start + self.micro_batch]

    def next_batch(self, dtype=np.int64) -> np.ndarray:
        return self.index.gather(self.next_window_ids(), dtype=dtype)


class PrefetchingLoader:
    """Runs TrainBatches in a background thread, `depth` batches ahead, into pinned memory when on CUDA.

    On CUDA, uint16 tokens travel as int32 (half the bytes of int64) and are widened on the device.

    `state_dict()` describes the batches handed out so far, not those prefetched.
    """

    def __init__(self, batches: TrainBatches, device: torch.device, depth: int = 4):
        self.batches = batches
        self.device = torch.device(device)
        self.depth = depth
        self.pin = self.device.type == "cuda"
        narrow = self.pin and all(shard.dtype == "uint16" for shard in batches.index.shards)
        self.wire_dtype = np.int32 if narrow else np.int64
        self._consumed = LoaderState(**asdict(batches.state))
        self._start()

    def _start(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=self.depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="shard-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                rows = torch.from_numpy(self.batches.next_batch(self.wire_dtype))
                if self.pin:
                    rows = rows.pin_memory()
                item = (rows, LoaderState(**asdict(self.batches.state)))
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as error:  # surfaced to the consumer
            self._queue.put((error, None))

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows, state = self._queue.get()
        if isinstance(rows, ShardFormatError):
            raise rows
        if state is None:
            raise RuntimeError("the prefetch thread failed") from rows
        self._consumed = state
        rows = rows.to(self.device, non_blocking=self.pin).long()
        return rows[:, :-1], rows[:, 1:]

    def state_dict(self) -> dict:
        return self._consumed.to_dict()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def eval_window_ids(index: WindowIndex, micro_batch: int, max_batches: int | None, rank: int,
                    world_size: int) -> list[np.ndarray]:
    """A fixed, evenly spread choice of validation windows, split across ranks; the same every evaluation."""
    wanted = index.count if max_batches is None else min(index.count, max_batches * micro_batch * world_size)
    per_rank_batches = max(1, wanted // (micro_batch * world_size))
    total = per_rank_batches * micro_batch * world_size
    chosen = np.linspace(0, index.count - 1, num=min(total, index.count)).round().astype(np.int64)
    if len(chosen) < total:  # fewer windows than one batch per rank: repeat windows rather than skip evaluation
        chosen = np.resize(chosen, total)
    mine = chosen.reshape(per_rank_batches, world_size, micro_batch)[:, rank, :]
    return list(mine)

