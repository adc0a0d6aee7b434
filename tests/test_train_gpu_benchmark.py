"""The GPU benchmark script a GPU session runs in one call: its checks and its sweep work (tiny model, CPU)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from webtext.train.shard_format import MANIFEST_NAME, RUN_SHARDS

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "train_gpu.py"


@pytest.mark.slow
def test_checks_pass_on_the_cpu():
    done = subprocess.run([sys.executable, str(SCRIPT), "--check", "--smoke"], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    verdicts = [line.split()[0] for line in done.stdout.splitlines() if line[:4] in ("PASS", "FAIL", "SKIP")]
    assert verdicts.count("PASS") >= 5 and "FAIL" not in verdicts
    assert "# checks: 0 failed" in done.stdout


@pytest.mark.slow
def test_sweep_times_both_systems_and_writes_its_report(tmp_path):
    report_path, child_log = tmp_path / "sweep.json", tmp_path / "children.log"
    done = subprocess.run([sys.executable, str(SCRIPT), "--sweep", "--smoke", "--json", str(report_path),
                           "--child-log", str(child_log)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["machine"]["device"] == "cpu" and report["loader_tokens_per_s"] > 0
    results = report["results"]
    systems = {(r["spec"]["system"], r["spec"]["batch_size"], r["spec"]["loss_chunk"]) for r in results}
    assert {("transformers", 2, 8192), ("ours", 2, 8192), ("ours", 2, 0)} <= systems
    assert any(r["spec"]["system"] == "ours" and r["spec"]["batch_size"] == 4 for r in results)
    for result in results:
        assert result["tokens_per_s"] > 0 and len(result["tokens_per_s_groups"]) == 2, result
        assert 9.0 < result["final_loss"] < 12.0, result  # random tokens over a 50k vocabulary: about ln(50257)
    assert "fastest ours / transformers" in done.stdout
    assert child_log.read_text().count("=====") == len(results)


@pytest.mark.realdata
def test_real_shards_for_the_benchmark_are_built_from_the_shared_texts(shared_data, tmp_path):
    run = tmp_path / "bench"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "real_shards.py"), str(run), "--data", str(shared_data)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((run / RUN_SHARDS / MANIFEST_NAME).read_text())
    assert manifest["vocab_size"] == 50257 and manifest["dtype"] == "uint16"
    splits = {shard["split"] for shard in manifest["shards"]}
    assert splits == {"train", "val"} and sum(shard["tokens"] for shard in manifest["shards"]) > 500_000
