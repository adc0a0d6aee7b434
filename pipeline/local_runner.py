"""The local runner, named outright: Beam's FnApiRunner, its worker processes started by `pipeline/local_worker.py`.

Beam's DirectRunner would first try to download the Prism runner, and its workers' log output depends on whether the
gcp extra is installed; this runner downloads nothing and its workers log the same way everywhere.
"""
from __future__ import annotations

import shlex
import sys

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.transforms.environments import SubprocessSDKEnvironment

from . import memory


def worker_command() -> str:
    """Run by Beam with a shell: `exec` makes the worker the shell's own process, so signals reach it directly."""
    return f"exec {shlex.quote(sys.executable)} -m webtext.pipeline.local_worker"


class LocalRunner(fn_runner.FnApiRunner):
    """The FnApiRunner in multi-process mode (--direct_num_workers processes) whose workers start through our module.

    Like Beam's DirectRunner, it hands the pipeline options to the workers (their log levels, filesystem options)."""

    def run_pipeline(self, pipeline, options: PipelineOptions):
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        self._provision_info = fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return super().run_pipeline(pipeline, options)

    def _execute_bundle(self, runner_execution_context, bundle_context_manager, bundle_input):
        """One fused stage's bundle; afterwards the shuffle buffers it consumed, now freed, go back to the system
        (glibc would keep them, and the driver's peak would be the sum of every stage's)."""
        try:
            return super()._execute_bundle(runner_execution_context, bundle_context_manager, bundle_input)
        finally:
            memory.trim()

    # FnApiRunner sets its default environment from --direct_running_mode when a run starts; in multi-process mode that
    # is Beam's own worker command, which this runner replaces with ours (the same harness, after our logging set-up).
    @property
    def _default_environment(self):
        return self._environment

    @_default_environment.setter
    def _default_environment(self, environment) -> None:
        if isinstance(environment, SubprocessSDKEnvironment):
            environment = SubprocessSDKEnvironment.from_command_string(worker_command())
        self._environment = environment
