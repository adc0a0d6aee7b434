"""Tests for the training loop: learning, logs, exact resume, checkpoints (atomic, kept, refused), schedule."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.train_support import make_run
from webtext.train import checkpoint as ckpt
from webtext.train import trainer
from webtext.train.shard_format import RUN_TRAINING
from webtext.train.model import GPT, named_config
from webtext.train.trainer import Distributed, TrainConfig, accumulation_steps, lr_at, optimizer_step, train


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
    lrs = [r["lr"] for r in records]  # warmup=3: the peak at step 3 only, the minimum at the last step
    assert lrs[:3] == pytest.approx([1e-3, 2e-3, 3e-3]) and lrs.count(max(lrs)) == 1
    assert lrs[-1] == pytest.approx(3e-4, rel=1e-12)
    assert records[-1]["val_loss"] < records[9]["val_loss"]
    csv_lines = (result.train_dir / "log.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,loss,val_loss,lr") and len(csv_lines) == 41
    assert (result.train_dir / "tokenizer.json").is_file()
    config = json.loads((result.train_dir / "config.json").read_text())
    assert config["model"]["n_layer"] == 2 and config["tokens_per_step"] == 4 * 32
    assert [p.name for p in ckpt.list_checkpoints(result.train_dir)] == ["ckpt-00000020", "ckpt-00000040"]


def tensorboard_scalars(train_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar as TensorBoard shows it (an earlier run's purged events left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(train_dir / "tensorboard"), purge_orphaned_data=True).Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_tensorboard_shows_the_logged_values_and_a_resume_replaces_what_follows_its_checkpoint(run_dir):
    settings = dict(max_steps=8, eval_every=4, ckpt_every=4)
    full = train(tiny_config(run_dir, "tb-full", **settings))
    logged = [(r["step"], r["loss"]) for r in read_log(full.train_dir)]
    assert [step for step, _ in tensorboard_scalars(full.train_dir, "loss")] == list(range(1, 9))
    assert [value for _, value in tensorboard_scalars(full.train_dir, "loss")] == pytest.approx([v for _, v in logged])
    assert [step for step, _ in tensorboard_scalars(full.train_dir, "val_loss")] == [4, 8]

    stopped = train(tiny_config(run_dir, "tb-parts", stop_after=6, **settings))
    shutil.rmtree(stopped.last_checkpoint)  # as if killed after logging step 6, before its checkpoint
    time.sleep(1.1)  # TensorBoard reads event files in name order, and names start with the second they were made
    train(tiny_config(run_dir, "tb-parts", resume=True, **settings))  # resumes at step 4: steps 5 and 6 come again
    resumed = sorted(tensorboard_scalars(full.train_dir.parent / "tb-parts", "loss"))  # two event files: sort by step
    assert [step for step, _ in resumed] == list(range(1, 9))  # steps 5 and 6 once: the first run's are purged
    assert [value for _, value in resumed] == pytest.approx([v for _, v in logged])


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
        ckpt.load_weights(model, ckpt.resolve_checkpoint(run_dir / RUN_TRAINING / "shape"))


def test_resume_without_checkpoint_is_refused_and_init_from_loads_weights(run_dir):
    with pytest.raises(ckpt.CheckpointError, match=r"--resume: no checkpoint in .*fresh to resume from"):
        train(tiny_config(run_dir, "fresh", resume=True, max_steps=4))
    assert not (run_dir / RUN_TRAINING / "fresh").exists()
    result = train(tiny_config(run_dir, "fresh", max_steps=4))
    assert sorted(result.losses) == [1, 2, 3, 4]
    again = train(tiny_config(run_dir, "warm", init_from=str(result.train_dir), max_steps=1, lr=0.0, warmup=0,
                              model=None))
    # with lr 0 the first loss of the new run is the loss of the loaded weights, far below an untrained model's
    assert again.losses[1] < result.losses[1]


def test_a_new_run_into_a_directory_with_checkpoints_is_refused(run_dir):
    first = train(tiny_config(run_dir, "taken", max_steps=8, stop_after=4))
    log_before = (first.train_dir / "log.jsonl").read_text()
    with pytest.raises(ckpt.CheckpointError, match=r"already holds checkpoints \(latest ckpt-00000004\); pass --resume"):
        train(tiny_config(run_dir, "taken", max_steps=8))
    assert [p.name for p in ckpt.list_checkpoints(first.train_dir)] == ["ckpt-00000004"]
    assert (first.train_dir / "log.jsonl").read_text() == log_before
    resumed = train(tiny_config(run_dir, "taken", max_steps=8, resume=True))
    assert sorted(resumed.losses) == [5, 6, 7, 8]


def test_default_name_follows_the_shape():
    assert TrainConfig(run="r").train_dir == Path("r/train/gpt2")
    assert TrainConfig(run="r", model="tiny").train_dir.name == "tiny"
    assert TrainConfig(run="r", model="gpt2", n_layer=12).train_dir.name == "gpt2"  # the named shape itself
    assert TrainConfig(run="r", n_layer=6).train_dir.name == "l6-h12-e768"
    assert TrainConfig(run="r", model="tiny", n_embd=128).train_dir.name == "l2-h2-e128"
    assert TrainConfig(run="r", n_layer=6, name="mine").train_dir.name == "mine"


class _FixedBatches:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def next(self):
        return self.x, self.y


@pytest.mark.parametrize("grad_clip", [0.0, -1.0, 1e-3])
def test_grad_clip_zero_turns_clipping_off(grad_clip):
    model = GPT(named_config("tiny", vocab_size=50, block_size=8))
    x, y = torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8))
    model(x, y)[1].backward()
    grads = [p.grad.clone() for p in model.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    before = [p.detach().clone() for p in model.parameters()]
    model.zero_grad()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    _, grad_norm = optimizer_step(model, model, optimizer, _FixedBatches(x, y), 1, torch.device("cpu"),
                                  Distributed(), grad_clip)
    assert grad_norm.item() == pytest.approx(norm.item(), rel=1e-5)  # the norm before clipping, for the log
    scale = 1.0 if grad_clip <= 0 else grad_clip / norm.item()
    for p, p0, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p0 - p.detach(), scale * g, rtol=1e-3, atol=1e-7)


def test_tokens_per_second_excludes_eval_and_checkpoint_time(run_dir, monkeypatch):
    """Eval and save move the trainer's clock on by an hour each: an interval that counted them would show it."""
    real_evaluate, real_save = trainer.evaluate, ckpt.save_checkpoint
    hour, skipped = 3600.0, []
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(time=lambda: time.time() + hour * len(skipped)))

    def slow_evaluate(*args, **kwargs):
        skipped.append("eval")
        return real_evaluate(*args, **kwargs)

    def slow_save(*args, **kwargs):
        skipped.append("save")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", slow_evaluate)
    monkeypatch.setattr(ckpt, "save_checkpoint", slow_save)
    result = train(tiny_config(run_dir, "timing", max_steps=6, eval_every=2, ckpt_every=2))
    records = read_log(result.train_dir)
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4, 6] and len(skipped) >= 6
    assert all(4 * 32 / r["tokens_per_s"] < hour for r in records), [r["tokens_per_s"] for r in records]


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


def test_an_interrupted_replacement_is_recovered_at_startup(tmp_path):
    model = GPT(named_config("tiny", vocab_size=50, block_size=8))
    first = ckpt.save_checkpoint(tmp_path, 1, model, {"val_loss": 2.0})
    second = ckpt.save_checkpoint(tmp_path, 2, model, {"val_loss": 1.0})
    # killed between the two renames of a replacement of ckpt-2: the old copy is in the trash, the new one a temp
    second.rename(tmp_path / ".trash-ckpt-00000002-4242")
    (tmp_path / ".tmp-ckpt-00000002-4242").mkdir()
    (tmp_path / ".tmp-ckpt-00000003-4242").mkdir()  # an unfinished write: no meta.json
    ckpt.remove_stale_temps(tmp_path)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-00000001", "ckpt-00000002"]
    assert ckpt.read_meta(second)["val_loss"] == 1.0 and not list(tmp_path.glob(".t*"))
    # killed after the temp was complete but before its rename: it is promoted
    done = ckpt.save_checkpoint(tmp_path, 3, model, {"val_loss": 0.5})
    done.rename(tmp_path / ".tmp-ckpt-00000003-4242")
    ckpt.remove_stale_temps(tmp_path)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-00000001", "ckpt-00000002", "ckpt-00000003"]
    # a trash copy whose checkpoint is in place is only deleted
    shutil.copytree(first, tmp_path / ".trash-ckpt-00000001-7")
    ckpt.remove_stale_temps(tmp_path)
    assert not list(tmp_path.glob(".t*")) and ckpt.is_checkpoint(first)


def test_keep_must_be_at_least_one(tmp_path):
    ckpt.save_checkpoint(tmp_path, 1, GPT(named_config("tiny", vocab_size=50, block_size=8)), {})
    for keep in (0, -1):
        with pytest.raises(ValueError, match="keep must be at least 1"):
            ckpt.prune_checkpoints(tmp_path, keep)
    assert len(ckpt.list_checkpoints(tmp_path)) == 1
    with pytest.raises(ValueError, match="keep must be at least 1"):
        train(TrainConfig(run=str(tmp_path), keep=0, device="cpu"))


def test_learning_rate_schedule():
    """Steps are 1-based: the peak is used once (at the last warmup step), min_lr exactly at max_steps."""
    cfg = TrainConfig(run=".", lr=1.0, warmup=10, max_steps=110, min_lr_ratio=0.1)
    values = [lr_at(s, cfg) for s in range(1, cfg.max_steps + 1)]
    assert values[0] == pytest.approx(0.1) and values[8] == pytest.approx(0.9) and values[9] == 1.0
    assert values.count(1.0) == 1 and values[10] < 1.0 and lr_at(60, cfg) == pytest.approx(0.55)
    assert values[-1] == pytest.approx(0.1, rel=1e-12) and lr_at(500, cfg) == pytest.approx(0.1, rel=1e-12)
    assert all(a > b for a, b in zip(values[9:], values[10:]))
    no_warmup = replace(cfg, warmup=0, max_steps=5)
    values = [lr_at(s, no_warmup) for s in range(1, 6)]
    assert values[0] == 1.0 and values.count(1.0) == 1 and values[-1] == pytest.approx(0.1, rel=1e-12)


def test_batch_tokens_must_be_a_multiple_of_one_micro_step():
    cfg = TrainConfig(run=".", micro_batch=4, batch_tokens=4 * 32 * 2 * 3)
    assert accumulation_steps(cfg, 32, world_size=2) == 3
    with pytest.raises(ValueError, match="not a multiple of micro_batch x block_size x ranks"):
        accumulation_steps(replace(cfg, batch_tokens=1000), 32, world_size=2)


def test_an_unknown_attention_backend_is_refused_before_anything_is_written(run_dir):
    with pytest.raises(trainer.ConfigError, match="attention must be one of cudnn, flash, efficient, auto"):
        train(tiny_config(run_dir, "bad-attention", attention="fastest"))
    assert not (run_dir / RUN_TRAINING / "bad-attention").exists()
    for choice in ("cudnn", "flash", "efficient", "auto"):  # every choice is a no-op off CUDA
        with trainer.attention_backends(torch.device("cpu"), choice):
            pass


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run_and_checkpoints_plain_weights(run_dir):
    """--compile (Inductor on the CPU here), with the chunked loss's graph break: same losses as eager, plain keys."""
    settings = dict(max_steps=4, eval_every=2, ckpt_every=4, loss_chunk=48)
    eager = train(tiny_config(run_dir, "eager", **settings))
    compiled = train(tiny_config(run_dir, "compiled", compile=True, **settings))
    assert sorted(compiled.losses) == [1, 2, 3, 4]
    for step, loss in eager.losses.items():
        assert compiled.losses[step] == pytest.approx(loss, rel=1e-4), step
    assert compiled.val_losses[4] == pytest.approx(eager.val_losses[4], rel=1e-4)
    weights, _ = ckpt.load_model(compiled.train_dir)
    assert not any("_orig_mod" in name for name in weights.state_dict())


def test_a_remote_run_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(trainer.ConfigError, match=r"local run directory.*gsutil -m cp -r gs://bucket/run/shards"):
        train(TrainConfig(run="gs://bucket/run", device="cpu"))
