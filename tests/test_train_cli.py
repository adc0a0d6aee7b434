"""The trainer's command line end to end (train, sample, eval, export-hf, import-hf), its import graph, real data."""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.train_support import flip_token_bytes, make_run, set_manifest_sha256
from webtext.train import shard_format
from webtext.train.cli import main
from webtext.train.shard_format import RUN_SHARDS, RUN_TOKENIZER, RUN_TRAINING, Manifest, ShardInfo

REPO = Path(__file__).resolve().parent.parent
TRAIN_MODULES = ["webtext.train", "webtext.train.atomic", "webtext.train.shard_format", "webtext.train.model",
                 "webtext.train.chunked_loss", "webtext.train.data", "webtext.train.safetensors_io",
                 "webtext.train.checkpoint", "webtext.train.trainer", "webtext.train.generate", "webtext.train.evaluate",
                 "webtext.train.config_flags", "webtext.train.hf", "webtext.train.cli"]
FORBIDDEN = ["apache_beam", "trafilatura", "praw", "datasketch", "requests"]
TINY = ["--model", "tiny", "--block-size", "32", "--micro-batch", "4", "--warmup", "2", "--lr", "3e-3",
        "--device", "cpu"]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli-run")
    make_run(run)
    assert main(["train", str(run), *TINY, "--max-steps", "20", "--eval-every", "10", "--ckpt-every", "10",
                 "--name", "cli"]) == 0
    return run


def test_train_writes_the_training_directory(trained):
    train_dir = trained / RUN_TRAINING / "cli"
    assert {"log.jsonl", "log.csv", "config.json", "tokenizer.json", "ckpt-00000010", "ckpt-00000020"} <= \
        {p.name for p in train_dir.iterdir()}
    last = json.loads((train_dir / "log.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 20 and {"loss", "lr", "tokens_per_s", "val_loss"} <= last.keys()


def test_sample_is_seeded_and_decodes_with_the_runs_tokenizer(trained, capsys):
    args = ["sample", str(trained / RUN_TRAINING / "cli"), "--prompt", "The cat", "--max-tokens", "12",
            "--temperature", "0.9", "--top-k", "40", "--top-p", "0.95", "--num-samples", "2", "--seed", "4", "--json"]
    assert main(args) == 0
    first = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert main(args) == 0
    second = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert first == second and len(first) == 2
    assert all(s["prompt"] == "The cat" and 0 < s["tokens"] <= 12 and isinstance(s["completion"], str) for s in first)


def test_eval_on_shards_and_on_a_text_file(trained, capsys, tmp_path):
    assert main(["eval", str(trained / RUN_TRAINING / "cli")]) == 0
    on_shards = last_json(capsys)
    logged = json.loads((trained / RUN_TRAINING / "cli" / "log.jsonl").read_text().splitlines()[-1])["val_loss"]
    assert on_shards["step"] == 20 and on_shards["perplexity"] == pytest.approx(np.exp(on_shards["loss"]))
    assert on_shards["loss"] < 5.0 and logged > 0
    text = tmp_path / "text.txt"
    text.write_text("The cat sat near the river. The dog ran over the big house. " * 20)
    assert main(["eval", str(trained / RUN_TRAINING / "cli"), "--text", str(text)]) == 0
    on_text = last_json(capsys)
    assert on_text["source"] == str(text) and on_text["tokens"] > 100 and on_text["loss"] < 5.0


def test_export_and_import_through_the_command_line(trained, capsys, tmp_path):
    import torch
    import transformers

    assert main(["export-hf", str(trained / RUN_TRAINING / "cli"), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf")).eval()
    assert main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "imported")]) == 0
    assert last_json(capsys)["checkpoint"] == str(tmp_path / "imported")
    assert main(["eval", str(trained / RUN_TRAINING / "cli")]) == 0
    original = last_json(capsys)["loss"]
    assert main(["eval", str(tmp_path / "imported"), "--run", str(trained)]) == 0
    assert last_json(capsys)["loss"] == pytest.approx(original, rel=1e-5)
    ids = torch.randint(0, 300, (1, 32))
    from webtext.train.checkpoint import load_model

    ours, _ = load_model(tmp_path / "imported")
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(ours.hidden_states(ids)), hf(ids).logits, rtol=1e-4, atol=1e-4)
    # the imported weights continue training on the run
    assert main(["train", str(trained), *TINY, "--max-steps", "2", "--init-from", str(tmp_path / "imported"),
                 "--name", "continued", "--ckpt-every", "2", "--eval-every", "2"]) == 0
    assert last_json(capsys)["loss"] < 5.0


def test_errors_are_reported_with_exit_code_2(tmp_path, caplog):
    assert main(["sample", str(tmp_path / "nothing")]) == 2
    assert "neither a checkpoint nor a training directory" in caplog.text
    assert main(["train", str(tmp_path), "--device", "cpu"]) == 2
    assert "no shard manifest" in caplog.text
    assert main(["train", str(tmp_path), "--model", "gpt3"]) == 2
    assert "unknown model 'gpt3'" in caplog.text
    with pytest.raises(SystemExit):
        main(["train"])  # argparse: RUN is required


def test_bad_keep_and_warmup_are_argparse_errors(tmp_path, capsys):
    for flag, value, message in [("--keep", "0", "must be a positive integer"),
                                 ("--keep", "-2", "must be a positive integer"),
                                 ("--warmup", "-1", "must be a non-negative integer")]:
        with pytest.raises(SystemExit) as exit_info:
            main(["train", str(tmp_path), flag, value])
        assert exit_info.value.code == 2 and f"{flag}: {message}" in capsys.readouterr().err


def test_a_new_config_field_makes_a_working_flag(capsys):
    from webtext.train import config_flags
    from webtext.train.trainer import TrainConfig

    knob = config_flags.option(7, "a knob only this test has", type=config_flags.positive_int)
    extended = dataclasses.make_dataclass("Extended", [("dummy_knob", int, knob)], bases=(TrainConfig,))
    parser = argparse.ArgumentParser(formatter_class=config_flags.DefaultsHelpFormatter)
    config_flags.add_arguments(parser, extended)
    config = config_flags.from_namespace(extended, parser.parse_args(["RUN", "--dummy-knob", "3", "--lr", "1e-3", "--resume"]))
    assert isinstance(config, extended)
    assert (config.run, config.dummy_knob, config.lr, config.resume) == ("RUN", 3, 1e-3, True)
    assert config_flags.from_namespace(extended, parser.parse_args(["RUN"])) == extended(run="RUN")
    assert "--dummy-knob DUMMY_KNOB a knob only this test has (default: 7)" in " ".join(parser.format_help().split())
    with pytest.raises(SystemExit):
        parser.parse_args(["RUN", "--dummy-knob", "0"])
    assert "--dummy-knob: must be a positive integer" in capsys.readouterr().err
    bare = dataclasses.make_dataclass("Bare", [("knob", int, 1)])
    with pytest.raises(TypeError, match="Bare.knob has no help"):
        config_flags.add_arguments(argparse.ArgumentParser(), bare)


def test_config_fields_are_the_flags_of_train_and_sample():
    from webtext.train.cli import build_parser
    from webtext.train.generate import SamplingConfig
    from webtext.train.config_flags import from_namespace
    from webtext.train.trainer import TrainConfig

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command, config_class, positional in (("train", TrainConfig, ["RUN"]), ("sample", SamplingConfig, ["CKPT"])):
        parser = commands[command]
        assert all(action.help for action in parser._actions), command
        flags = {flag for action in parser._actions for flag in action.option_strings}
        expected = {f.metadata["flag"] or "--" + f.name.replace("_", "-")
                    for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}
        assert expected <= flags
        defaults = from_namespace(config_class, parser.parse_args(positional))
        assert defaults == (TrainConfig(run="RUN") if command == "train" else SamplingConfig())
    sampled = from_namespace(SamplingConfig, commands["sample"].parse_args(["CKPT", "--max-tokens", "5", "--top-k", "3"]))
    assert (sampled.max_new_tokens, sampled.top_k) == (5, 3)


def test_every_trainer_flag_has_help_that_says_its_default():
    from webtext.train.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command in ("train", "sample", "eval", "export-hf", "import-hf"):
        parser = commands[command]
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.dest == "help":
                continue
            assert action.help, (command, action.dest)
            if action.option_strings:
                assert "default" in formatter._get_help_string(action), (command, action.option_strings)
    train_help = " ".join(commands["train"].format_help().split())
    for shown in ("--resume continue from the latest checkpoint of RUN/train/NAME (default: off)",
                  "--lr LR peak learning rate (default: 0.0006; at least 0)",
                  "(default: random weights, seeded by --seed)", "(default: run to --max-steps)",
                  "positional arguments: RUN the run directory"):
        assert shown in train_help, shown


def test_a_new_run_over_existing_checkpoints_is_refused(trained, caplog):
    train_dir = trained / RUN_TRAINING / "cli"
    before = sorted(p.name for p in train_dir.iterdir())
    assert main(["train", str(trained), *TINY, "--max-steps", "20", "--name", "cli"]) == 2
    assert "already holds checkpoints" in caplog.text and "--resume" in caplog.text
    assert sorted(p.name for p in train_dir.iterdir()) == before


def test_verify_shards_refuses_shards_of_another_tokenizer(trained, tmp_path, caplog):
    run = tmp_path / "run"
    for folder in (RUN_SHARDS, RUN_TOKENIZER.parent):
        shutil.copytree(trained / folder, run / folder)
    tokenizer = run / RUN_TOKENIZER
    tokenizer.write_bytes(tokenizer.read_bytes() + b"\n")
    assert main(["train", str(run), *TINY, "--max-steps", "1", "--verify-shards"]) == 2
    assert "rerun the shards stage" in caplog.text and not (run / RUN_TRAINING).exists()


def test_only_the_projects_errors_are_turned_into_exit_code_2(tmp_path, monkeypatch, caplog):
    from webtext.train import cli
    from webtext.train.model import ConfigError

    def fails(error):
        def handler(args):
            raise error
        return handler

    monkeypatch.setitem(cli.HANDLERS, "sample", fails(ConfigError("a bad setting")))
    assert main(["sample", str(tmp_path)]) == 2 and "a bad setting" in caplog.text
    monkeypatch.setitem(cli.HANDLERS, "sample", fails(ValueError("an internal bug")))
    with pytest.raises(ValueError, match="an internal bug"):  # a bug keeps its traceback
        main(["sample", str(tmp_path)])


def test_module_entry_point_and_import_graph():
    help_text = subprocess.run([sys.executable, "-m", "webtext.train", "train", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0
    for flag in ["--model", "--n-layer", "--n-head", "--n-embd", "--block-size", "--micro-batch", "--batch-tokens",
                 "--max-steps", "--lr", "--warmup", "--eval-every", "--ckpt-every", "--resume", "--device",
                 "--compile", "--seed", "--name", "--keep"]:
        assert flag in help_text.stdout, flag
    probe = (f"import sys, importlib\nfor m in {TRAIN_MODULES!r}: importlib.import_module(m)\n"
             f"print([m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}])")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"
    shards_only = subprocess.run([sys.executable, "-c", "import sys, webtext.train.shard_format; print('torch' in sys.modules)"],
                                 cwd=REPO, capture_output=True, text=True, timeout=60)
    assert shards_only.stdout.strip() == "False"  # the pipeline imports the format without torch


def gpt2_tokenizer(shared_data: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    folder = shared_data / "gpt2-tokenizer"
    tokenizer = Tokenizer(models.BPE.from_file(str(folder / "encoder.json"), str(folder / "vocab.bpe")))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|endoftext|>"])
    return tokenizer


@pytest.mark.realdata
@pytest.mark.slow
def test_shakespeare_with_the_gpt2_tokenizer_end_to_end(shared_data, tmp_path, capsys):
    tokenizer = gpt2_tokenizer(shared_data)
    assert tokenizer.encode("Hello world").ids == [15496, 995] and tokenizer.token_to_id("<|endoftext|>") == 50256
    (tmp_path / RUN_TOKENIZER.parent).mkdir()
    tokenizer.save(str(tmp_path / RUN_TOKENIZER))
    speeches = (shared_data / "text" / "tinyshakespeare.txt").read_text().split("\n\n")
    documents = ["\n\n".join(speeches[i:i + 40]) for i in range(0, len(speeches), 40)]
    infos = []
    (tmp_path / RUN_SHARDS).mkdir()
    for split in ("train", "val"):
        members = [d for i, d in enumerate(documents) if shard_format.split_for_doc(f"tiny-{i}", 0.1) == split]
        encoded = [np.append(e.ids, 50256) for e in tokenizer.encode_batch(members)]
        name = shard_format.shard_name(split, 0)
        stats = shard_format.write_shard(tmp_path / RUN_SHARDS / name, [(f"{split}-{i}", e) for i, e in enumerate(encoded)],
                                         "uint16", eot_id=50256)
        infos.append(ShardInfo.from_stats(name, split, stats))
    manifest = Manifest(root=tmp_path / RUN_SHARDS, tokenizer_sha256=shard_format.sha256_file(tmp_path / RUN_TOKENIZER),
                        vocab_size=50257, eot_id=50256, dtype="uint16", shards=infos)
    manifest.save()
    shard_format.verify(Manifest.load(tmp_path / RUN_SHARDS))
    assert main(["train", str(tmp_path), "--model", "tiny", "--block-size", "64", "--micro-batch", "4", "--max-steps",
                 "25", "--warmup", "3", "--lr", "1e-2", "--eval-every", "25", "--eval-batches", "4", "--ckpt-every", "25",
                 "--device", "cpu",
                 "--verify-shards"]) == 0
    tiny = tmp_path / RUN_TRAINING / "tiny"
    records = [json.loads(l) for l in (tiny / "log.jsonl").read_text().splitlines()]
    print([round(r["loss"], 2) for r in records])
    assert records[0]["loss"] > 10.0 and records[-1]["loss"] < 8.0  # from ln(50257) = 10.8 to well below it
    capsys.readouterr()
    assert main(["sample", str(tiny), "--prompt", "ROMEO:", "--max-tokens", "20", "--json"]) == 0
    assert last_json(capsys)["completion"]
    assert main(["eval", str(tiny), "--text", str(shared_data / "eval" / "wikitext-2_test.txt"),
                 "--micro-batch", "8", "--batches", "8"]) == 0
    on_wikitext = last_json(capsys)
    assert on_wikitext["tokens"] == 8 * 8 * 64 and 5.0 < on_wikitext["loss"] < 10.8


def copy_run(trained: Path, run: Path) -> Path:
    for folder in (RUN_SHARDS, RUN_TOKENIZER.parent):
        shutil.copytree(trained / folder, run / folder)
    return run


def one_error_line(caplog) -> str:
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in caplog.text, errors
    return errors[0]


def test_a_damaged_shard_stops_training_with_one_line_naming_it(trained, tmp_path, caplog):
    run = copy_run(trained, tmp_path / "run")
    shard = run / RUN_SHARDS / shard_format.shard_name("train", 0)
    flip_token_bytes(shard)
    caplog.clear()
    assert main(["train", str(run), *TINY, "--max-steps", "20", "--ckpt-every", "100"]) == 2
    error = one_error_line(caplog)
    assert error.startswith(f"{shard}: token id ") and "is outside the vocabulary of" in error
    assert not list((run / RUN_TRAINING).glob("*/ckpt-*"))


def test_a_wrong_sha256_in_the_manifest_stops_training_before_a_checkpoint(trained, tmp_path, caplog):
    run = copy_run(trained, tmp_path / "run")
    set_manifest_sha256(run / RUN_SHARDS, shard_format.shard_name("train", 1), "0" * 64)
    caplog.clear()
    assert main(["train", str(run), *TINY, "--max-steps", "2", "--ckpt-every", "100"]) == 2
    shard = run / RUN_SHARDS / shard_format.shard_name("train", 1)
    assert one_error_line(caplog).startswith(f"{shard}: sha256 ")
    assert not list((run / RUN_TRAINING).glob("*/ckpt-*"))
    caplog.clear()  # eval reports no loss from such shards either
    assert main(["eval", str(trained / RUN_TRAINING / "cli"), "--run", str(run), "--split", "train", "--batches", "1"]) == 2
    assert one_error_line(caplog).startswith(f"{shard}: sha256 ")
