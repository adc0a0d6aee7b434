"""Checkpoints: a directory per step (safetensors weights, optimizer, loader and RNG state, meta.json), written
under a temporary name and renamed when complete, so a killed run leaves the earlier checkpoints as they were."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from . import atomic, safetensors_io
from .atomic import TRASH_PREFIX, atomic_path, fsync_dir, fsync_tree
from .model import GPT, ConfigError, GPTConfig

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "webtext-checkpoint"
CHECKPOINT_VERSION = 1
PREFIX = "ckpt-"
TEMP_PREFIX = atomic.TEMP_PREFIX + PREFIX  # what atomic_path names the temp of a checkpoint
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.pt"
META = "meta.json"


class CheckpointError(ValueError):
    """A missing, damaged or incompatible checkpoint; the message names it."""


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def model_state(model: GPT) -> dict[str, torch.Tensor]:
    """The weights to store: the tied output matrix once (as the embedding), no buffers."""
    state = {name: tensor for name, tensor in model.state_dict().items() if name != "lm_head.weight"}
    return state


def _save_torch(obj, path: Path) -> None:
    """torch.save through a Python file, so that a full disk is an OSError (to a path, torch says "unexpected pos")."""
    with open(path, "wb") as handle:
        torch.save(obj, handle)


FIRST_BLOCK = "transformer.h.0."


def state_layout(config: GPTConfig) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """The shapes model_state() holds: (those outside the blocks, those of one block named relative to it),
    from a one-block model on the meta device, so nothing is allocated however large `config` is."""
    with torch.device("meta"):
        model = GPT(dataclasses.replace(config, n_layer=1))
    shared, block = {}, {}
    for name, tensor in model_state(model).items():
        if name.startswith(FIRST_BLOCK):
            block[name[len(FIRST_BLOCK):]] = tuple(tensor.shape)
        else:
            shared[name] = tuple(tensor.shape)
    return shared, block


def parameter_count(config: GPTConfig) -> int:
    """GPT(config).num_parameters(), computed without building the model."""
    shared, block = state_layout(config)
    padding = (config.padded_vocab_size - config.vocab_size) * config.n_embd
    return sum(map(math.prod, shared.values())) + config.n_layer * sum(map(math.prod, block.values())) - padding


def check_shapes(found: dict[str, tuple[int, ...]], config: GPTConfig, where: str,
                 error: type[Exception] = CheckpointError) -> None:
    """Refuse stored tensors whose names or shapes are not those of a model of `config`, before it is allocated."""
    shared, block = state_layout(config)
    wanted = len(shared) + config.n_layer * len(block)
    if len(found) != wanted:
        raise error(f"{where}: holds {len(found)} tensors, a model of {config.n_layer} layers has {wanted}")
    expected = dict(shared)
    for layer in range(config.n_layer):
        expected.update({f"transformer.h.{layer}.{name}": shape for name, shape in block.items()})
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise error(f"{where}: missing tensors {missing[:5]}, unexpected {unexpected[:5]}")
    for name, shape in found.items():
        if tuple(shape) != expected[name]:
            raise error(f"{where}: {name} has shape {tuple(shape)}, the model config wants {expected[name]}")


TORCH_LOAD_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def load_pickle(path: Path, what: str, map_location: str | torch.device = "cpu",
                error: type[Exception] = CheckpointError, hint: str = ""):
    """torch.load(weights_only=True): tensors and plain containers only; a refusal becomes one line naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on the pickle protocol, a second line of output
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as problem:  # UnpicklingError for anything but tensors; others for damaged files
        lines = [line.strip() for line in str(problem).splitlines() if line.strip()]
        reason = next((line for line in lines if not line.startswith(TORCH_LOAD_BOILERPLATE)), lines[0] if lines else "")
        raise error(f"{path}: cannot load {what} ({type(problem).__name__}: {reason}){hint}") from None


def save_checkpoint(train_dir: Path, step: int, model: GPT, meta: dict,
                    optimizer: torch.optim.Optimizer | None = None, state: dict | None = None,
                    path: Path | None = None) -> Path:
    """Write ckpt-<step> under train_dir (or `path`) atomically; returns its path. `meta` must be JSON-serialisable."""
    final = Path(path) if path is not None else Path(train_dir) / checkpoint_name(step)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as temp:
        temp.mkdir()
        config_json = json.dumps(model.config.to_dict(), sort_keys=True)
        safetensors_io.save_file(model_state(model), temp / WEIGHTS,
                                 metadata={"model_config": config_json, "step": str(step)})
        if optimizer is not None:
            _save_torch(optimizer.state_dict(), temp / OPTIMIZER)
        if state is not None:
            _save_torch(state, temp / STATE)
        fsync_tree(temp)  # on disk before meta.json: remove_stale_temps promotes a temp that has one
        record = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": step,
                  "model": model.config.to_dict(), **meta}
        (temp / META).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return final


def is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / META).is_file() and (path / WEIGHTS).is_file()


def list_checkpoints(train_dir: Path) -> list[Path]:
    """Complete checkpoints under train_dir, oldest first (temp directories are ignored)."""
    train_dir = Path(train_dir)
    if not train_dir.is_dir():
        return []
    found = [p for p in train_dir.iterdir() if p.name.startswith(PREFIX) and is_checkpoint(p)]
    return sorted(found, key=lambda p: p.name)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory itself, or a training directory meaning its latest checkpoint."""
    path = Path(path)
    if is_checkpoint(path):
        return path
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"{path}: neither a checkpoint nor a training directory with checkpoints")
    return found[-1]


def read_meta(checkpoint: Path) -> dict:
    path = Path(checkpoint) / META
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint metadata ({error})") from None
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT \
            or record.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} v{CHECKPOINT_VERSION} checkpoint")
    if not isinstance(record.get("model"), dict):
        raise CheckpointError(f"{path}: 'model' must be an object of model config fields")
    return record


def checkpoint_config(checkpoint: Path) -> GPTConfig:
    """The model config in meta.json, checked against the weights file's header (nothing is allocated)."""
    checkpoint = Path(checkpoint)
    try:
        config = GPTConfig.from_dict(read_meta(checkpoint)["model"])
    except ConfigError as error:
        raise CheckpointError(f"{checkpoint / META}: {error}") from None
    check_shapes(stored_shapes(checkpoint), config, str(checkpoint / WEIGHTS))
    return config


def stored_shapes(checkpoint: Path) -> dict[str, tuple[int, ...]]:
    try:
        header = safetensors_io.read_shapes(Path(checkpoint) / WEIGHTS)
    except safetensors_io.SafetensorsError as error:
        raise CheckpointError(str(error)) from None
    return {name: shape for name, (_, shape) in header.items()}


def load_weights(model: GPT, checkpoint: Path) -> None:
    """Load ckpt weights into `model`, refusing a checkpoint of another shape with a clear message."""
    checkpoint = Path(checkpoint)
    stored = checkpoint_config(checkpoint)
    if stored != model.config:
        differences = ", ".join(f"{key}: checkpoint {value} vs model {getattr(model.config, key)}"
                                for key, value in stored.to_dict().items() if getattr(model.config, key) != value)
        raise CheckpointError(f"{checkpoint}: was written for another model config ({differences})")
    try:
        tensors = safetensors_io.load_file(checkpoint / WEIGHTS)
    except safetensors_io.SafetensorsError as error:
        raise CheckpointError(f"{checkpoint}: cannot read weights ({error})") from None
    expected = model_state(model)
    with torch.no_grad():
        for name, target in expected.items():
            target.copy_(tensors[name])


def load_model(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[GPT, dict]:
    """The model of a checkpoint (or a training directory's latest) and its meta.json record."""
    checkpoint = resolve_checkpoint(checkpoint)
    meta = read_meta(checkpoint)
    model = GPT(checkpoint_config(checkpoint))  # allocated once the weights are known to fit it
    load_weights(model, checkpoint)
    return model.to(device), meta


def load_training_state(checkpoint: Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """(optimizer state dict, trainer state) with torch.load(weights_only=True)."""
    checkpoint = Path(checkpoint)
    for name in (OPTIMIZER, STATE):
        if not (checkpoint / name).is_file():
            raise CheckpointError(f"{checkpoint}: has no {name}; it holds weights only (use --init-from to start from it)")
    optimizer_state = load_pickle(checkpoint / OPTIMIZER, "training state", map_location)
    trainer_state = load_pickle(checkpoint / STATE, "training state")
    return optimizer_state, trainer_state


def prune_checkpoints(train_dir: Path, keep: int) -> list[Path]:
    """Delete all but the last `keep` checkpoints and the best one (lowest val_loss); returns the deleted."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    found = list_checkpoints(train_dir)
    best = best_checkpoint(train_dir)
    keep_set = set(found[-keep:])
    if best is not None:
        keep_set.add(best)
    deleted = []
    for path in found:
        if path not in keep_set:
            shutil.rmtree(path)
            deleted.append(path)
    return deleted


def best_checkpoint(train_dir: Path) -> Path | None:
    scored = []
    for path in list_checkpoints(train_dir):
        val_loss = read_meta(path).get("val_loss")
        if isinstance(val_loss, (int, float)):
            scored.append((val_loss, path.name, path))
    return min(scored)[2] if scored else None


def remove_stale_temps(train_dir: Path) -> None:
    """Clean up after writes that never finished (a killed run), recovering checkpoints first.

    A run killed between the two renames of a replacement leaves the old copy in `.trash-NAME-PID`
    and NAME missing: the copy is put back. A complete temp (meta.json is written last) whose
    checkpoint is missing is promoted. Whatever remains is deleted.
    """
    train_dir = Path(train_dir)
    if not train_dir.is_dir():
        return
    for path in sorted(train_dir.iterdir()):
        if path.name.startswith(TRASH_PREFIX) and path.is_dir():
            final = train_dir / path.name[len(TRASH_PREFIX):].rsplit("-", 1)[0]
            if not final.exists() and is_checkpoint(path):
                log.warning("restoring %s from the interrupted replacement %s", final, path)
                os.rename(path, final)
    for path in sorted(train_dir.iterdir()):
        if path.name.startswith(TEMP_PREFIX) and is_checkpoint(path):
            try:
                final = train_dir / checkpoint_name(int(read_meta(path)["step"]))
            except (CheckpointError, KeyError, TypeError, ValueError):
                continue
            if not final.exists():
                log.warning("promoting the complete checkpoint write %s to %s", path, final)
                os.rename(path, final)
    for path in train_dir.iterdir():
        if path.name.startswith((TEMP_PREFIX, TRASH_PREFIX)) and path.is_dir():
            log.info("removing unfinished checkpoint write %s", path)
            shutil.rmtree(path, ignore_errors=True)
    fsync_dir(train_dir)


@dataclass
class RngState:
    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor]

    @classmethod
    def capture(cls) -> "RngState":
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return cls(torch_cpu=torch.get_rng_state(), torch_cuda=cuda)

    def to_dict(self) -> dict:
        return {"torch_cpu": self.torch_cpu, "torch_cuda": list(self.torch_cuda)}

    @staticmethod
    def restore(record: dict) -> None:
        torch.set_rng_state(record["torch_cpu"])
        if torch.cuda.is_available() and record.get("torch_cuda"):
            torch.cuda.set_rng_state_all(record["torch_cuda"])
