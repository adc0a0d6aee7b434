"""The Airflow DAG: it loads and chains every data stage then training; its params reach `webtext` as arguments that no
shell evaluates; and `airflow dags test` builds a small run end to end offline (the crawl replays WARC records)."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.test_crawl_stage import SAMPLE_OPTIONS, WARC_FILES
from tests.testweb import write_links

DAG_ID = "webtext_build"
VENV_BIN = str(Path(sys.executable).parent)

CHECK = r"""
import json, sys
from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags["webtext_build"]
order, task = [], dag.get_task("links")
while task is not None:
    order.append(task.task_id)
    task = next(iter(task.downstream_list), None)

class TryOf:
    def __init__(self, number):
        self.try_number = number

def render(params):
    try:
        return {t.task_id: t.render_template(t.bash_command, {"params": params, "ti": TryOf(1)}, dag.get_template_env())
                for t in dag.tasks}
    except Exception as error:
        return f"{type(error).__name__}: {error}"

def outcome_of_exit(code):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    task = dag.get_task("dedup")
    task.bash_command = f"exit {code}"
    try:
        task.execute({})
    except AirflowFailException:
        return "failed for good"
    except AirflowException:
        return "retried"
    return "succeeded"

rendered = [render(params) for params in json.loads(sys.argv[2])]  # before outcome_of_exit changes a command
train_retry = dag.get_task("train").render_template(dag.get_task("train").bash_command,
                                                     {"params": json.loads(sys.argv[2])[0], "ti": TryOf(2)},
                                                     dag.get_template_env())
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "order": order,
                  "exits": {code: outcome_of_exit(code) for code in (0, 1, 2, 143)}, "train_retry": train_retry,
                  "commands": {t.task_id: t.bash_command for t in dag.tasks},
                  "rendered": rendered,
                  "retries": {t.task_id: t.retries for t in dag.tasks}, "max_active_runs": dag.max_active_runs,
                  "params": sorted(dag.params.keys())}))
"""

SHIM = """#!{python}
import json, os, sys
with open(os.environ["WEBTEXT_SHIM_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
                AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"), AIRFLOW__CORE__UNIT_TEST_MODE="False",
                PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""), **extra)


SENTINEL = "WEBTEXT_TEST_SENTINEL"  # the environment variable naming the file that an evaluated payload would create


def hostile_params(folder: Path) -> dict[str, str]:
    """Params holding `;`, `$(…)`, backticks, quotes and spaces; each payload, if a shell ran it, would create the file
    that $WEBTEXT_TEST_SENTINEL names (no `/` in them: `run` and `config` are real file names in the dags test)."""
    touch = f'touch "${SENTINEL}"'
    return {
        "run": str(folder / f"a run; {touch} $({touch}) `{touch}` 'q\" & {touch}"),
        "config": str(folder / f"conf $({touch}) \"q'; {touch}.toml"),
        "beam_args": f"--runner=FnApiRunner --job_name \"x $({touch}) `{touch}`; {touch}\" '--labels=a b'",
        "train_args": f"--name 'tiny $({touch})'",
    }


def with_bare_operators(params: dict[str, str]) -> dict[str, str]:
    """The option lists followed by shell operators outside quotes (`webtext` rejects those words as unknown flags)."""
    touch = f'touch "${SENTINEL}"'
    return {**params, "beam_args": f"{params['beam_args']} ; {touch} && {touch}",
            "train_args": f"{params['train_args']} | {touch} > out"}


PLAIN = {"run": "r", "config": "", "beam_args": "", "train_args": ""}
UNBALANCED = {**PLAIN, "beam_args": "--job_name 'x"}


@pytest.fixture(scope="module")
def dag_info(tmp_path_factory) -> dict:
    """The DAG as Airflow loads it, and its commands rendered for plain, hostile and unbalanced params."""
    home = tmp_path_factory.mktemp("airflow-load")
    param_sets = [PLAIN, with_bare_operators(hostile_params(home)), UNBALANCED]
    result = subprocess.run([sys.executable, "-c", CHECK, str(REPO_ROOT / "dags"), json.dumps(param_sets)],
                            capture_output=True, text=True, env=airflow_env(home), cwd=home, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    info["home"], info["hostile"] = home, param_sets[1]
    return info


def test_dag_loads_and_runs_stages_in_order(dag_info):
    assert dag_info["errors"] == {}
    assert dag_info["order"] == ["links", "crawl", "dedup", "tokenizer", "shards", "train"]
    assert dag_info["params"] == ["beam_args", "config", "run", "train_args"]
    assert dag_info["max_active_runs"] == 1
    assert dag_info["retries"]["crawl"] > dag_info["retries"]["dedup"] >= 1
    assert dag_info["rendered"][0]["dedup"].strip() == "webtext dedup r"


def test_a_bad_option_fails_the_task_for_good_and_training_retries_with_resume(dag_info):
    assert dag_info["exits"] == {"0": "succeeded", "1": "retried", "2": "failed for good", "143": "retried"}
    assert dag_info["rendered"][0]["train"].split() == ["webtext", "train", "r"]
    assert dag_info["train_retry"].split() == ["webtext", "train", "r", "--resume"]


def test_params_reach_webtext_verbatim_and_no_shell_evaluates_them(dag_info, tmp_path):
    params, rendered = dag_info["hostile"], dag_info["rendered"][1]
    shim = tmp_path / "bin" / "webtext"
    shim.parent.mkdir()
    shim.write_text(SHIM.format(python=sys.executable))
    shim.chmod(0o755)
    log = tmp_path / "argv.jsonl"
    sentinel = tmp_path / "PWNED"
    env = dict(os.environ, PATH=f"{shim.parent}{os.pathsep}{os.environ['PATH']}", WEBTEXT_SHIM_LOG=str(log),
               **{SENTINEL: str(sentinel)})
    for task_id in dag_info["order"]:  # each rendered command run as BashOperator runs it
        subprocess.run(["bash", "-c", rendered[task_id]], env=env, cwd=tmp_path, check=True, timeout=60)

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    beam = shlex.split(params["beam_args"])
    assert calls == [[stage, params["run"], "--config", params["config"], *beam]
                     for stage in ["links", "crawl", "dedup", "tokenizer", "shards"]] \
        + [["train", params["run"], *shlex.split(params["train_args"])]]
    assert not sentinel.exists()


def test_unbalanced_quotes_in_beam_args_fail_the_render_naming_the_value(dag_info):
    assert dag_info["rendered"][2] == "ValueError: cannot split \"--job_name 'x\" into arguments: No closing quotation"


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    """Airflow's own standalone metadata database (SQLite in a scratch AIRFLOW_HOME), migrated here, removed after."""
    home = tmp_path_factory.mktemp("airflow-home")
    subprocess.run(["airflow", "db", "migrate"], env=airflow_env(home), check=True, capture_output=True, timeout=600)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def archived_sample(tmp_path_factory):
    """A Reddit dump linking to the sample web, and WARC files of that web's pages (crawled once, then the web stops)."""
    from webtext.pipeline.cli import main
    from webtext.pipeline.demo_dump import make_sample_dump
    from webtext.pipeline.demo_web import serve_sample_web

    folder = tmp_path_factory.mktemp("archived")
    with serve_sample_web(40, sites=4) as sample:
        make_sample_dump(folder / "RS_sample.zst", n=300, seed=0, urls=sample.urls)
        write_links(folder / "crawled", sample.urls)
        assert main(["crawl", str(folder / "crawled"), *SAMPLE_OPTIONS, "--runner=FnApiRunner"]) == 0
    return folder / "RS_sample.zst", str(folder / "crawled" / WARC_FILES)


@pytest.mark.slow
def test_airflow_dags_test_builds_a_run_from_hostile_params_offline(airflow_home, archived_sample, tmp_path):
    import tomli_w

    from webtext.pipeline import layout

    dump, warcs = archived_sample
    sentinel = tmp_path / "PWNED"
    params = hostile_params(tmp_path)
    params["train_args"] += (" --n-layer 1 --n-head 2 --n-embd 32 "
                            "--block-size 32 --micro-batch 2 --batch-tokens 64 --max-steps 3 --warmup 1 "
                            "--eval-every 3 --ckpt-every 3 --device cpu")
    Path(params["config"]).write_text(tomli_w.dumps({
        "links": {"reddit_dumps": [str(dump)], "links_shards": 2},
        "crawl": {"from_warc": [warcs], "docs_shards": 2, "fetch_log_shards": 2},
        "dedup": {"dedup_shards": 2},
        "tokenizer": {"vocab_size": 512},
        "shards": {"shard_tokens": 50_000, "val_fraction": 0.05},
    }))
    result = subprocess.run(["airflow", "dags", "test", DAG_ID, "-c", json.dumps(params)], capture_output=True,
                            text=True, env=airflow_env(airflow_home, **{SENTINEL: str(sentinel)}), cwd=tmp_path,
                            timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "state=success" in output, output[-6000:]

    run = layout.RunDir(params["run"])
    assert all(Path(run.success_path(stage)).exists() for stage in layout.DATA_STAGES)
    import tomllib
    recorded = tomllib.loads(Path(run.path(layout.CONFIG)).read_text())
    assert recorded["run"]["beam_args"] == shlex.split(params["beam_args"])
    crawl_stats = json.loads(Path(run.path(layout.STATS, "crawl.json")).read_text())["counters"]
    assert crawl_stats  # the crawl replayed the archived responses (no web server is up)
    assert list((Path(params["run"]) / "train" / shlex.split(params["train_args"])[1]).glob("ckpt-*"))
    assert not sentinel.exists()
