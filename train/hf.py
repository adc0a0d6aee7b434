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
from .model import GPT, ConfigError, GPTConfig

log = logging.getLogger(__name__)

CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
TANH_GELUS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt")
ENDOFTEXT = "<|endoftext|>"
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}  # safetensors' names
DEFAULT_MAX_PARAMETERS = 2_000_000_000  # GPT-2 XL has 1.56e9


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


def export_hf(checkpoint: str | Path, out_dir: str | Path, tokenizer: str | Path | None = None) -> Path:
    """Write OUT_DIR/config.json, generation_config.json and model.safetensors, and with the run's tokenizer (or
    `tokenizer`) the files `transformers.AutoTokenizer` reads: tokenizer.json, vocab.json, merges.txt,
    tokenizer_config.json and special_tokens_map.json."""
    from .generate import find_tokenizer, load_tokenizer

    source = ckpt.resolve_checkpoint(checkpoint)
    model, meta = ckpt.load_model(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    eot_id = meta.get("eot_id")
    tokenizer_path = None
    try:
        tokenizer_path = find_tokenizer(source, meta, str(tokenizer) if tokenizer else None)
    except FileNotFoundError as error:
        if tokenizer:
            raise HFConversionError(f"{tokenizer}: no such tokenizer file") from error
        log.warning("%s; the export holds the weights only (pass --tokenizer to add one)", error)
    if eot_id is None and tokenizer_path is not None:
        eot_id = load_tokenizer(tokenizer_path).token_to_id(ENDOFTEXT)
    safetensors_io.save_file(to_hf_state(model), out_dir / "model.safetensors", metadata={"format": "pt"})
    config = hf_config(model.config, eot_id)
    _write_json(out_dir / "config.json", config)
    _write_json(out_dir / "generation_config.json", {
        "bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
        "pad_token_id": config["eos_token_id"], "max_length": model.config.block_size})
    if tokenizer_path is not None:
        write_hf_tokenizer(Path(tokenizer_path), out_dir, model.config.block_size)
    return out_dir


def write_hf_tokenizer(tokenizer_path: Path, out_dir: Path, context: int) -> None:
    """The tokenizer as a GPT-2 folder has it: tokenizer.json as trained, vocab.json (every token, in id order) and
    merges.txt for the slow GPT2Tokenizer, and a tokenizer_config.json whose model_max_length is the context."""
    import tempfile

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    if tokenizer.token_to_id(ENDOFTEXT) is None:
        raise HFConversionError(f"{tokenizer_path}: has no {ENDOFTEXT} token, which GPT-2 uses as bos and eos")
    atomic_write_bytes(out_dir / "tokenizer.json", tokenizer_path.read_bytes())
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer.model.save(scratch)
        merges = (Path(scratch) / "merges.txt").read_bytes()
    vocab = dict(sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1]))
    atomic_write_bytes(out_dir / "vocab.json", json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
    atomic_write_bytes(out_dir / "merges.txt", merges)
    specials = {"bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT}
    _write_json(out_dir / "special_tokens_map.json", specials)
    _write_json(out_dir / "tokenizer_config.json", {
        "tokenizer_class": "GPT2Tokenizer", "model_max_length": context, **specials,
        "add_bos_token": False, "add_prefix_space": False, "clean_up_tokenization_spaces": False,
        "errors": "replace"})


def _write_json(path: Path, record: dict) -> None:
    atomic_write_bytes(path, (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _read_json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HFConversionError(f"{path}: unreadable JSON ({error})") from None
    if not isinstance(record, dict):
        raise HFConversionError(f"{path}: must hold a JSON object")
    return record


def _size(record: dict, key: str, where: str, default: int | None = None) -> int:
    """A positive integer field of config.json (JSON true/false and 2.0 are not integers)."""
    if key not in record and default is not None:
        return default
    if key not in record:
        raise HFConversionError(f"{where}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise HFConversionError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def config_from_hf(record: dict, where: str) -> GPTConfig:
    """Our config of a Hugging Face GPT-2 config.json record; any type or value that does not fit is refused."""
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
    n_embd = _size(record, "n_embd", where)
    if record.get("n_inner") not in (None, 4 * n_embd):
        raise HFConversionError(f"{where}: n_inner={record['n_inner']!r} is not 4 x n_embd")
    block_size = _size(record, "n_positions", where, default=_size(record, "n_ctx", where, default=1024))
    try:
        return GPTConfig(n_layer=_size(record, "n_layer", where), n_head=_size(record, "n_head", where),
                         n_embd=n_embd, block_size=block_size, vocab_size=_size(record, "vocab_size", where),
                         layer_norm_epsilon=record.get("layer_norm_epsilon", 1e-5))
    except ConfigError as error:
        raise HFConversionError(f"{where}: {error}") from None


def eot_from_hf(record: dict, config: GPTConfig, where: str) -> int | None:
    """eos_token_id when it is a token of the vocabulary; otherwise None, with a warning (transformers only warns)."""
    eot_id = record.get("eos_token_id")
    if eot_id is None or (isinstance(eot_id, int) and not isinstance(eot_id, bool) and 0 <= eot_id < config.vocab_size):
        return eot_id
    log.warning("%s: eos_token_id %r is not a token id below vocab_size %d; not recorded", where, eot_id,
                config.vocab_size)
    return None


def weight_files(hf_dir: Path) -> list[Path]:
    """model.safetensors, the shards a model.safetensors.index.json names, or pytorch_model.bin.

    The index may only name files beside it: a weight_map entry with a directory part is refused (a symlinked
    file, as in a Hugging Face cache snapshot, is fine).
    """
    if (hf_dir / "model.safetensors").is_file():
        return [hf_dir / "model.safetensors"]
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise HFConversionError(f"{index}: weight_map must map tensor names to file names")
        for name in sorted(set(weight_map.values())):
            if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
                raise HFConversionError(f"{index}: weight_map names {name!r}, not a file in the model folder")
        return [hf_dir / name for name in sorted(set(weight_map.values()))]
    if (hf_dir / "pytorch_model.bin").is_file():
        return [hf_dir / "pytorch_model.bin"]
    raise HFConversionError(f"{hf_dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    state = ckpt.load_pickle(path, "the weights", error=HFConversionError,
                             hint="; only tensors are unpickled, convert the file to model.safetensors")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise HFConversionError(f"{path}: does not hold a dict of named tensors")
    return state


def _header_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the safetensors headers, refusing duplicates and non-float tensors."""
    shapes, seen_in = {}, {}
    for path in files:
        for name, (dtype, shape) in safetensors_io.read_shapes(path).items():
            if name in seen_in:
                raise HFConversionError(f"{path}: tensor {name} is also in {seen_in[name]}")
            if dtype not in FLOAT_DTYPES:
                raise HFConversionError(f"{path}: tensor {name} is {dtype}, not a floating-point type")
            shapes[name], seen_in[name] = shape, path
    return shapes


def check_hf_shapes(shapes: dict[str, tuple[int, ...]], config: GPTConfig, where: str) -> None:
    """The tensors under HF names against `config`, before anything is allocated; wte may be unpadded."""
    ours = {}
    for name, shape in shapes.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue
        key = name if name.startswith("transformer.") else f"transformer.{name}"
        ours[key] = tuple(reversed(shape)) if key.endswith(CONV1D_SUFFIXES) else tuple(shape)
    if ours.get("transformer.wte.weight") == (config.vocab_size, config.n_embd):
        ours["transformer.wte.weight"] = (config.padded_vocab_size, config.n_embd)
    ckpt.check_shapes(ours, config, where, error=HFConversionError)


def read_hf_weights(hf_dir: Path, config: GPTConfig) -> dict[str, torch.Tensor]:
    """The weights of a HF directory, their shapes checked against `config` first (from the safetensors headers)."""
    files = weight_files(hf_dir)
    if files[0].suffix == ".bin":
        state = _load_pickle(files[0])
        check_hf_shapes({name: tuple(t.shape) for name, t in state.items()}, config, str(files[0]))
        return state
    check_hf_shapes(_header_shapes(files), config, str(files[0] if len(files) == 1 else hf_dir))
    state = {}
    for path in files:
        state.update(safetensors_io.load_file(path))
    return state


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


def import_hf(hf_dir: str | Path, checkpoint: str | Path, max_parameters: int = DEFAULT_MAX_PARAMETERS) -> Path:
    """Write a weights-only checkpoint directory CKPT from a Hugging Face GPT-2 directory.

    Everything is checked before the model is allocated: config.json's types and values, its parameter count
    against `max_parameters`, and the tensors' names and shapes in the weight files' headers.
    """
    hf_dir, checkpoint = Path(hf_dir), Path(checkpoint)
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise HFConversionError(f"{hf_dir}: no config.json")
    record = _read_json(config_path)
    config = config_from_hf(record, str(config_path))
    eot_id = eot_from_hf(record, config, str(config_path))
    parameters = ckpt.parameter_count(config)
    if parameters > max_parameters:
        raise HFConversionError(f"{config_path}: declares a model of {parameters:,} parameters, more than the limit "
                                f"of {max_parameters:,} (--max-parameters raises it)")
    if checkpoint.exists() and not ckpt.is_checkpoint(checkpoint):
        raise HFConversionError(f"{checkpoint}: exists and is not a checkpoint; refusing to replace it")
    model = from_hf_state(read_hf_weights(hf_dir, config), config, str(hf_dir))
    meta = {"source": str(hf_dir.resolve()), "eot_id": eot_id, "val_loss": None}
    ckpt.save_checkpoint(checkpoint.parent, 0, model, meta, path=checkpoint)
    for name in TOKENIZER_FILES:
        if (hf_dir / name).is_file():
            shutil.copyfile(hf_dir / name, checkpoint / name)
    return checkpoint
