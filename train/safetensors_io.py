"""Weights files through the `safetensors` package: written atomically; damage raises SafetensorsError naming the file."""
from __future__ import annotations

import os

import safetensors
import safetensors.torch
import torch

from .atomic import atomic_path


class SafetensorsError(ValueError):
    """A file that is not valid safetensors; the message names the file."""


def _unreadable(path: str | os.PathLike, error: Exception) -> SafetensorsError:
    return SafetensorsError(f"{path}: not a readable safetensors file, truncated or corrupt ({error})")


def save_file(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
              metadata: dict[str, str] | None = None) -> None:
    """Write atomically; views and tensors on other devices are stored as contiguous CPU copies."""
    contiguous = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    with atomic_path(path) as temp:
        safetensors.torch.save_file(contiguous, temp, metadata=metadata)


def _unopenable(path: str | os.PathLike, error: OSError) -> SafetensorsError:
    return SafetensorsError(f"{path}: cannot open ({error.strerror or error})")


def load_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(path, device=str(device))
    except safetensors.SafetensorError as error:
        raise _unreadable(path, error) from None
    except OSError as error:
        raise _unopenable(path, error) from None


def read_shapes(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Each tensor's (dtype, shape) from the header alone, so that shapes are checked before anything is allocated.

    The package refuses a header whose shapes or offsets are not non-negative integers, whose offsets leave the
    file or overlap, or whose byte sizes do not match dtype x shape.
    """
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            slices = {name: handle.get_slice(name) for name in handle.keys()}
            return {name: (piece.get_dtype(), tuple(piece.get_shape())) for name, piece in slices.items()}
    except safetensors.SafetensorError as error:
        raise _unreadable(path, error) from None
    except OSError as error:
        raise _unopenable(path, error) from None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Only the `__metadata__` of a file, without reading its tensors."""
    try:
        with safetensors.safe_open(path, framework="pt") as handle:
            return handle.metadata() or {}
    except safetensors.SafetensorError as error:
        raise _unreadable(path, error) from None
    except OSError as error:
        raise _unopenable(path, error) from None
