"""The safetensors file format, written and read with torch alone (the `safetensors` package is not a dependency).

Layout: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
optional "__metadata__" of str -> str, then the raw little-endian tensor bytes.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch

from .atomic import atomic_write_bytes

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64",
}
NAME_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}
ALIGNMENT = 8
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A file that is not valid safetensors; the message names the file."""


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    raw = flat.view(torch.uint8) if flat.numel() else torch.empty(0, dtype=torch.uint8)
    data = raw.numpy().tobytes()
    if sys.byteorder == "big":  # the format is little-endian
        raise SafetensorsError("big-endian hosts are not supported")
    return data


def serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The bytes of a safetensors file holding `tensors` (shared storage is written as separate copies)."""
    header: dict[str, object] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise SafetensorsError("metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    chunks, offset = [], 0
    for name in sorted(tensors):
        tensor = tensors[name]
        if tensor.dtype not in DTYPE_NAMES:
            raise SafetensorsError(f"tensor {name!r} has unsupported dtype {tensor.dtype}")
        data = _tensor_bytes(tensor)
        header[name] = {"dtype": DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % ALIGNMENT)
    return len(header_bytes).to_bytes(8, "little") + header_bytes + b"".join(chunks)


def save_file(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write atomically: a temp file beside `path`, fsync, rename."""
    atomic_write_bytes(path, serialize(tensors, metadata))


def _parse_header(data: bytes | memoryview, where: str) -> tuple[dict, dict[str, str], int]:
    if len(data) < 8:
        raise SafetensorsError(f"{where}: file too short for a safetensors header")
    header_len = int.from_bytes(bytes(data[:8]), "little")
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise SafetensorsError(f"{where}: header length {header_len} runs past the end of the file (truncated?)")
    try:
        header = json.loads(bytes(data[8:8 + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SafetensorsError(f"{where}: header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{where}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + header_len


def _check_entries(header: dict, data_len: int, where: str) -> None:
    spans = []
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = NAME_DTYPES[entry["dtype"]], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{where}: tensor {name!r} has a malformed entry {entry!r}") from None
        expected = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        if not 0 <= begin <= end <= data_len or end - begin != expected:
            raise SafetensorsError(f"{where}: tensor {name!r} spans bytes [{begin}, {end}) of {data_len}, "
                                   f"expected {expected} bytes (truncated or corrupt)")
        spans.append((begin, end, name))
    spans.sort()
    for (_, end, name), (begin, _, next_name) in zip(spans, spans[1:]):
        if begin < end:
            raise SafetensorsError(f"{where}: tensors {name!r} and {next_name!r} overlap")


def load_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    tensors, _ = load_file_with_metadata(path, device)
    return tensors


def load_file_with_metadata(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    data = bytearray(path.stat().st_size)
    with open(path, "rb") as handle:
        handle.readinto(data)
    header, metadata, data_start = _parse_header(data, str(path))
    buffer = memoryview(data)[data_start:]
    _check_entries(header, len(buffer), str(path))
    tensors = {}
    for name, entry in header.items():
        dtype = NAME_DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        if end > begin:
            tensor = torch.frombuffer(buffer[begin:end], dtype=dtype).reshape(entry["shape"]).clone()
        else:
            tensor = torch.empty(entry["shape"], dtype=dtype)
        tensors[name] = tensor.to(device)
    return tensors, metadata


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Only the `__metadata__` of a file, without reading its tensors."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: file too short for a safetensors header")
        header_len = int.from_bytes(head, "little")
        if header_len > MAX_HEADER_BYTES:
            raise SafetensorsError(f"{path}: header length {header_len} is implausible")
        body = handle.read(header_len)
    _, metadata, _ = _parse_header(head + body, str(path))
    return metadata
