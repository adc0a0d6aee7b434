"""DDP on CPU with the gloo backend and 2 processes: gradients stay in sync and ranks split the data."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.train_support import make_run
from webtext.train import checkpoint as ckpt
from webtext.train.shard_format import RUN_SHARDS, RUN_TRAINING, ShardFormatError
from webtext.train.trainer import TrainConfig, train

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config(run: Path, name: str, **overrides) -> TrainConfig:
    values = dict(run=str(run), name=name, model="tiny", block_size=32, micro_batch=4, max_steps=6, lr=3e-3,
                  warmup=2, eval_every=3, eval_batches=2, ckpt_every=6, device="cpu", seed=5)
    values.update(overrides)
    return TrainConfig(**values)


def _rank_worker(rank: int, world_size: int, port: int, cfg: TrainConfig, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train(cfg)
    torch.save({"state": result.model.state_dict(), "losses": result.losses, "val": result.val_losses},
               Path(out_dir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ddp-run")
    make_run(run)
    return run


def test_two_ranks_equal_one_process_accumulating_the_same_global_batch(run_dir, tmp_path):
    batch_tokens = 4 * 4 * 32  # DDP: 2 ranks x 2 accumulated micro-batches; single process: 4 micro-batches
    mp.spawn(_rank_worker, args=(2, free_port(), config(run_dir, "ddp", batch_tokens=batch_tokens), str(tmp_path)),
             nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, tensor in ranks[0]["state"].items():
        assert torch.equal(tensor, ranks[1]["state"][name]), f"{name} differs between ranks: gradients not synced"
    assert ranks[0]["losses"] == ranks[1]["losses"] and ranks[0]["val"] == ranks[1]["val"]

    torch.set_num_threads(1)
    single = train(config(run_dir, "single", batch_tokens=batch_tokens))
    # same windows in each step (micro-step m, rank r = micro-step 2m + r) and mean gradients: equal up to float summation order
    for name, tensor in single.model.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    for step, loss in single.losses.items():
        assert ranks[0]["losses"][step] == pytest.approx(loss, rel=1e-5)

    # only rank 0 wrote: one log with one record per step, and the checkpoint
    records = [json.loads(line) for line in (run_dir / RUN_TRAINING / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert json.loads((run_dir / RUN_TRAINING / "ddp" / "config.json").read_text())["world_size"] == 2
    assert [p.name for p in ckpt.list_checkpoints(run_dir / RUN_TRAINING / "ddp")] == ["ckpt-00000006"]


def test_ranks_without_accumulation_differ_from_one_rank_alone(run_dir, tmp_path):
    """Sanity check of the test above: a single process with half the batch does not match DDP."""
    mp.spawn(_rank_worker, args=(2, free_port(), config(run_dir, "ddp2", max_steps=3), str(tmp_path)),
             nprocs=2, join=True)
    ddp = torch.load(tmp_path / "rank0.pt", weights_only=True)
    alone = train(config(run_dir, "alone", max_steps=3))
    assert any(not torch.allclose(ddp["state"][n], t, rtol=1e-4, atol=1e-5) for n, t in alone.model.state_dict().items())


@pytest.mark.slow
def test_torchrun_runs_the_command_line_with_two_processes(run_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "-m", "webtext.train", "train", str(run_dir), "--model", "tiny", "--block-size", "32",
               "--micro-batch", "2", "--batch-tokens", "256", "--max-steps", "3", "--warmup", "1",
               "--eval-every", "3", "--ckpt-every", "3", "--device", "cpu", "--name", "torchrun"]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])  # printed by rank 0 only
    assert summary["step"] == 3 and summary["checkpoint"].endswith("ckpt-00000003")
    config_record = json.loads((run_dir / RUN_TRAINING / "torchrun" / "config.json").read_text())
    assert config_record["world_size"] == 2 and config_record["accumulation_steps"] == 2


def _verify_worker(rank: int, world_size: int, port: int, cfg: TrainConfig, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        train(cfg)
        outcome = "trained"
    except ShardFormatError as error:
        outcome = f"refused: {error}"
    (Path(out_dir) / f"rank{rank}.txt").write_text(outcome)


def test_a_damaged_shard_stops_every_rank_with_rank_0s_message(run_dir, tmp_path):
    damaged = tmp_path / "run"
    shutil.copytree(run_dir / RUN_SHARDS, damaged / RUN_SHARDS)
    shard = sorted((damaged / RUN_SHARDS).glob("train-*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    cfg = config(damaged, "verify", max_steps=2, verify_shards=True)
    processes = mp.spawn(_verify_worker, args=(2, free_port(), cfg, str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not processes.join(timeout=1):
        if time.monotonic() > deadline:
            for process in processes.processes:
                process.kill()
            pytest.fail("a rank still waits two minutes after rank 0 found the damaged shard")
    outcomes = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert outcomes[0] == outcomes[1]
    assert outcomes[0].startswith("refused: ") and shard.name in outcomes[0] and "sha256" in outcomes[0]
    assert not (damaged / RUN_TRAINING / "verify").exists()


@pytest.mark.slow
def test_compiled_ddp_matches_uncompiled_ddp(run_dir, tmp_path):
    """torch.compile wraps the DDP module (gloo, Inductor on the CPU): the same losses and weights as without it."""
    settings = dict(max_steps=3, eval_every=3, ckpt_every=3, batch_tokens=2 * 2 * 4 * 32)
    for name, compiled in (("ddp-eager", False), ("ddp-compiled", True)):
        (tmp_path / name).mkdir()
        cfg = config(run_dir, name, compile=compiled, **settings)
        mp.spawn(_rank_worker, args=(2, free_port(), cfg, str(tmp_path / name)), nprocs=2, join=True)
    eager, compiled = (torch.load(tmp_path / name / "rank0.pt", weights_only=True) for name in ("ddp-eager", "ddp-compiled"))
    for step, loss in eager["losses"].items():
        assert compiled["losses"][step] == pytest.approx(loss, rel=1e-4), step
    for name, tensor in eager["state"].items():
        # Adam's normalised steps turn fusion-order rounding of near-zero gradients into up to ~1e-5 of weight
        torch.testing.assert_close(compiled["state"][name], tensor, rtol=1e-3, atol=1e-4, msg=name)
    other_rank = torch.load(tmp_path / "ddp-compiled" / "rank1.pt", weights_only=True)
    assert all(torch.equal(t, other_rank["state"][n]) for n, t in compiled["state"].items())
