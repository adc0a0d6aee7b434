"""GPT-2 as the paper and the released checkpoints define it: learned positions, pre-norm blocks, tanh GELU,
tied embeddings, the scaled residual init, SDPA attention and a vocabulary padded for speed."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from .chunked_loss import chunked_cross_entropy

GPT2_VOCAB_SIZE = 50257
ATTENTION_CHOICES = ("cudnn", "flash", "efficient", "auto")  # the SDPA backend tried first on CUDA


class ConfigError(ValueError):
    """A model or training setting that cannot work; the message names it."""


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = GPT2_VOCAB_SIZE
    vocab_multiple: int = 128  # the embedding is padded to a multiple of this; padded ids are never used
    layer_norm_epsilon: float = 1e-5
    padded_vocab_size: int = field(init=False)

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "vocab_multiple"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        epsilon = self.layer_norm_epsilon
        if not isinstance(epsilon, numbers.Real) or isinstance(epsilon, bool) or not 0 < epsilon < 1:
            raise ConfigError(f"layer_norm_epsilon must be a number in (0, 1), got {epsilon!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        padded = math.ceil(self.vocab_size / self.vocab_multiple) * self.vocab_multiple
        object.__setattr__(self, "padded_vocab_size", padded)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    @classmethod
    def from_dict(cls, record: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls) if f.init}
        unknown = set(record) - known - {"padded_vocab_size"}
        if unknown:
            raise ConfigError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**{key: value for key, value in record.items() if key in known})


# The released GPT-2 sizes, and small ones for CPU work and tests.
MODEL_SHAPES: dict[str, dict[str, int]] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
    "nano": dict(n_layer=6, n_head=6, n_embd=384),
    "mini": dict(n_layer=4, n_head=4, n_embd=128),
    "tiny": dict(n_layer=2, n_head=2, n_embd=64),
}


def named_config(name: str, **overrides) -> GPTConfig:
    """A named shape with overrides; None values in `overrides` are ignored."""
    if name not in MODEL_SHAPES:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_SHAPES)} or give n_layer/n_head/n_embd")
    values = dict(MODEL_SHAPES[name])
    values.update({key: value for key, value in overrides.items() if value is not None})
    return GPTConfig(**values)


class KVCache:
    """Preallocated keys and values of every layer for incremental decoding."""

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device, dtype: torch.dtype):
        if max_len > config.block_size:
            raise ValueError(f"a KV cache of {max_len} positions exceeds the context of {config.block_size}")
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # positions filled so far

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions > {self.max_len}")
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor, layer: int = 0, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if kv_cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            past = kv_cache.length
            k, v = kv_cache.update(layer, k, v)
            if past == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            elif T == 1:
                y = F.scaled_dot_product_attention(q, k, v)
            else:  # several new queries after a cached prefix: query i sees keys up to past + i
                visible = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, layer: int = 0, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), layer, kv_cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight
        self.loss_chunk_rows = 0  # > 0: compute the loss in row chunks without materialising all logits
        self.loss_chunk_compiled = False  # compile each chunk's arithmetic (torch.compile; meant for CUDA)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2's init: N(0, 0.02) weights, positions N(0, 0.01), residual projections / sqrt(2 n_layer)."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith("c_proj") else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=0.02)
        nn.init.normal_(self.transformer.wpe.weight, mean=0.0, std=0.01)
        self.transformer.wte.weight[self.config.vocab_size:].zero_()

    def num_parameters(self, include_positions: bool = True) -> int:
        """Parameters of the unpadded model (tied embedding counted once)."""
        total = sum(p.numel() for p in self.parameters())
        total -= (self.config.padded_vocab_size - self.config.vocab_size) * self.config.n_embd
        if not include_positions:
            total -= self.transformer.wpe.weight.numel()
        return total

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward): 6N plus the attention score and value matmuls."""
        T = seq_len or self.config.block_size
        cfg = self.config
        return 6 * self.num_parameters(include_positions=False) + 12 * cfg.n_layer * cfg.n_embd * T

    def hidden_states(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T = idx.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds the context of {self.config.block_size}")
        positions = torch.arange(start, start + T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(positions)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, layer, kv_cache)
        if kv_cache is not None:
            kv_cache.length += T
        return self.transformer.ln_f(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the real vocabulary only: the padded columns are never exposed."""
        return self.lm_head(hidden)[..., : self.config.vocab_size]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """With targets: (None, mean loss). Without: (logits of the last position, None); use `logits()` for all."""
        hidden = self.hidden_states(idx, kv_cache)
        if targets is None:
            return self.logits(hidden[:, -1:, :]), None
        if self.loss_chunk_rows > 0:
            loss = chunked_cross_entropy(hidden.flatten(0, 1), self.lm_head.weight, targets.flatten(),
                                         self.config.vocab_size, self.loss_chunk_rows, self.loss_chunk_compiled)
        else:
            logits = self.logits(hidden)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)
        return None, loss


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (linear weights and embeddings) only; none on biases and LayerNorm."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
