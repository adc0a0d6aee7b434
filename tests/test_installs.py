"""What a plain install gives (no `train` extra, with or without `gcp`): data stages that never import torch, a trainer
that says which extra it needs, the same log output either way, and the wheel that Dataflow workers install."""
from __future__ import annotations

import re
import subprocess
import sys
import time
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from tests.cloud_peers import isolated_env, public_names_resolved
from webtext.pipeline.demo_dump import make_sample_dump
from webtext.pipeline import dataflow
from webtext.pipeline.layout import DATA_STAGES, TRAIN_COMMANDS


def python(code: str, env: dict | None = None, cwd: Path | None = None, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


NO_TORCH_IMPORTED = """
import importlib, pkgutil, sys
import webtext.crawl, webtext.dedup, webtext.pipeline
for package in (webtext.crawl, webtext.dedup, webtext.pipeline):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
from webtext.pipeline.cli import main
for stage in sys.argv[1:]:
    try:
        main([stage, "--help"])
    except SystemExit as done:
        assert done.code == 0, stage
print(sorted(name for name in sys.modules if name.partition(".")[0] == "torch"))
"""


def test_the_data_stages_never_import_torch(tmp_path):
    done = python(NO_TORCH_IMPORTED, None, tmp_path, *DATA_STAGES)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


TRAINER_COMMANDS = """
import sys
from webtext.pipeline.cli import main
print([main([command, "RUN"]) for command in sys.argv[1:]])
"""


def test_the_trainer_without_torch_says_to_install_the_train_extra(tmp_path):
    done = python(TRAINER_COMMANDS, isolated_env(tmp_path, block=("torch",)), tmp_path, *TRAIN_COMMANDS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str([2] * len(TRAIN_COMMANDS))
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(TRAIN_COMMANDS)  # one line each, no traceback
    for command, line in zip(TRAIN_COMMANDS, lines):
        assert line.startswith(f"webtext {command}: error:") and "pip install 'webtext[train]'" in line


def normalised(stderr: str, run: Path) -> list[str]:
    """The lines without what changes from run to run: timestamps, durations, the run folder."""
    text = stderr.replace(str(run), "RUN")
    text = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", "", text, flags=re.M)
    return re.sub(r"\d+\.\d+s\b", "N s", text).splitlines()


@pytest.mark.slow
def test_the_log_output_is_the_same_with_and_without_the_gcp_extra(tmp_path):
    dump = tmp_path / "RS_2017-01.zst"
    make_sample_dump(dump, n=200, seed=3)
    outputs = {}
    # Without the gcp extra, Beam's import-time "apitools not found" warning configured the root logger (in the
    # command and in each worker): blocking apitools reproduces that here.
    for case, blocked in (("with gcp", ()), ("without gcp", ("apitools",))):
        env = isolated_env(tmp_path / case, block=blocked)
        if case == "without gcp":
            probe = python("import logging, apache_beam.io.gcp.internal.clients.bigquery; "
                           "print(len(logging.getLogger().handlers))", env, tmp_path)
            assert "apitools not found" in probe.stderr and probe.stdout.strip() == "1"
        run = tmp_path / case / "run"
        done = subprocess.run([sys.executable, "-m", "webtext.pipeline.cli", "links", str(run), "--reddit-dumps",
                               str(dump), "--direct_num_workers=2"], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[case] = normalised(done.stderr, run)
        assert public_names_resolved(tmp_path / case) == []  # no Prism download, nothing else looked up
    assert outputs["with gcp"] == outputs["without gcp"]
    text = "\n".join(outputs["with gcp"])
    for noise in ("apitools", "Logging handler created", "rism", "Discarding unparseable args"):
        assert noise not in text
    assert any(line.startswith("INFO webtext.pipeline.links_stage: ") and "200 lines read" in line
               for line in outputs["with gcp"])  # the workers' own progress, in our format
    assert "links: done in N s" in outputs["with gcp"]


# -- the wheel that Dataflow workers install ---------------------------------------------------------------------------

def wheel_metadata(wheel: Path) -> tuple[set[str], list[str]]:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        return names, Parser().parsestr(archive.read(metadata).decode()).get_all("Requires-Dist") or []


def test_the_dataflow_wheel_is_staged_only_when_the_user_staged_nothing():
    assert dataflow.staging_args(["--runner=FnApiRunner"]) == []
    for own in (["--extra_package", "x.whl"], ["--setup_file=./setup.py"], ["--requirements_file", "r.txt"],
                ["--sdk_container_image=europe-docker.pkg.dev/p/r/webtext:1"]):
        assert dataflow.staging_args(["--runner", "DataflowRunner", *own]) == [], own
    assert dataflow.is_dataflow(["--runner=apache_beam.runners.dataflow.dataflow_runner.DataflowRunner"])
    assert dataflow.template_location(["--template_location", "gs://b/t.json"]) == "gs://b/t.json"


def test_a_template_is_one_beam_stage_on_dataflow(tmp_path, webtext_cli, capsys):
    template = ["--template_location", str(tmp_path / "t.json")]
    assert webtext_cli("links", tmp_path / "run", "--reddit-dumps", "x.zst", *template) == 2
    assert "add --runner DataflowRunner" in capsys.readouterr().err
    assert webtext_cli("build", tmp_path / "run", "--runner", "DataflowRunner", *template) == 2
    assert "give it to one stage's command (webtext links|crawl|dedup|shards RUN" in capsys.readouterr().err
    assert webtext_cli("tokenizer", tmp_path / "run", "--runner", "DataflowRunner", *template) == 2
    assert "tokenizer runs no Beam job" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "t.json").exists()


@pytest.mark.slow
def test_the_wheel_of_an_editable_and_of_a_plain_install(tmp_path):
    """The editable install's wheel is built from its project folder; installed from that wheel, webtext repacks its
    own files into an equivalent wheel. Neither requires torch outside the `train` extra."""
    built = Path(dataflow.staging_args(["--runner", "DataflowRunner"])[0].split("=", 1)[1])
    names, requires = wheel_metadata(built)
    assert {"webtext/pipeline/cli.py", "webtext/crawl/reddit/data/blocked_domains.txt",
            "webtext/pipeline/data/webtext_domains.txt", "webtext/train/model.py"} <= names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "build/"))]
    assert [r for r in requires if r.startswith("torch")] == ['torch>=2.4; extra == "train"']
    assert any(r.startswith("apache-beam") and "extra" not in r for r in requires)

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "--target", str(target), str(built)], check=True, timeout=300)
    env = isolated_env(tmp_path, block=("torch",))
    env["PYTHONPATH"] = f"{target}:{env['PYTHONPATH']}"
    done = python(REPACK, env, tmp_path, str(tmp_path / "repacked"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [str(target / "webtext" / "pipeline" / "__init__.py"), "None"]
    repacked = tmp_path / "repacked" / built.name
    repacked_names, repacked_requires = wheel_metadata(repacked)
    assert repacked_requires == requires
    assert repacked_names == names  # the same files; scripts come back from entry_points.txt on install
    with zipfile.ZipFile(repacked) as archive:
        assert archive.testzip() is None
        record = archive.read(next(n for n in repacked_names if n.endswith(".dist-info/RECORD"))).decode()
    assert len(record.splitlines()) == len(repacked_names)


REPACK = """
import shutil, sys
from pathlib import Path
import webtext.pipeline
from webtext.pipeline import dataflow
print(webtext.pipeline.__file__, dataflow.installed_webtext()[1])
Path(sys.argv[1]).mkdir()
shutil.copy(dataflow.webtext_wheel(), sys.argv[1])
"""


def test_gs_without_google_credentials_fails_at_once_saying_what_to_do(tmp_path):
    pytest.importorskip("google.auth", reason="needs the gcp extra")
    from tests.cloud_peers import free_port

    closed = f"127.0.0.1:{free_port()}"  # nothing listens: no metadata server, no Google Cloud Storage
    env = isolated_env(tmp_path, GCE_METADATA_HOST=closed, GCE_METADATA_IP=closed, NO_GCE_CHECK="true",
                       CLOUDSDK_CONFIG=str(tmp_path / "no-gcloud"), GOOGLE_APPLICATION_CREDENTIALS="",
                       STORAGE_EMULATOR_HOST=f"http://{closed}")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "webtext.pipeline.cli", "stats", "gs://bucket/run"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 15  # not Beam's 30 s of retries
    assert done.returncode == 2
    assert "gcloud auth application-default login" in done.stderr and "GOOGLE_APPLICATION_CREDENTIALS" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and public_names_resolved(tmp_path) == []
