"""Tokens per second that our shard loader delivers on CPU: random (B, T+1) windows from memory-mapped shards.

python benchmarks/train_loader.py [--run RUN] [--tokens 50000000] [--batch-size 32] [--block-size 1024] [--seconds 5]
Without --run it writes a synthetic shard (random tokens) to a temp dir first; the page cache is warm.
The gather is measured without and with the checks training runs by default (token ids < vocab on every batch,
each shard's sha256 in a background thread started at open), and the sha256 pass alone is timed.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from webtext.train import shard_format
from webtext.train.data import PrefetchingLoader, TrainBatches, WindowIndex, open_split, open_windows

TARGET_GPU_CONSUMPTION = 600_000  # tokens/s: the trainer's target on one H100 (issue 6)


def write_synthetic(root: Path, tokens: int, vocab_size: int = 50257, shard_tokens: int = 25_000_000) -> shard_format.Manifest:
    rng = np.random.default_rng(0)
    infos = []
    for index, start in enumerate(range(0, tokens, shard_tokens)):
        size = min(shard_tokens, tokens - start)
        flat = rng.integers(0, vocab_size - 1, size=size, dtype=np.int64)
        offsets = np.append(np.arange(0, size, 1500, dtype=np.int64), size)
        flat[offsets[1:] - 1] = vocab_size - 1
        name = shard_format.shard_name("train", index)
        stats = shard_format.write_shard_batch(root / name, shard_format.TokenBatch(flat, offsets),
                                               [f"d{index}-{i}" for i in range(len(offsets) - 1)], "uint16")
        infos.append(shard_format.ShardInfo.from_stats(name, "train", stats))
    manifest = shard_format.Manifest(root=root, tokenizer_sha256="0" * 64, vocab_size=vocab_size, eot_id=vocab_size - 1,
                                     dtype="uint16", shards=infos)
    manifest.save()
    return manifest


def measure(next_batch, tokens_per_batch: int, seconds: float) -> tuple[float, int]:
    next_batch()  # first touch
    batches, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        next_batch()
        batches += 1
    return batches * tokens_per_batch / (time.perf_counter() - started), batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="measure on RUN/shards instead of a synthetic shard")
    parser.add_argument("--tokens", type=int, default=50_000_000, help="synthetic tokens to write")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as temp:
        if args.run:
            manifest = shard_format.Manifest.load(Path(args.run) / shard_format.RUN_SHARDS)
        else:
            started = time.perf_counter()
            manifest = write_synthetic(Path(temp), args.tokens)
            print(f"wrote {args.tokens:,} synthetic tokens in {time.perf_counter() - started:.1f} s")
        index = WindowIndex(open_split(manifest, "train"), args.block_size)
        tokens_per_batch = args.batch_size * args.block_size
        print(f"{len(index.shards)} shards, {index.count:,} windows; B={args.batch_size} T={args.block_size}; "
              f"load average {os.getloadavg()[0]:.2f}")

        batches = TrainBatches(index, args.batch_size, seed=0)
        rate, count = measure(batches.next_batch, tokens_per_batch, args.seconds)
        print(f"gather (numpy int64 rows, one thread):     {rate:14,.0f} tokens/s  ({count} batches)  "
              f"{rate / TARGET_GPU_CONSUMPTION:6.1f}x the 600k tokens/s GPU target")

        checked = open_windows(manifest, "train", args.block_size)  # the sha256 thread starts here
        checked_batches = TrainBatches(checked, args.batch_size, seed=0)
        for when in ("while sha256 runs", "after the sha256"):
            checked_rate, count = measure(checked_batches.next_batch, tokens_per_batch, args.seconds)
            checked.confirm()
            print(f"gather, default checks, {when + ':':18s} {checked_rate:14,.0f} tokens/s  ({count} batches)  "
                  f"{checked_rate / rate:6.2f}x the unchecked gather")
        started = time.perf_counter()
        for info in manifest.split("train"):
            assert shard_format.sha256_problem(manifest, info) is None
        print(f"sha256 of the split's shards (once, in the background): {time.perf_counter() - started:.2f} s")

        loader = PrefetchingLoader(TrainBatches(index, args.batch_size, seed=1), torch.device("cpu"))
        try:
            rate, count = measure(loader.next, tokens_per_batch, args.seconds)
        finally:
            loader.close()
        print(f"prefetching loader (thread, torch x/y):   {rate:14,.0f} tokens/s  ({count} batches)  "
              f"{rate / TARGET_GPU_CONSUMPTION:6.1f}x the 600k tokens/s GPU target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
