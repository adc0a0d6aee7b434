"""Export to and import from Hugging Face GPT-2, checked against transformers with random weights (no download)."""
from __future__ import annotations

import json

import pytest
import torch
import transformers  # the reference (a dev dependency); random weights only, no download

from webtext.train import checkpoint as ckpt
from webtext.train.hf import HFConversionError, export_hf, from_hf_state, import_hf, to_hf_state
from webtext.train.model import GPT, GPTConfig


def our_model(vocab_size: int = 333) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=48, vocab_size=vocab_size))
    with torch.no_grad():  # make biases and LayerNorms non-trivial so a mix-up would show
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))
    return model


def hf_model(vocab_size: int = 333, seed: int = 1):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=48, n_embd=64, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))
    return model


def test_export_loads_in_transformers_with_equal_logits(tmp_path):
    model = our_model().eval()
    checkpoint = ckpt.save_checkpoint(tmp_path / "train", 5, model, {"eot_id": 332})
    out = export_hf(tmp_path / "train", tmp_path / "hf")  # a training directory means its latest checkpoint
    assert checkpoint == ckpt.resolve_checkpoint(tmp_path / "train")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors"}
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == 332
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(out)).eval()
    idx = torch.randint(0, 333, (2, 48))
    with torch.no_grad():
        ours = model.logits(model.hidden_states(idx))
        theirs = hf(idx).logits
    assert theirs.shape == ours.shape == (2, 48, 333)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("safe_serialization", [True, False], ids=["safetensors", "pytorch_model.bin"])
def test_import_of_transformers_directory_gives_equal_logits(tmp_path, safe_serialization):
    hf = hf_model()
    hf.save_pretrained(str(tmp_path / "hf"), safe_serialization=safe_serialization)
    written = import_hf(tmp_path / "hf", tmp_path / "imported")
    model, meta = ckpt.load_model(written)
    assert model.config.vocab_size == 333 and model.config.padded_vocab_size == 384
    idx = torch.randint(0, 333, (3, 40))
    with torch.no_grad():
        theirs = hf(idx).logits
        ours = model.eval().logits(model.hidden_states(idx))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_round_trip_hf_ours_hf_is_exact(tmp_path):
    hf = hf_model(seed=2)
    hf.save_pretrained(str(tmp_path / "hf"))
    import_hf(tmp_path / "hf", tmp_path / "ckpt")
    export_hf(tmp_path / "ckpt", tmp_path / "hf2")
    again = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf2"))
    for (name, a), (_, b) in zip(hf.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_import_refuses_a_model_that_is_not_plain_gpt2(tmp_path):
    hf = hf_model()
    hf.config.activation_function = "relu"
    hf.save_pretrained(str(tmp_path / "hf"))
    with pytest.raises(HFConversionError, match="activation 'relu'"):
        import_hf(tmp_path / "hf", tmp_path / "ckpt")
    with pytest.raises(HFConversionError, match="no config.json"):
        import_hf(tmp_path / "nothing", tmp_path / "ckpt")


def test_import_checks_the_embedding_shape():
    model = our_model()  # vocab 333, padded to 384
    state = to_hf_state(model)
    wte = state["transformer.wte.weight"]
    for bad in (wte[:-1], torch.cat([wte, wte[:1]]), wte[:, :32]):
        with pytest.raises(HFConversionError, match=r"transformer.wte.weight has shape .* expected \(333, 64\)"):
            from_hf_state({**state, "transformer.wte.weight": bad}, model.config, "hf")
    padded = torch.cat([wte, torch.ones(384 - 333, 64)])
    imported = from_hf_state({**state, "transformer.wte.weight": padded}, model.config, "hf")
    assert torch.equal(imported.transformer.wte.weight, model.transformer.wte.weight)  # padded rows stay zero
