"""Evaluation of a checkpoint: mean loss and perplexity on a run's shards or on a plain text file."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .data import open_windows
from .model import GPT, ConfigError
from .shard_format import RUN_SHARDS, Manifest
from .trainer import Distributed, attention_backends, autocast, evaluate


@dataclass
class EvalResult:
    source: str
    loss: float
    perplexity: float
    tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


def _result(source: str, loss: float, tokens: int) -> EvalResult:
    return EvalResult(source=source, loss=loss, perplexity=math.exp(min(loss, 700.0)), tokens=tokens)


def eval_shards(model: GPT, run: Path, split: str, micro_batch: int, max_batches: int | None,
                device: torch.device) -> EvalResult:
    """Mean loss over the windows of a split (all of them, or an even spread of max_batches batches)."""
    manifest = Manifest.load(Path(run) / RUN_SHARDS)
    if manifest.vocab_size != model.config.vocab_size:
        raise ConfigError(f"{run}: the shards have vocab_size {manifest.vocab_size}, the model {model.config.vocab_size}")
    index = open_windows(manifest, split, model.config.block_size)
    loss = evaluate(model, index, micro_batch, max_batches, device, Distributed())
    index.confirm()  # no result from shards whose sha256 is wrong
    batches = max(1, (index.count if max_batches is None else min(index.count, max_batches * micro_batch)) // micro_batch)
    return _result(f"{run}/shards:{split}", loss, batches * micro_batch * model.config.block_size)


@torch.no_grad()
def eval_tokens(model: GPT, token_ids: np.ndarray, micro_batch: int, device: torch.device,
                source: str = "tokens", max_batches: int | None = None) -> EvalResult:
    """Token-weighted mean loss over consecutive non-overlapping windows covering token_ids (or its first max_batches)."""
    block = model.config.block_size
    if len(token_ids) < 2:
        raise ConfigError(f"{source}: needs at least 2 tokens to evaluate")
    model.eval()
    token_ids = np.asarray(token_ids, dtype=np.int64)
    full_windows = (len(token_ids) - 1) // block
    batches = [np.stack([token_ids[w * block: w * block + block + 1] for w in range(first, min(first + micro_batch, full_windows))])
               for first in range(0, full_windows, micro_batch)]
    if (len(token_ids) - 1) % block:
        batches.append(token_ids[full_windows * block:][None])  # the shorter last window
    if max_batches is not None:
        batches = batches[:max_batches]
    total_loss, total_tokens = 0.0, 0
    for rows in batches:
        window = torch.from_numpy(rows).to(device)
        with autocast(device), attention_backends(device):
            _, loss = model(window[:, :-1], window[:, 1:])
        count = window[:, 1:].numel()
        total_loss += float(loss) * count
        total_tokens += count
    return _result(source, total_loss / total_tokens, total_tokens)


def eval_text(model: GPT, tokenizer, text_path: Path, micro_batch: int, device: torch.device,
              max_batches: int | None = None) -> EvalResult:
    text = Path(text_path).read_text(encoding="utf-8")
    ids = np.asarray(tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
    return eval_tokens(model, ids, micro_batch, device, source=str(text_path), max_batches=max_batches)
