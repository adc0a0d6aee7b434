"""Training throughput of our GPT-2 trainer against transformers' GPT2LMHeadModel, in the same process.

GPU:   python benchmarks/train_gpu.py [--run RUN] [--batch-sizes 16,32,64] [--steps 30]
CPU:   python benchmarks/train_gpu.py --smoke      (a tiny model for a few steps: checks the script works)

Both sides get the same batches from our loader (RUN/shards when given, else a synthetic shard of random
tokens), bf16 autocast, SDPA attention, fused AdamW and torch.compile on CUDA; prints tokens/s, MFU, memory.
Needs torch, numpy, pyarrow; transformers only for the baseline.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from webtext.train import shards
from webtext.train.data import PrefetchingLoader, TrainBatches, WindowIndex, open_split
from webtext.train.model import GPT, named_config, parameter_groups
from webtext.train.trainer import Distributed, enable_fast_math, optimizer_step, peak_flops


@dataclass
class Measurement:
    system: str
    batch_size: int
    block_size: int
    tokens_per_s: float | None
    step_ms: float | None
    mfu: float | None
    peak_memory_gib: float | None
    note: str = ""


def synthetic_run(root: Path, vocab_size: int, tokens: int) -> Path:
    """A one-shard train split of random tokens (documents of ~2,000 tokens), for machines without a run."""
    rng = np.random.default_rng(0)
    flat = rng.integers(0, vocab_size - 1, size=tokens, dtype=np.int64)
    offsets = np.arange(0, tokens, 2000, dtype=np.int64)
    offsets = np.append(offsets, tokens)
    flat[offsets[1:] - 1] = vocab_size - 1  # every document ends with eot
    shard_dir = root / "shards"
    shard_dir.mkdir(parents=True)
    dtype = shards.dtype_for_vocab(vocab_size)
    stats = shards.write_shard_arrays(shard_dir / "train-00000.arrow", flat, offsets,
                                      [f"doc-{i}" for i in range(len(offsets) - 1)], dtype)
    shards.Manifest(root=shard_dir, tokenizer_sha256="0" * 64, vocab_size=vocab_size, eot_id=vocab_size - 1,
                    dtype=dtype, shards=[shards.ShardInfo.from_stats("train-00000.arrow", "train", stats)]).save()
    return root


class HFAdapter(torch.nn.Module):
    """transformers' GPT2LMHeadModel behind our (x, y) -> (None, loss) interface; same inputs, same loss."""

    def __init__(self, hf_model):
        super().__init__()
        self.hf = hf_model

    def forward(self, x, y):
        logits = self.hf(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        return None, loss


def build_hf(config, device):
    import transformers

    hf_config = transformers.GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size,
                                        n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
                                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf_config._attn_implementation = "sdpa"
    return HFAdapter(transformers.GPT2LMHeadModel(hf_config)).to(device)


def time_system(name: str, model: torch.nn.Module, flops_per_token: float, index: WindowIndex, batch_size: int,
                block_size: int, device: torch.device, args) -> Measurement:
    ctx = Distributed()
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95),
                                  fused=device.type == "cuda")
    runner = torch.compile(model, mode=args.compile_mode) if args.compile else model
    loader = PrefetchingLoader(TrainBatches(index, batch_size, seed=0), device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    try:
        for step in range(args.warmup_steps + args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            loss, _ = optimizer_step(runner, model, optimizer, loader, 1, device, ctx, 1.0)
            loss.item()  # waits for the step to finish
            if step >= args.warmup_steps:
                times.append(time.perf_counter() - started)
    except torch.cuda.OutOfMemoryError:
        return Measurement(name, batch_size, block_size, None, None, None, None, "out of memory")
    finally:
        loader.close()
    step_s = statistics.median(times)
    tokens_per_s = batch_size * block_size / step_s
    peak = peak_flops(device, args.peak_flops)
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return Measurement(name, batch_size, block_size, tokens_per_s, step_s * 1000,
                       tokens_per_s * flops_per_token / peak if peak else None, memory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a run directory with RUN/shards (default: a synthetic shard)")
    parser.add_argument("--model", default="gpt2")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--batch-sizes", default="16,32,64")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    parser.add_argument("--warmup-steps", type=int, default=8, help="untimed steps first (compilation, autotuning)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--compile-mode", help="e.g. max-autotune-no-cudagraphs, reduce-overhead (CUDA graphs)")
    parser.add_argument("--loss-chunk", type=int, default=None, help="rows per loss chunk for ours (0: plain loss)")
    parser.add_argument("--no-hf", dest="hf", action="store_false", help="skip the transformers baseline")
    parser.add_argument("--peak-flops", type=float)
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run that checks the script works")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.block_size, args.batch_sizes = "tiny", 64, "2,4"
        args.steps, args.warmup_steps, args.compile, args.device = 3, 1, False, args.device or "cpu"
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    enable_fast_math(device)
    vocab_size = 50257
    config = named_config(args.model, vocab_size=vocab_size, block_size=args.block_size)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    with tempfile.TemporaryDirectory() as temp:
        run = Path(args.run) if args.run else synthetic_run(Path(temp), vocab_size,
                                                            tokens=max(batch_sizes) * (args.block_size + 1) * 64)
        manifest = shards.Manifest.load(run / "shards")
        if manifest.vocab_size != vocab_size:
            config = named_config(args.model, vocab_size=manifest.vocab_size, block_size=args.block_size)
        index = WindowIndex(open_split(manifest, "train"), args.block_size)
        print(f"# device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
              f"model {args.model} T={args.block_size}, data {'RUN ' + str(run) if args.run else 'synthetic shard'}, "
              f"compile={args.compile}", flush=True)
        results = []
        for batch_size in batch_sizes:
            torch.manual_seed(0)
            ours = GPT(config).to(device)
            ours.loss_chunk_rows = args.loss_chunk if args.loss_chunk is not None else (8192 if device.type == "cuda" else 0)
            flops = ours.flops_per_token(args.block_size)
            results.append(time_system("ours", ours, flops, index, batch_size, args.block_size, device, args))
            del ours
            if args.hf:
                try:
                    hf = build_hf(config, device)
                except ImportError:
                    print("# transformers not installed: no baseline", file=sys.stderr)
                    args.hf = False
                else:
                    results.append(time_system("transformers", hf, flops, index, batch_size, args.block_size, device, args))
                    del hf
            if device.type == "cuda":
                torch.cuda.empty_cache()
            for m in results[-2:] if args.hf else results[-1:]:
                tps = f"{m.tokens_per_s:,.0f}" if m.tokens_per_s else "-"
                mfu = f"{m.mfu:.1%}" if m.mfu else "-"
                mem = f"{m.peak_memory_gib:.1f} GiB" if m.peak_memory_gib else "-"
                print(f"{m.system:>12}  B={m.batch_size:<3} tokens/s {tps:>12}  step {m.step_ms or 0:8.1f} ms  "
                      f"MFU {mfu:>6}  memory {mem}  {m.note}", flush=True)
        by_batch = {}
        for m in results:
            by_batch.setdefault(m.batch_size, {})[m.system] = m
        for batch_size, systems in by_batch.items():
            if "transformers" in systems and systems["ours"].tokens_per_s and systems["transformers"].tokens_per_s:
                print(f"B={batch_size}: ours / transformers = "
                      f"{systems['ours'].tokens_per_s / systems['transformers'].tokens_per_s:.2f}x")
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(m) for m in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
