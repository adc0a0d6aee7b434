"""Airflow DAG: the webtext data stages in order, then training, each a `webtext` command on one run directory.

Params: `run` (local path or gs:// URL), `config` (TOML file), `beam_args` (e.g. "--runner DataflowRunner --project P
--region R --temp_location gs://…"), `train_args` (flags of `webtext train`). `run` and `config` reach `webtext` as one
argument each, whatever they hold; `beam_args` and `train_args` are split into arguments with shell rules (quotes
group words) and never evaluated. Every stage skips itself when its RUN/<stage>/_SUCCESS matches its inputs, so a
cleared task reruns only what changed. A killed task (timeout, mark-failed, clear) stops its stage: its Beam job is
cancelled and no _SUCCESS written. Exit code 2 (a bad option, config file or input) fails the task without retries.
"""
from __future__ import annotations

import datetime as dt
import shlex

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Param, dag
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from webtext.pipeline.layout import DATA_STAGES

USAGE_ERROR = 2  # webtext's exit code for a bad option, config file or input: the same command fails again

# Retries per task: a crawl resumes from its WARC files, so it retries most; training retries with --resume.
RETRIES = {"links": 2, "crawl": 3, "dedup": 1, "tokenizer": 1, "shards": 1, "train": 1}
RETRY_DELAY = {"crawl": dt.timedelta(minutes=10)}


def shell_quote(value) -> str:
    """One shell word that is exactly `value`, whatever characters it holds."""
    return shlex.quote(str(value))


def shell_words(value) -> str:
    """`value` split into arguments with shell rules (quotes, backslashes), each quoted back: nothing is evaluated."""
    try:
        words = shlex.split(str(value or ""))
    except ValueError as error:
        raise ValueError(f"cannot split {value!r} into arguments: {error}") from None
    return " ".join(shlex.quote(word) for word in words)


def stage_command(stage: str) -> str:
    return (f"webtext {stage} {{{{ params.run | shell_quote }}}}"
            "{% if params.config %} --config {{ params.config | shell_quote }}{% endif %}"
            " {{ params.beam_args | shell_words }}")


# A retry of training continues from its last checkpoint (a killed trainer keeps it intact).
TRAIN_COMMAND = ("webtext train {{ params.run | shell_quote }} {{ params.train_args | shell_words }}"
                 "{% if ti.try_number > 1 %} --resume{% endif %}")


class WebtextCommand(BashOperator):
    """A `webtext` command run by bash (killed with its process group on SIGTERM, as BashOperator does); exit code 2
    fails the task for good, any other failure is retried."""

    def execute(self, context):
        result = self.subprocess_hook.run_command(command=["bash", "-c", self.bash_command],
                                                  env=self.get_env(context), cwd=self.cwd)
        if result.exit_code == USAGE_ERROR:
            raise AirflowFailException(f"webtext exited with code {USAGE_ERROR} (a bad option, config file or "
                                       "input: see the log); not retried")
        if result.exit_code:
            raise AirflowException(f"webtext exited with code {result.exit_code}")


@dag(
    dag_id="webtext_build",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,  # one run at a time: two runs never write one run directory or crawl the same hosts at once
    tags=["webtext"],
    params={
        "run": Param("runs/webtext", type="string", minLength=1, description="run directory (local path or gs://…)"),
        "config": Param("", type="string", description="TOML config file with a section per stage"),
        "beam_args": Param("", type="string", description="Beam pipeline options, e.g. --runner DataflowRunner …"),
        "train_args": Param("--model gpt2 --max-steps 1000", type="string", description="flags of `webtext train`"),
    },
    user_defined_filters={"shell_quote": shell_quote, "shell_words": shell_words},
    doc_md=__doc__,
)
def webtext_build():
    previous = None
    for stage in (*DATA_STAGES, "train"):
        task = WebtextCommand(
            task_id=stage, bash_command=TRAIN_COMMAND if stage == "train" else stage_command(stage),
            retries=RETRIES[stage], retry_delay=RETRY_DELAY.get(stage, dt.timedelta(minutes=5)),
            # the crawl's load on other people's hosts stays one crawl's, even where max_active_runs is raised
            max_active_tis_per_dag=1 if stage == "crawl" else None)
        if previous is not None:
            previous >> task
        previous = task


webtext_build()
