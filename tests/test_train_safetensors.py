"""Our safetensors wrapper: files it writes load in the package and back, and damaged files are refused naming the file."""
from __future__ import annotations

import pytest
import safetensors.torch as real
import torch

from webtext.train import safetensors_io as ours


def sample_tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "f32": torch.randn(3, 5), "bf16": torch.randn(7).to(torch.bfloat16), "f16": torch.randn(2, 2, 3).half(),
        "i64": torch.arange(5), "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3), "u8": torch.arange(9, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 4),
        "f64": torch.randn(4, dtype=torch.float64), "view": torch.randn(6, 4).t(),  # non-contiguous input
    }


def test_ours_written_real_read(tmp_path):
    tensors = sample_tensors()
    ours.save_file(tensors, tmp_path / "a.safetensors", metadata={"step": "7"})
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]  # written through a temp file, renamed
    loaded = real.load_file(str(tmp_path / "a.safetensors"))
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"step": "7"}


def test_real_written_ours_read(tmp_path):
    tensors = {k: v.contiguous() for k, v in sample_tensors().items()}
    real.save_file(tensors, str(tmp_path / "b.safetensors"), metadata={"format": "pt"})
    loaded = ours.load_file(tmp_path / "b.safetensors")
    assert ours.read_metadata(tmp_path / "b.safetensors") == {"format": "pt"}
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name


def test_header_is_aligned_json(tmp_path):
    ours.save_file({"x": torch.ones(3)}, tmp_path / "x.safetensors")
    data = (tmp_path / "x.safetensors").read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    assert header_len % 8 == 0
    assert data[8:8 + header_len].decode().rstrip().startswith('{"x":')


def test_damaged_files_are_refused_with_their_name(tmp_path):
    path = tmp_path / "c.safetensors"
    ours.save_file({"x": torch.randn(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    damaged = r"c.safetensors: not a readable safetensors file, truncated or corrupt \(.*"
    with pytest.raises(ours.SafetensorsError, match=damaged + "file not fully covered"):
        ours.load_file(path)
    path.write_bytes(data[:20])
    with pytest.raises(ours.SafetensorsError, match=damaged + "invalid header length"):
        ours.load_file(path)
    with pytest.raises(ours.SafetensorsError, match=damaged + "invalid header length"):
        ours.read_metadata(path)
    path.write_bytes((9).to_bytes(8, "little") + b"not json!")
    with pytest.raises(ours.SafetensorsError, match=damaged + "invalid JSON"):
        ours.load_file(path)
    overlapping = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'
    path.write_bytes(len(overlapping).to_bytes(8, "little") + overlapping + bytes(12))
    with pytest.raises(ours.SafetensorsError, match=damaged + "invalid offset for tensor `b`"):
        ours.load_file(path)
