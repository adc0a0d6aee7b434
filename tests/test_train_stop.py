"""A trainer sent SIGTERM (Airflow killing its task) stops at a step boundary with a checkpoint of that step, exits
non-zero saying so, and `--resume` continues from that checkpoint."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.train_support import make_run
from webtext.train import checkpoint as ckpt
from webtext.train.cli import main
from webtext.train.shard_format import RUN_TRAINING

TINY = ["--model", "tiny", "--block-size", "32", "--micro-batch", "4", "--warmup", "2", "--device", "cpu",
        "--max-steps", "100000", "--ckpt-every", "5", "--eval-every", "5", "--name", "stopped"]


@pytest.mark.slow
def test_sigterm_stops_training_at_a_step_with_a_checkpoint_that_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    make_run(run, train_docs=200, val_docs=20)
    train_dir = run / RUN_TRAINING / "stopped"
    trainer = subprocess.Popen([sys.executable, "-m", "webtext.train", "train", str(run), *TINY],
                               start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ckpt.list_checkpoints(train_dir):
            assert trainer.poll() is None, trainer.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300s"
            time.sleep(0.1)
        os.killpg(trainer.pid, signal.SIGTERM)  # as Airflow kills a task: the whole process group
        _, stderr = trainer.communicate(timeout=120)
    finally:
        if trainer.poll() is None:
            os.killpg(trainer.pid, signal.SIGKILL)
            trainer.wait()

    assert trainer.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM at step" in stderr and "Traceback" not in stderr
    latest = ckpt.list_checkpoints(train_dir)[-1]
    step = ckpt.read_meta(latest)["step"]
    assert f"stopped by SIGTERM at step {step}; checkpoint {latest} written" in stderr
    model, meta = ckpt.load_model(latest)  # whole: weights, config and meta load
    assert meta["step"] == step and model.config.vocab_size > 0
    assert not [p for p in train_dir.iterdir() if p.name.startswith(".")]  # no temp directory left behind

    capsys.readouterr()
    assert main(["train", str(run), *TINY, "--stop-after", str(step + 2), "--resume"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == step + 2
    assert ckpt.read_meta(ckpt.list_checkpoints(train_dir)[-1])["step"] == step + 2
