"""Text generation with a KV cache: temperature, top-k and top-p (nucleus) sampling, decoded with the run's tokenizer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .model import GPT, ConfigError, KVCache
from .config_flags import option, positive_int
from .shard_format import RUN_TOKENIZER


@dataclass
class SamplingConfig:
    """How `webtext sample` draws tokens; each field is also its command-line flag (see options.option)."""

    max_new_tokens: int = option(100, "tokens to generate per sample", type=positive_int, flag="--max-tokens")
    temperature: float = option(1.0, "0 picks the most likely token", min=0)
    top_k: int | None = option(None, "sample from the k most likely tokens only (default: all)", min=1)
    top_p: float | None = option(None, "sample from the fewest tokens whose probability reaches p (default: all)",
                                 min=0, max=1)
    seed: int = option(0, "seed of the sampling")
    stop_at_eot: bool = option(True, "end a sample at the end-of-text token")


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set to -inf every logit outside the top k and outside the smallest set whose probability reaches top_p."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the token that crosses top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate(model: GPT, prompt: list[int] | torch.Tensor, config: SamplingConfig, eot_id: int | None = None,
             num_samples: int = 1) -> list[list[int]]:
    """New token ids for each of `num_samples` continuations of `prompt` (prompt excluded).

    Beyond the context the window slides: each token is predicted from the last block_size tokens."""
    model.eval()
    device = next(model.parameters()).device
    prompt_ids = torch.as_tensor(prompt, dtype=torch.long, device=device).reshape(1, -1)
    if prompt_ids.shape[1] == 0:
        if eot_id is None:
            raise ConfigError("an empty prompt needs the end-of-text id to start from")
        prompt_ids = torch.tensor([[eot_id]], device=device)
    block_size = model.config.block_size
    prompt_ids = prompt_ids[:, -block_size:]  # the model sees at most the last block_size tokens
    max_new = config.max_new_tokens
    batch = prompt_ids.expand(num_samples, -1).contiguous()
    cache = KVCache(model.config, num_samples, min(block_size, prompt_ids.shape[1] + max_new), device,
                    next(model.parameters()).dtype)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    logits, _ = model(batch, kv_cache=cache)
    outputs = torch.empty(num_samples, 0, dtype=torch.long, device=device)
    finished = torch.zeros(num_samples, dtype=torch.bool, device=device)
    for produced in range(1, max_new + 1):
        step_logits = logits[:, -1, :].float()
        if config.temperature <= 0:
            next_ids = step_logits.argmax(dim=-1, keepdim=True)
        else:
            probs = torch.softmax(filter_logits(step_logits / config.temperature, config.top_k, config.top_p), dim=-1)
            next_ids = torch.multinomial(probs, 1, generator=generator)
        outputs = torch.cat([outputs, next_ids], dim=1)
        if eot_id is not None and config.stop_at_eot:
            finished |= next_ids.squeeze(1) == eot_id
            if finished.all():
                break
        if produced == max_new:
            break  # no forward for a token that will not be sampled
        if cache.length < cache.max_len:
            logits, _ = model(next_ids, kv_cache=cache)
        else:  # the context is full: slide the window and recompute the cache over its last block_size tokens
            cache.length = 0
            logits, _ = model(torch.cat([batch, outputs], dim=1)[:, -block_size:], kv_cache=cache)
    results = []
    for row in outputs.tolist():
        if eot_id is not None and config.stop_at_eot and eot_id in row:
            row = row[: row.index(eot_id)]
        results.append(row)
    return results


def find_tokenizer(checkpoint: Path, meta: dict, explicit: str | None = None) -> Path:
    """--tokenizer, else tokenizer.json beside the checkpoint or in its training directory, else the run's."""
    candidates = [Path(explicit)] if explicit else []
    candidates += [checkpoint / "tokenizer.json", checkpoint.parent / "tokenizer.json"]
    if meta.get("run"):
        candidates.append(Path(meta["run"]) / RUN_TOKENIZER)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{checkpoint}: no tokenizer.json found (looked at {[str(c) for c in candidates]}); "
                            "pass --tokenizer")


def load_tokenizer(path: Path):
    """The run's tokenizer; a literal "<|endoftext|>" typed in a prompt stays text, as in the corpus encoding."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.encode_special_tokens = True
    return tokenizer


def eot_id_of(tokenizer, meta: dict) -> int | None:
    if meta.get("eot_id") is not None:
        return int(meta["eot_id"])
    token_id = tokenizer.token_to_id("<|endoftext|>")
    return token_id


def encode_prompt(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)
