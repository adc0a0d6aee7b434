"""Export to and import from Hugging Face GPT-2, checked against transformers with random weights (no download)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors
import torch
import transformers  # the reference (a dev dependency); random weights only, no download

from tests.train_support import synthetic_documents, train_tokenizer
from webtext.train import checkpoint as ckpt
from webtext.train.cli import main
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


def exported_with_tokenizer(tmp_path: Path) -> tuple[GPT, Path, Path]:
    """A model over a real byte-level BPE (as the tokenizer stage writes it), exported from its training directory,
    which holds the tokenizer.json the trainer copies there."""
    texts = synthetic_documents(200, seed=3)
    tokenizer = train_tokenizer(texts, tmp_path / "train" / "tokenizer.json", vocab_size=320)
    model = our_model(vocab_size=tokenizer.get_vocab_size()).eval()
    ckpt.save_checkpoint(tmp_path / "train", 7, model, {"eot_id": tokenizer.token_to_id("<|endoftext|>")})
    assert main(["export-hf", str(tmp_path / "train"), str(tmp_path / "hf")]) == 0
    return model, tmp_path / "train" / "tokenizer.json", tmp_path / "hf"


def test_export_writes_a_folder_transformers_tokenizes_with(tmp_path):
    from tokenizers import Tokenizer

    _, tokenizer_path, out = exported_with_tokenizer(tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
            "generation_config.json", "config.json", "model.safetensors"} <= {p.name for p in out.iterdir()}
    ours = Tokenizer.from_file(str(tokenizer_path))
    eot = ours.token_to_id("<|endoftext|>")
    text = "The cat sat near a big red house, and then it was very happy. Émile ran 42 km!"
    fast = transformers.AutoTokenizer.from_pretrained(str(out))
    slow = transformers.GPT2Tokenizer.from_pretrained(str(out))  # from vocab.json + merges.txt alone
    assert fast.is_fast and fast.model_max_length == 48  # the model's context
    for hf_tokenizer in (fast, slow):
        assert hf_tokenizer.eos_token == hf_tokenizer.bos_token == "<|endoftext|>"
        assert hf_tokenizer.eos_token_id == eot
        assert hf_tokenizer(text)["input_ids"] == ours.encode(text).ids
        assert hf_tokenizer.decode(ours.encode(text).ids) == text
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == generation["bos_token_id"] == eot and generation["max_length"] == 48


def test_transformers_text_generation_pipeline_continues_as_our_sampler(tmp_path):
    from webtext.train.generate import SamplingConfig, generate

    model, tokenizer_path, out = exported_with_tokenizer(tmp_path)
    generator = transformers.pipeline("text-generation", model=str(out), device="cpu")
    prompt = "The dog ran over the"
    result = generator(prompt, max_new_tokens=12, do_sample=False, return_full_text=False)
    prompt_ids = generator.tokenizer(prompt)["input_ids"]
    ours = generate(model, prompt_ids, SamplingConfig(max_new_tokens=12, temperature=0.0, stop_at_eot=False))[0]
    assert result[0]["generated_text"] == generator.tokenizer.decode(ours)
    assert len(ours) == 12


def test_export_without_any_tokenizer_still_writes_the_weights_and_names_the_flag(tmp_path, caplog):
    ckpt.save_checkpoint(tmp_path / "train", 1, our_model(), {"eot_id": 332})
    out = export_hf(tmp_path / "train", tmp_path / "hf")
    assert not (out / "tokenizer.json").exists() and (out / "generation_config.json").is_file()
    assert "--tokenizer" in caplog.text
    assert main(["export-hf", str(tmp_path / "train"), str(tmp_path / "hf2"), "--tokenizer",
                 str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in caplog.text


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


# --------------------------------------------------------------------------------------------
# Hostile directories and checkpoints: one line naming the file, exit 2, nothing allocated first

REPO = Path(__file__).resolve().parent.parent
CHILD_ADDRESS_SPACE = 4 << 30  # bytes: torch loads in it; a model of many GB cannot be allocated


def good_hf_dir(tmp_path: Path) -> Path:
    ckpt.save_checkpoint(tmp_path / "train", 1, our_model(), {"eot_id": 332})
    return export_hf(tmp_path / "train", tmp_path / "hf")


def edit_config(**changes):
    def edit(hf_dir: Path) -> None:
        record = json.loads((hf_dir / "config.json").read_text())
        record.update(changes)
        (hf_dir / "config.json").write_text(json.dumps({k: v for k, v in record.items() if v is not DROP}))
    return edit


DROP = object()


def rewrite_header(change):
    """Rewrite model.safetensors' JSON header with change(header), the tensor bytes kept as they are."""
    def edit(hf_dir: Path) -> None:
        path = hf_dir / "model.safetensors"
        data = path.read_bytes()
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size])
        change(header["transformer.wpe.weight"])
        text = json.dumps(header).encode()
        path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + size:])
    return edit


class PickleThatRunsCode:
    def __reduce__(self):
        return os.mkdir, (str(MARKER),)


MARKER = Path("/tmp/webtext-test-pickle-ran-code")


def malicious_pickle(hf_dir: Path) -> None:
    (hf_dir / "model.safetensors").unlink()
    torch.save({"transformer.wte.weight": PickleThatRunsCode()}, hf_dir / "pytorch_model.bin")


def escaping_weight_map(hf_dir: Path) -> None:
    (hf_dir / "model.safetensors").rename(hf_dir / "model-00001-of-00001.safetensors")
    with safetensors.safe_open(str(hf_dir / "model-00001-of-00001.safetensors"), framework="pt") as handle:
        names = list(handle.keys())
    weight_map = {name: "model-00001-of-00001.safetensors" for name in names}
    weight_map["transformer.wte.weight"] = "../../../etc/passwd"
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


HOSTILE_HF = {
    "config without n_embd": (edit_config(n_embd=DROP), "config.json: missing field 'n_embd'"),
    "config not JSON": (lambda d: (d / "config.json").write_text('{"n_layer": 2,'), "config.json: unreadable JSON"),
    "n_layer a string": (edit_config(n_layer="2"), "config.json: n_layer must be a positive integer, got '2'"),
    "n_head a float": (edit_config(n_head=4.0), "config.json: n_head must be a positive integer, got 4.0"),
    "n_embd not a multiple of n_head": (edit_config(n_head=5), "config.json: n_embd=64 is not divisible by n_head=5"),
    "more layers than stored": (edit_config(n_layer=3), "model.safetensors: holds 28 tensors, a model of 3 layers has 40"),
    "negative shape": (rewrite_header(lambda t: t.update(shape=[-48, 64])), "model.safetensors: not a readable safetensors"),
    "float shape": (rewrite_header(lambda t: t.update(shape=[48.0, 64])), "model.safetensors: not a readable safetensors"),
    "string offsets": (rewrite_header(lambda t: t.update(data_offsets=[str(o) for o in t["data_offsets"]])),
                       "model.safetensors: not a readable safetensors"),
    "negative offsets": (rewrite_header(lambda t: t.update(data_offsets=[-8, t["data_offsets"][1]])),
                         "model.safetensors: not a readable safetensors"),
    "malicious pytorch_model.bin": (malicious_pickle, "pytorch_model.bin: cannot load the weights (UnpicklingError: "),
    "weight_map leaving the folder": (escaping_weight_map,
                                      "model.safetensors.index.json: weight_map names '../../../etc/passwd', not a file "
                                      "in the model folder"),
}


def refused(caplog, argv: list[str]) -> str:
    """main(argv) must return 2 and log exactly one one-line error; returns it."""
    caplog.clear()
    assert main(argv) == 2
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in caplog.text, errors
    return errors[0]


@pytest.mark.parametrize("case", list(HOSTILE_HF))
def test_import_refuses_a_hostile_directory_in_one_line(tmp_path, caplog, case):
    make_hostile, message = HOSTILE_HF[case]
    hf_dir = good_hf_dir(tmp_path)
    make_hostile(hf_dir)
    if MARKER.exists():
        MARKER.rmdir()
    error = refused(caplog, ["import-hf", str(hf_dir), str(tmp_path / "ckpt")])
    assert error.startswith(str(hf_dir)) and message in error
    assert not (tmp_path / "ckpt").exists() and not MARKER.exists()


def run_in_small_address_space(*argv: str) -> subprocess.CompletedProcess:
    """`python -m webtext.train ARGV` in a child limited to 4 GiB of address space: a model of many GB fails there."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))

    return subprocess.run([sys.executable, "-m", "webtext.train", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300, preexec_fn=limit)


def assert_one_line_exit_2(result: subprocess.CompletedProcess, path: Path, message: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert str(path) in lines[0] and message in lines[0]


@pytest.mark.slow  # a child process importing torch
def test_a_config_declaring_a_huge_model_is_refused_before_allocation(tmp_path):
    hf_dir = good_hf_dir(tmp_path)
    edit_config(n_layer=200, n_embd=8192, n_head=64)(hf_dir)
    result = run_in_small_address_space("import-hf", str(hf_dir), str(tmp_path / "ckpt"))
    declared = ckpt.parameter_count(GPTConfig(n_layer=200, n_head=64, n_embd=8192, block_size=48, vocab_size=333))
    assert declared > 160e9
    assert_one_line_exit_2(result, hf_dir / "config.json", f"declares a model of {declared:,} parameters, more than "
                           "the limit of 2,000,000,000 (--max-parameters raises it)")
    # raising the limit gets as far as the weights' headers, which hold a 2-layer model: still nothing allocated
    result = run_in_small_address_space("import-hf", str(hf_dir), str(tmp_path / "ckpt"),
                                        "--max-parameters", str(10**12))
    assert_one_line_exit_2(result, hf_dir / "model.safetensors", "holds 28 tensors, a model of 200 layers has 2404")


def crafted_checkpoint(tmp_path: Path, **model_changes) -> Path:
    path = ckpt.save_checkpoint(tmp_path / "train", 1, our_model(), {"eot_id": 332})
    meta = json.loads((path / ckpt.META).read_text())
    meta["model"].update(model_changes)
    meta["model"] = {k: v for k, v in meta["model"].items() if v is not DROP}
    (path / ckpt.META).write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"n_layer": "2"}, "meta.json: n_layer must be an integer, got '2'"),
    ({"layer_norm_epsilon": "small"}, "meta.json: layer_norm_epsilon must be a number in (0, 1), got 'small'"),
    ({"n_layer": 3}, "model.safetensors: holds 28 tensors, a model of 3 layers has 40"),
    ({"n_embd": 96}, "model.safetensors: transformer.h.0.attn.c_attn.bias has shape (192,), the model config wants (288,)"),
], ids=["string n_layer", "string epsilon", "more layers", "wider"])
def test_crafted_checkpoints_are_refused_in_one_line(tmp_path, caplog, changes, message):
    checkpoint = crafted_checkpoint(tmp_path, **changes)
    for argv in (["export-hf", str(checkpoint), str(tmp_path / "out")], ["sample", str(checkpoint), "--device", "cpu"]):
        error = refused(caplog, argv)
        assert error.startswith(str(checkpoint)) and message in error


def test_a_checkpoint_without_its_model_config_is_refused(tmp_path, caplog):
    checkpoint = crafted_checkpoint(tmp_path)
    meta = json.loads((checkpoint / ckpt.META).read_text())
    del meta["model"]
    (checkpoint / ckpt.META).write_text(json.dumps(meta))
    assert "meta.json: 'model' must be an object" in refused(caplog, ["export-hf", str(checkpoint), str(tmp_path / "o")])


@pytest.mark.slow  # a child process importing torch
def test_a_checkpoint_declaring_a_huge_model_is_refused_before_allocation(tmp_path):
    checkpoint = crafted_checkpoint(tmp_path, n_layer=200, n_embd=8192, n_head=64)
    result = run_in_small_address_space("export-hf", str(checkpoint), str(tmp_path / "out"))
    assert_one_line_exit_2(result, checkpoint / ckpt.WEIGHTS, "holds 28 tensors, a model of 200 layers has 2404")


@pytest.mark.parametrize("shape", [dict(n_layer=2, n_head=4, n_embd=64, vocab_size=333), dict(n_layer=3, n_head=2, n_embd=32, vocab_size=384)])
def test_parameter_count_is_the_models_without_building_it(shape):
    config = GPTConfig(block_size=48, **shape)
    assert ckpt.parameter_count(config) == GPT(config).num_parameters()
