"""Airflow DAG: the webtext data stages in order, then training, each a `webtext` command on one run directory.

Params: `run` (local path or gs:// URL), `config` (TOML file), `beam_args` (e.g. "--runner DataflowRunner --project P
--region R --temp_location gs://…"), `train_args` (flags of `webtext train`). Every stage skips itself when its
RUN/<stage>/_SUCCESS matches its inputs, so a cleared task reruns only what changed.
"""
from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Param, dag

from webtext.pipeline.layout import DATA_STAGES


def stage_command(stage: str) -> str:
    return (f"webtext {stage} {{{{ params.run }}}} "
            "{% if params.config %}--config {{ params.config }} {% endif %}{{ params.beam_args }}")


@dag(
    dag_id="webtext_build",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1),
    catchup=False,
    tags=["webtext"],
    params={
        "run": Param("runs/webtext", type="string", description="run directory (local path or gs://…)"),
        "config": Param("", type="string", description="TOML config file with a section per stage"),
        "beam_args": Param("", type="string", description="Beam pipeline options, e.g. --runner DataflowRunner …"),
        "train_args": Param("--model gpt2 --max-steps 1000", type="string", description="flags of `webtext train`"),
    },
    doc_md=__doc__,
)
def webtext_build():
    previous = None
    for stage in DATA_STAGES:
        task = BashOperator(task_id=stage, bash_command=stage_command(stage), retries=1,
                            retry_delay=dt.timedelta(minutes=5))
        if previous is not None:
            previous >> task
        previous = task
    train = BashOperator(task_id="train", bash_command="webtext train {{ params.run }} {{ params.train_args }}")
    previous >> train


webtext_build()
