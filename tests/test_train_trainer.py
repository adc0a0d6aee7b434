"""Tests for the training loop: learning, logs, exact resume, checkpoints (atomic, kept, refused), schedule."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.train_support import make_run
from webtext.train import checkpoint as ckpt
from webtext.train.model import GPT, named_config
from webtext.train.trainer import TrainConfig, accumulation_steps, lr_at, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    make_run(run)
    return run


def tiny_config(run: Path, name: str, **overrides) -> TrainConfig:
    values = dict(run=str(run), name=name, model="tiny", block_size=32, micro_batch=4, max_steps=12, lr=3e-3,
                  warmup=3, eval_every=4, eval_batches=2, ckpt_every=4, keep=10, device="cpu", seed=123)
    values.update(overrides)
    return TrainConfig(**values)


def read_log(train_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (train_dir / "log.jsonl").read_text().splitlines()]


def test_training_learns_and_logs(run_dir):
    result = train(tiny_config(run_dir, "learn", max_steps=40, eval_every=10, ckpt_every=20))
    records = read_log(result.train_dir)
    assert [r["step"] for r in records] == list(range(1, 41))
    assert all({"step", "loss", "lr", "tokens_per_s", "grad_norm"} <= r.keys() for r in records)
    assert [r["step"] for r in records if "val_loss" in r] == [10, 20, 30, 40]
    assert all(r["tokens_per_s"] > 0 for r in records) and records[-1]["mfu"] is None  # no peak known on CPU
    assert records[-1]["loss"] < records[0]["loss"] - 1.0
    assert records[-1]["val_loss"] < records[9]["val_loss"]
    csv_lines = (result.train_dir / "log.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,loss,val_loss,lr") and len(csv_lines) == 41
    assert (result.train_dir / "tokenizer.json").is_file()
    config = json.loads((result.train_dir / "config.json").read_text())
    assert config["model"]["n_layer"] == 2 and config["tokens_per_step"] == 4 * 32
    assert [p.name for p in ckpt.list_checkpoints(result.train_dir)] == ["ckpt-00000020", "ckpt-00000040"]


def test_stop_and_resume_gives_bit_identical_losses(run_dir):
    settings = dict(batch_tokens=2 * 4 * 32)  # two accumulated micro-batches per step
    full = train(tiny_config(run_dir, "full", **settings))
    stopped = train(tiny_config(run_dir, "parts", stop_after=5, **settings))
    assert stopped.step == 5 and stopped.last_checkpoint.name == "ckpt-00000005"
    resumed = train(tiny_config(run_dir, "parts", resume=True, **settings))
    assert sorted(resumed.losses) == list(range(6, 13))
    for step in range(6, 13):
        assert resumed.losses[step] == full.losses[step], step  # exact equality, not approximate
    assert [r["loss"] for r in read_log(resumed.train_dir)] == [r["loss"] for r in read_log(full.train_dir)]
    final_full, _ = ckpt.load_model(full.train_dir)
    final_resumed, _ = ckpt.load_model(resumed.train_dir)
    for (name, a), (_, b) in zip(final_full.state_dict().items(), final_resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_keeps_the_last_checkpoints_and_the_best(run_dir):
    result = train(tiny_config(run_dir, "keep", max_steps=12, ckpt_every=2, keep=2, lr=3e-2, warmup=0))
    kept = ckpt.list_checkpoints(result.train_dir)
    best = ckpt.best_checkpoint(result.train_dir)
    val = {int(p.name.split("-")[1]): ckpt.read_meta(p)["val_loss"] for p in kept}
    assert {"ckpt-00000010", "ckpt-00000012"} <= {p.name for p in kept} and len(kept) <= 3
    assert best in kept and ckpt.read_meta(best)["val_loss"] == min(val.values())
    assert min(result.val_losses.values()) == ckpt.read_meta(best)["val_loss"]


def test_resume_refuses_another_model_config(run_dir):
    train(tiny_config(run_dir, "shape", max_steps=4, stop_after=4))
    with pytest.raises(ckpt.CheckpointError, match=r"another model config; refusing n_layer=3 \(checkpoint has 2\)"):
        train(tiny_config(run_dir, "shape", resume=True, n_layer=3))
    with pytest.raises(ckpt.CheckpointError, match="n_embd=128"):
        train(tiny_config(run_dir, "shape", resume=True, model="mini"))
    resumed = train(tiny_config(run_dir, "shape", resume=True, block_size=None, max_steps=5))  # shape from the checkpoint
    assert sorted(resumed.losses) == [5] and resumed.model.config.block_size == 32
    model = GPT(named_config("tiny", vocab_size=320, block_size=64))
    with pytest.raises(ckpt.CheckpointError, match="block_size: checkpoint 32 vs model 64"):
        ckpt.load_weights(model, ckpt.resolve_checkpoint(run_dir / "train" / "shape"))


def test_resume_without_checkpoint_starts_fresh_and_init_from_loads_weights(run_dir):
    result = train(tiny_config(run_dir, "fresh", resume=True, max_steps=4))
    assert sorted(result.losses) == [1, 2, 3, 4]
    again = train(tiny_config(run_dir, "warm", init_from=str(result.train_dir), max_steps=1, lr=0.0, warmup=0,
                              model=None))
    # with lr 0 the first loss of the new run is the loss of the loaded weights, far below an untrained model's
    assert again.losses[1] < result.losses[1]


def test_training_state_is_loaded_weights_only(tmp_path):
    model = GPT(named_config("tiny", vocab_size=50, block_size=8))
    path = ckpt.save_checkpoint(tmp_path, 1, model, {}, torch.optim.AdamW(model.parameters()), {"step": 1})
    optimizer_state, state = ckpt.load_training_state(path)
    assert state == {"step": 1} and "param_groups" in optimizer_state
    torch.save({"step": 1, "payload": Path("/etc")}, path / ckpt.STATE)  # an arbitrary pickled object
    with pytest.raises(ckpt.CheckpointError, match="cannot load training state"):
        ckpt.load_training_state(path)
    weights_only = ckpt.save_checkpoint(tmp_path, 2, model, {})
    with pytest.raises(ckpt.CheckpointError, match="holds weights only"):
        ckpt.load_training_state(weights_only)


WRITER = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from webtext.train import checkpoint as ckpt
    from webtext.train.model import GPT, GPTConfig
    model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=256, block_size=64, vocab_size=8192))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
    optimizer.step()
    step = 0
    while True:
        step += 1
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(step)
        ckpt.save_checkpoint(Path(sys.argv[1]), step, model, {"val_loss": None}, optimizer, {"step": step})
        ckpt.prune_checkpoints(Path(sys.argv[1]), keep=2)
""")


def test_a_run_killed_while_writing_leaves_the_previous_checkpoint_intact(tmp_path):
    train_dir = tmp_path / "train"
    for attempt in range(5):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(train_dir)])
        try:
            deadline = time.time() + 120
            while time.time() < deadline and not (train_dir / "ckpt-00000001").exists():
                time.sleep(0.01)
            while time.time() < deadline:  # kill as soon as a later checkpoint is half written
                temps = [p for p in train_dir.glob(".tmp-ckpt-*") if not p.name.startswith(".tmp-ckpt-00000001")]
                if temps:
                    child.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.001)
        finally:
            child.kill()
            child.wait()
        if list(train_dir.glob(".tmp-ckpt-*")):
            break  # the kill landed inside a write, as intended
    else:
        pytest.fail("could not kill the writer while it was writing")
    complete = ckpt.list_checkpoints(train_dir)
    assert complete, "the earlier checkpoint vanished"
    latest = ckpt.resolve_checkpoint(train_dir)
    step = ckpt.read_meta(latest)["step"]
    model, _ = ckpt.load_model(latest)
    assert all(torch.all(p == step) for p in model.parameters())
    _, state = ckpt.load_training_state(latest)
    assert state == {"step": step}
    ckpt.remove_stale_temps(train_dir)
    assert not list(train_dir.glob(".tmp-*"))


def test_learning_rate_schedule():
    cfg = TrainConfig(run=".", lr=1.0, warmup=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1) and lr_at(500, cfg) == pytest.approx(0.1)
    values = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_batch_tokens_must_be_a_multiple_of_one_micro_step():
    cfg = TrainConfig(run=".", micro_batch=4, batch_tokens=4 * 32 * 2 * 3)
    assert accumulation_steps(cfg, 32, world_size=2) == 3
    with pytest.raises(ValueError, match="not a multiple of micro_batch x block_size x ranks"):
        accumulation_steps(replace(cfg, batch_tokens=1000), 32, world_size=2)
