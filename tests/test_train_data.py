"""Tests for the shard loader: windows, the per-epoch permutation split over ranks, state, prefetching, memory."""
from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch

from webtext.train import shard_format
from tests.train_support import flip_token_bytes, set_manifest_sha256
from webtext.train.data import (LoaderState, PrefetchingLoader, TrainBatches, WindowIndex, eval_window_ids,
                                open_split, open_windows)
from webtext.train.shard_format import Manifest, ShardFormatError, ShardInfo, TokenBatch

EOT = 999


def write_counting_run(root: Path, shard_sizes=(1000, 601, 350), block_size: int = 16) -> Manifest:
    """Shards whose tokens count up (mod EOT) so every window's origin can be read off its values."""
    infos, start = [], 0
    for index, size in enumerate(shard_sizes):
        tokens = (np.arange(start, start + size) % EOT).astype(np.uint16)
        tokens[-1] = EOT
        name = shard_format.shard_name("train", index)
        batch = TokenBatch(tokens, np.array([0, size]))
        stats = shard_format.write_shard_batch(root / name, batch, [f"d{index}"], "uint16")
        infos.append(ShardInfo.from_stats(name, "train", stats))
        start += size
    manifest = Manifest(root=root, tokenizer_sha256="0" * 64, vocab_size=1000, eot_id=EOT, dtype="uint16", shards=infos)
    manifest.save()
    return manifest


def test_windows_are_consecutive_tokens_of_one_shard(tmp_path):
    manifest = write_counting_run(tmp_path)
    index = WindowIndex(open_split(manifest, "train"), block_size=16)
    assert index.count == (1000 - 1) // 16 + (601 - 1) // 16 + (350 - 1) // 16
    rows = index.gather(np.arange(index.count))
    assert rows.shape == (index.count, 17) and rows.dtype == np.int64
    steps = np.diff(rows[:, :-1], axis=1)
    assert np.all((steps == 1) | (steps == 1 - EOT))  # consecutive (the counter wraps at EOT)
    shard_tokens = [shard_format.Shard(manifest.path_of(info)).tokens for info in manifest.shards]
    assert np.array_equal(rows[0], shard_tokens[0][:17])
    assert np.array_equal(rows[62], shard_tokens[1][:17])  # first window of the second shard
    assert np.array_equal(rows[-1], shard_tokens[2][16 * 20: 16 * 21 + 1])


def test_an_epoch_visits_every_window_once_split_over_ranks_without_overlap(tmp_path):
    manifest = write_counting_run(tmp_path)
    index = WindowIndex(open_split(manifest, "train"), block_size=16)
    world, micro = 3, 4
    loaders = [TrainBatches(index, micro, rank, world, seed=7) for rank in range(world)]
    steps_per_epoch = index.count // (world * micro)
    seen = []
    for _ in range(steps_per_epoch):
        step_ids = [loader.next_window_ids() for loader in loaders]
        flat = np.concatenate(step_ids)
        assert len(set(flat.tolist())) == world * micro  # no overlap between ranks within a step
        seen.extend(flat.tolist())
    assert len(set(seen)) == len(seen) == steps_per_epoch * world * micro  # nothing twice in an epoch
    assert all(loader.state.epoch == 0 for loader in loaders)
    next_ids = loaders[0].next_window_ids()  # rolls over: epoch 1, a different permutation
    assert loaders[0].state.epoch == 1 and loaders[0].state.position == world * micro
    assert len(next_ids) == micro and next_ids.tolist() != seen[:micro]
    other_seed = TrainBatches(index, micro, 0, world, seed=8).next_window_ids()
    assert other_seed.tolist() != seen[:micro]


def test_rank_slices_equal_the_single_process_accumulation_order(tmp_path):
    """Rank r of W ranks gets exactly what micro-step r of one process with W accumulation steps gets."""
    manifest = write_counting_run(tmp_path)
    index = WindowIndex(open_split(manifest, "train"), block_size=16)
    single = TrainBatches(index, 4, 0, 1, seed=3)
    ranks = [TrainBatches(index, 4, r, 2, seed=3) for r in range(2)]
    for _ in range(10):
        expected = [single.next_window_ids(), single.next_window_ids()]
        for rank, loader in enumerate(ranks):
            assert np.array_equal(loader.next_window_ids(), expected[rank])


def test_state_restores_the_exact_batch_sequence(tmp_path):
    manifest = write_counting_run(tmp_path)
    index = WindowIndex(open_split(manifest, "train"), block_size=16)
    uninterrupted = TrainBatches(index, 5, seed=11)
    reference = [uninterrupted.next_batch() for _ in range(40)]  # crosses epoch boundaries (count // 5 = 19)
    first = TrainBatches(index, 5, seed=11)
    for _ in range(23):
        first.next_batch()
    state = LoaderState.from_dict(first.state.to_dict())
    resumed = TrainBatches(index, 5, state=state)
    for expected in reference[23:]:
        assert np.array_equal(resumed.next_batch(), expected)


def test_prefetching_loader_reports_the_state_of_consumed_batches(tmp_path):
    manifest = write_counting_run(tmp_path)
    index = WindowIndex(open_split(manifest, "train"), block_size=16)
    plain = TrainBatches(index, 4, seed=5)
    expected = [plain.next_batch() for _ in range(6)]
    loader = PrefetchingLoader(TrainBatches(index, 4, seed=5), torch.device("cpu"), depth=4)
    try:
        for batch in expected[:3]:
            x, y = loader.next()
            assert torch.equal(x, torch.from_numpy(batch[:, :-1])) and torch.equal(y, torch.from_numpy(batch[:, 1:]))
        state = loader.state_dict()
    finally:
        loader.close()
    assert state == {"seed": 5, "epoch": 0, "position": 12}  # 3 batches of 4, whatever was prefetched
    resumed = PrefetchingLoader(TrainBatches(index, 4, state=LoaderState.from_dict(state)), torch.device("cpu"))
    try:
        for batch in expected[3:]:
            x, _ = resumed.next()
            assert torch.equal(x, torch.from_numpy(batch[:, :-1]))
    finally:
        resumed.close()


def test_eval_windows_are_fixed_and_split_over_ranks(tmp_path):
    manifest = write_counting_run(tmp_path)
    index = WindowIndex(open_split(manifest, "train"), block_size=16)
    per_rank = [eval_window_ids(index, 4, 3, rank, 2) for rank in range(2)]
    assert all(len(batches) == 3 for batches in per_rank)
    flat = np.concatenate([np.concatenate(batches) for batches in per_rank])
    assert len(set(flat.tolist())) == 24
    assert all(np.array_equal(a, b) for a, b in zip(per_rank[0], eval_window_ids(index, 4, 3, 0, 2)))


def test_too_small_splits_are_refused(tmp_path):
    manifest = write_counting_run(tmp_path, shard_sizes=(10,))
    with pytest.raises(ShardFormatError, match="no window of 17 tokens"):
        WindowIndex(open_split(manifest, "train"), block_size=16)
    with pytest.raises(ShardFormatError, match="no shards in split 'val'"):
        open_split(manifest, "val")
    index = WindowIndex(open_split(manifest, "train"), block_size=4)
    with pytest.raises(ValueError, match="one step needs 8 windows"):
        TrainBatches(index, 4, 0, 2)


def _rss_anon_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def test_reading_a_whole_epoch_keeps_anonymous_memory_flat(tmp_path):
    """The shard stays in the page cache (file-backed, evictable); our own memory does not grow with it."""
    size = 12_000_000  # 24 MB of uint16; as int64 in RAM it would be 96 MB
    tokens = (np.arange(size) % EOT).astype(np.uint16)
    tokens[-1] = EOT
    name = shard_format.shard_name("train", 0)
    stats = shard_format.write_shard_batch(tmp_path / name, TokenBatch(tokens, np.array([0, size])), ["big"], "uint16")
    del tokens
    manifest = Manifest(root=tmp_path, tokenizer_sha256="0" * 64, vocab_size=1000, eot_id=EOT, dtype="uint16",
                        shards=[ShardInfo.from_stats(name, "train", stats)])
    gc.collect()
    before = _rss_anon_bytes()
    index = WindowIndex(open_split(manifest, "train"), block_size=1024)
    batches = TrainBatches(index, 32, seed=0)
    checksum = 0
    for _ in range(index.count // 32):  # one full epoch: every page of the shard is read
        checksum += int(batches.next_batch()[:, 0].sum())
    growth = _rss_anon_bytes() - before
    assert checksum > 0
    assert growth < 8 * 1024 * 1024, f"anonymous memory grew by {growth / 1e6:.1f} MB"


def test_a_damaged_shard_is_named_when_a_batch_draws_from_it(tmp_path):
    manifest = write_counting_run(tmp_path)
    flip_token_bytes(manifest.path_of(manifest.shards[1]))
    index = open_windows(manifest, "train", block_size=16, checksums=False)
    first_shard_windows = (1000 - 1) // 16
    index.gather(np.arange(first_shard_windows))  # the intact shard reads as before
    with pytest.raises(ShardFormatError, match=r"train-00001.arrow: token id \d+ at token \d+ is outside the "
                                               r"vocabulary of 1000: the shard is damaged"):
        index.gather(np.arange(index.count))
    loader = PrefetchingLoader(TrainBatches(index, index.count, seed=0), torch.device("cpu"))
    try:
        with pytest.raises(ShardFormatError, match="train-00001.arrow"):  # itself, not the prefetch thread's wrapper
            loader.next()
    finally:
        loader.close()


def test_a_wrong_sha256_is_found_in_the_background_by_the_rank_that_checks_that_shard(tmp_path):
    manifest = write_counting_run(tmp_path)
    set_manifest_sha256(tmp_path, "train-00001.arrow", "0" * 64)
    manifest = Manifest.load(tmp_path)
    rank0 = open_windows(manifest, "train", block_size=16, rank=0, world_size=2)  # shards 0 and 2
    rank0.confirm()
    rank1 = open_windows(manifest, "train", block_size=16, rank=1, world_size=2)  # shard 1
    with pytest.raises(ShardFormatError, match="train-00001.arrow: sha256 [0-9a-f]{64} differs from the manifest's 0{64}"):
        rank1.confirm()
    with pytest.raises(ShardFormatError, match="train-00001.arrow: sha256"):  # and from then on, on every batch
        rank1.gather(np.arange(4))
