"""Conversion to and from the Hugging Face GPT-2 layout (config.json + model.safetensors, or pytorch_model.bin);
HF stores the linear layers as Conv1D, weights as (in, out), so those are transposed."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import safetensors_io
from .atomic import atomic_write_bytes
from .model import GPT, GPTConfig

log = logging.getLogger(__name__)

CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
TANH_GELUS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt")


class HFConversionError(ValueError):
    """A Hugging Face directory or config that cannot be mapped onto our GPT-2."""


def hf_config(config: GPTConfig, eot_id: int | None) -> dict:
    eot = eot_id if eot_id is not None else config.vocab_size - 1
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_ctx": config.block_size,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": config.layer_norm_epsilon,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True, "bos_token_id": eot, "eos_token_id": eot, "use_cache": True,
        "torch_dtype": "float32",
    }


def to_hf_state(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under HF names, Conv1D weights transposed, the embedding cut back to the real vocabulary."""
    vocab = model.config.vocab_size
    state = {}
    for name, tensor in ckpt.model_state(model).items():
        tensor = tensor.detach().cpu()
        if name == "transformer.wte.weight":
            tensor = tensor[:vocab]
        elif name.endswith(CONV1D_SUFFIXES):
            tensor = tensor.t()
        state[name] = tensor.contiguous()
    return state


def export_hf(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write OUT_DIR/config.json + model.safetensors (+ the run's tokenizer files when found)."""
    from .generate import find_tokenizer

    source = ckpt.resolve_checkpoint(checkpoint)
    model, meta = ckpt.load_model(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    eot_id = meta.get("eot_id")
    tokenizer_path = None
    try:
        tokenizer_path = find_tokenizer(source, meta)
    except FileNotFoundError:
        log.info("no tokenizer found for %s; exporting weights only", source)
    if eot_id is None and tokenizer_path is not None:
        from .generate import load_tokenizer

        eot_id = load_tokenizer(tokenizer_path).token_to_id("<|endoftext|>")
    safetensors_io.save_file(to_hf_state(model), out_dir / "model.safetensors", metadata={"format": "pt"})
    atomic_write_bytes(out_dir / "config.json", (json.dumps(hf_config(model.config, eot_id), indent=2) + "\n").encode())
    if tokenizer_path is not None:
        atomic_write_bytes(out_dir / "tokenizer.json", Path(tokenizer_path).read_bytes())
    return out_dir


def config_from_hf(record: dict, where: str) -> GPTConfig:
    if record.get("model_type", "gpt2") != "gpt2":
        raise HFConversionError(f"{where}: model_type {record.get('model_type')!r} is not gpt2")
    activation = record.get("activation_function", "gelu_new")
    if activation not in TANH_GELUS:
        raise HFConversionError(f"{where}: activation {activation!r} is not GPT-2's tanh GELU")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if record.get(flag):
            raise HFConversionError(f"{where}: {flag}=true is not plain GPT-2")
    if record.get("scale_attn_weights") is False:
        raise HFConversionError(f"{where}: scale_attn_weights=false is not plain GPT-2")
    if record.get("tie_word_embeddings") is False:
        raise HFConversionError(f"{where}: untied input/output embeddings are not GPT-2")
    n_embd = record["n_embd"]
    if record.get("n_inner") not in (None, 4 * n_embd):
        raise HFConversionError(f"{where}: n_inner={record['n_inner']} is not 4 x n_embd")
    return GPTConfig(n_layer=record["n_layer"], n_head=record["n_head"], n_embd=n_embd,
                     block_size=record.get("n_positions", record.get("n_ctx", 1024)),
                     vocab_size=record["vocab_size"], layer_norm_epsilon=record.get("layer_norm_epsilon", 1e-5))


def read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, a sharded model.safetensors.index.json, or pytorch_model.bin (weights_only)."""
    if (hf_dir / "model.safetensors").is_file():
        return safetensors_io.load_file(hf_dir / "model.safetensors")
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        state = {}
        for shard_file in sorted(set(weight_map.values())):
            state.update(safetensors_io.load_file(hf_dir / shard_file))
        return state
    if (hf_dir / "pytorch_model.bin").is_file():
        return torch.load(hf_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise HFConversionError(f"{hf_dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def from_hf_state(state: dict[str, torch.Tensor], config: GPTConfig, where: str) -> GPT:
    model = GPT(config)
    ours = ckpt.model_state(model)
    renamed = {}
    for name, tensor in state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue  # causal-mask buffers of old HF versions; the output matrix is the tied embedding
        key = name if name.startswith("transformer.") else f"transformer.{name}"
        renamed[key] = tensor.t() if key.endswith(CONV1D_SUFFIXES) else tensor
    missing, unexpected = sorted(set(ours) - set(renamed)), sorted(set(renamed) - set(ours))
    if missing or unexpected:
        raise HFConversionError(f"{where}: missing tensors {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for key, target in ours.items():
            tensor = renamed[key].to(torch.float32)
            if key == "transformer.wte.weight":
                if tensor.shape[1:] != target.shape[1:] or tensor.shape[0] not in (config.vocab_size, target.shape[0]):
                    raise HFConversionError(f"{where}: {key} has shape {tuple(tensor.shape)}, expected "
                                            f"({config.vocab_size}, {config.n_embd}) (or padded to {target.shape[0]} rows)")
                target.zero_()  # the padded rows stay zero
                target[: config.vocab_size].copy_(tensor[: config.vocab_size])
            elif tensor.shape != target.shape:
                raise HFConversionError(f"{where}: {key} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)}")
            else:
                target.copy_(tensor)
    if "lm_head.weight" in state and not torch.equal(state["lm_head.weight"].float(), renamed["transformer.wte.weight"].float()):
        raise HFConversionError(f"{where}: lm_head.weight differs from the embedding (untied weights)")
    return model


def import_hf(hf_dir: str | Path, checkpoint: str | Path) -> Path:
    """Write a weights-only checkpoint directory CKPT from a Hugging Face GPT-2 directory."""
    hf_dir, checkpoint = Path(hf_dir), Path(checkpoint)
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise HFConversionError(f"{hf_dir}: no config.json")
    record = json.loads(config_path.read_text())
    config = config_from_hf(record, str(config_path))
    model = from_hf_state(read_hf_weights(hf_dir), config, str(hf_dir))
    eot_id = record.get("eos_token_id")
    meta = {"source": str(hf_dir.resolve()), "eot_id": eot_id, "val_loss": None}
    if checkpoint.exists() and not ckpt.is_checkpoint(checkpoint):
        raise HFConversionError(f"{checkpoint}: exists and is not a checkpoint; refusing to replace it")
    ckpt.save_checkpoint(checkpoint.parent, 0, model, meta, path=checkpoint)
    for name in TOKENIZER_FILES:
        if (hf_dir / name).is_file():
            shutil.copyfile(hf_dir / name, checkpoint / name)
    return checkpoint
