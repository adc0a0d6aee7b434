"""The Airflow DAG loads without errors and chains every data stage, then training, as `webtext` commands."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

CHECK = r"""
import json, sys
from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags["webtext_build"]
order, task = [], dag.get_task("links")
while task is not None:
    order.append(task.task_id)
    task = next(iter(task.downstream_list), None)
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "order": order,
                  "commands": {t.task_id: t.bash_command for t in dag.tasks},
                  "params": sorted(dag.params.keys())}))
"""


def test_dag_loads_and_runs_stages_in_order(tmp_path):
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__UNIT_TEST_MODE="True")
    result = subprocess.run([sys.executable, "-c", CHECK, str(REPO_ROOT / "dags")], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    import json
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["errors"] == {}
    assert info["order"] == ["links", "crawl", "dedup", "tokenizer", "shards", "train"]
    assert info["commands"]["dedup"].startswith("webtext dedup {{ params.run }}")
    assert "params.beam_args" in info["commands"]["crawl"]
    assert info["commands"]["train"].startswith("webtext train {{ params.run }}")
    assert info["params"] == ["beam_args", "config", "run", "train_args"]
