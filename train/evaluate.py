"""`webtext eval`: the paper's zero-shot tasks (eval_tasks) or, as before, the mean loss and perplexity of
non-overlapping windows of a run's shards or of a plain text file (--task shards)."""
from __future__ import annotations

import json
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


def run_eval(config) -> tuple[dict, str | None]:
    """The figures of `webtext eval` (an EvalConfig) and, for the paper's tasks, their table."""
    from . import eval_tasks
    from .generate import find_tokenizer, load_tokenizer

    eval_tasks.check_config(config)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if config.task == "shards" and not config.suite:
        return _run_shards(config, device, find_tokenizer, load_tokenizer), None
    em = eval_tasks.load_eval_model(config.model, device, config.tokenizer, config.run)
    if config.suite:
        record = eval_tasks.run_suite(em, Path(config.data_dir), config, device)
        return record, eval_tasks.table(record["results"], record["absent"])
    result = {"model": em.source, "step": em.step, **eval_tasks.run_task(em, config.task, Path(config.data), config, device)}
    return result, eval_tasks.table([result])


def _run_shards(config, device: torch.device, find_tokenizer, load_tokenizer) -> dict:
    from . import checkpoint as ckpt

    source = ckpt.resolve_checkpoint(config.model)
    model, meta = ckpt.load_model(source, device)
    if config.text:
        tokenizer = load_tokenizer(find_tokenizer(source, meta, config.tokenizer))
        result = eval_text(model, tokenizer, Path(config.text), config.micro_batch, device, config.batches)
    else:
        run = config.run or meta.get("run")
        if not run:
            raise ConfigError(f"{source}: no run recorded in the checkpoint; pass --run RUN or --text FILE")
        result = eval_shards(model, Path(run), config.split, config.micro_batch, config.batches, device)
    return {"checkpoint": str(source), "step": meta.get("step"), "task": "shards", **result.to_dict()}


def write_json(record: dict, path: str) -> None:
    from .atomic import atomic_write_bytes

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), (json.dumps(record, indent=2) + "\n").encode("utf-8"))
