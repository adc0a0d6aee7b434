"""What every stage shares: its options, resolved config, skip-if-done marker, Beam run, counters table and stats file."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from . import cancel, dataflow, layout, locks, memory, sinks, storage
from .stage_options import Option, OptionError
from .layout import RunDir
from .storage import FileEntry, StageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Action:
    """A switch that runs instead of the stage and only reads RUN (e.g. `webtext shards RUN --verify`); returns an exit code."""

    flag: str
    help: str
    run: Callable[[RunDir], int]

    @property
    def key(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass
class StageContext:
    """Everything a stage needs to run: where, with which options, and how to start Beam."""

    name: str
    run: RunDir
    config: dict[str, Any]
    beam_args: list[str]
    force: bool = False
    counters: dict[str, int] = field(default_factory=dict)

    def pipeline_options(self) -> PipelineOptions:
        return PipelineOptions(default_beam_args(self.beam_args) + dataflow.staging_args(self.beam_args))

    def run_pipeline(self, build: Callable[[beam.Pipeline], None]):
        """Builds and runs one Beam pipeline; its counters of this stage's namespace are added to the stage's.

        Without --runner it runs on the pinned local runner. Returns the PipelineResult (for metrics of other
        namespaces); with --template_location the job is only written as a Dataflow template (TemplateWritten)."""
        memory.release()  # what the stage's set-up held (a tokenizer, footers) stays out of the job's peak
        runner = None
        if not dataflow.names_runner(self.beam_args):
            from .local_runner import LocalRunner
            runner = LocalRunner()
        pipeline = beam.Pipeline(runner=runner, options=self.pipeline_options())
        build(pipeline)
        result = pipeline.run()  # the local runner runs the job here (a signal ends it and its workers)
        if dataflow.template_location(self.beam_args):
            raise TemplateWritten(self.name)
        try:
            result.wait_until_finish()
        except cancel.Cancelled:  # a job running elsewhere (Dataflow) is cancelled, not left running
            cancel.cancel_job(result)
            raise
        counters = beam_counters(result, self.name)
        for name, value in counters.items():
            self.counters[name] = self.counters.get(name, 0) + value
        return result

    def count(self, name: str, value: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + value


class TemplateWritten(Exception):
    """The stage's Beam job was written as a Dataflow classic template (--template_location) instead of being run."""


# Local worker processes: our own records at our level; Beam's start-up notes that say nothing to a user hidden
# (sdk_worker_main's, and "Discarding unparseable args" for flags the worker does not know).
WORKER_LOG_LEVELS = {"apache_beam.runners.worker.sdk_worker_main": "ERROR",
                     "apache_beam.options.pipeline_options": "ERROR"}


def default_beam_args(beam_args: Sequence[str]) -> list[str]:
    """Without a runner named, the pinned local runner (`local_runner.LocalRunner`) runs one worker process per core,
    whose Beam harness logs warnings only (at INFO it prints some 25 lines of set-up per worker and stage)."""
    args = list(beam_args)
    if not dataflow.names_runner(args):
        if not any(a.startswith("--direct_running_mode") for a in args):
            args.append("--direct_running_mode=multi_processing")
        if not any(a.startswith("--direct_num_workers") for a in args):
            args.append(f"--direct_num_workers={os.cpu_count() or 1}")
        if not any(a.startswith(("--default_sdk_harness_log_level", "--sdk_harness_log_level_overrides")) for a in args):
            ours = logging.getLevelName(logging.getLogger("webtext").getEffectiveLevel())
            args += ["--default_sdk_harness_log_level=WARNING", "--sdk_harness_log_level_overrides="
                     + json.dumps({"webtext": ours, **WORKER_LOG_LEVELS})]
    return args


def beam_counters(result, namespace: str) -> dict[str, int]:
    """The committed (or, where the runner has none, attempted) counters of one namespace."""
    counters: dict[str, int] = {}
    for metric in result.metrics().query()["counters"]:
        if metric.key.metric.namespace != namespace:
            continue
        value = metric.committed if metric.committed is not None else metric.attempted
        name = metric.key.metric.name
        counters[name] = counters.get(name, 0) + int(value or 0)
    return counters


def counter_table(stage: str, counters: dict[str, int]) -> str:
    if not counters:
        return f"{stage}: no counters"
    width = max(len(name) for name in counters)
    lines = [f"{stage} counters", "-" * (width + 14)]
    lines += [f"{name:<{width}}  {value:>12,}" for name, value in sorted(counters.items())]
    return "\n".join(lines)


@dataclass
class Stage:
    """A stage: its options, its inputs (for the skip-if-unchanged check) and the function that does the work."""

    name: str
    help: str
    options: list[Option]
    execute: Callable[[StageContext], None]
    external_inputs: Callable[[RunDir, dict], list[FileEntry]] = lambda run, config: []
    upstream: Callable[[RunDir, dict], list[str]] = lambda run, config: []  # stages whose output it reads
    outputs: Sequence[str] = ()  # folders under RUN that the stage rewrites (cleared before a run)
    actions: Sequence[Action] = ()  # switches of this stage's subcommand that replace a run (not in `build`)
    runs_beam: bool = True  # False for a stage that works in this process only (no Beam job, so no template)

    def defaults(self) -> dict[str, Any]:
        return {o.key: o.empty_default() for o in self.options}


def resolve_config(stage: Stage, file_config: dict, flags: dict, source: str = "the config file") -> dict[str, Any]:
    """Defaults, then the config file's [stage] section, then flags given on the command line (argparse checked
    those); a key or value of the section that its option does not take is a StageError naming `source` and the key."""
    section = file_config.get(stage.name, {})
    if not isinstance(section, dict):
        raise StageError(f"{source}: {stage.name} must be a [{stage.name}] table, got {section!r}")
    known = {o.key: o for o in stage.options}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise StageError(f"{source}: unknown option(s) in [{stage.name}]: {', '.join(unknown)} "
                         f"(its options: {', '.join(known)})")
    config = stage.defaults()
    for key, value in section.items():
        try:
            config[key] = known[key].coerce(value)
        except OptionError as error:
            raise StageError(f"{source}: [{stage.name}] {key}: {error}") from None
    config.update({k: v for k, v in flags.items() if k in known})
    return config


def run_stage(stage: Stage, run: RunDir, config: dict[str, Any], beam_args: list[str], force: bool = False) -> bool:
    """Runs a stage unless it completed before on the same inputs; returns whether it ran.

    It holds RUN/<stage>/_LOCK meanwhile, and refuses to start unless every stage it reads finished and left exactly
    the files its _SUCCESS lists. With --template_location it writes the stage's Dataflow template instead, and
    leaves RUN as it is."""
    if dataflow.template_location(beam_args):
        write_template(stage, run, config, beam_args)
        return False
    with locks.stage_lock(run, stage.name):
        return _run_locked(stage, run, config, beam_args, force)


def _run_locked(stage: Stage, run: RunDir, config: dict[str, Any], beam_args: list[str], force: bool) -> bool:
    upstream = stage.upstream(run, config)
    upstream_fingerprints = [run.require_finished(name) for name in upstream]
    inputs = stage.external_inputs(run, config)
    inputs_fingerprint = fingerprint(config, inputs, upstream_fingerprints)
    previous = run.read_success(stage.name)
    if previous and previous.get("fingerprint") == inputs_fingerprint and not force:
        changed = run.changed_outputs(previous)
        if not changed:
            log.info("%s: already done for these inputs (%s); skipping (use --force to redo)",
                     stage.name, run.success_path(stage.name))
            print(f"{stage.name}: up to date, skipped", file=sys.stderr)
            return False
        log.warning("%s: running again: its output changed since it finished (%s)", stage.name, changed[0])
    storage.delete([run.success_path(stage.name)])
    for folder in stage.outputs:
        run.clear(folder, patterns=("*", "*/*"))
    run.clear(f"{layout.REJECTS}/{stage.name}")
    ctx = StageContext(stage.name, run, config, beam_args, force)
    started = time.time()
    stage.execute(ctx)  # a rejects file only where there are rejects: none for a stage that rejected nothing
    elapsed = time.time() - started
    if [run.require_finished(name) for name in upstream] != upstream_fingerprints:
        raise StageError(f"{', '.join(upstream)} ran again while {stage.name} read its output; "
                         f"run `webtext {stage.name} {run.root}` again")
    print(counter_table(stage.name, ctx.counters), file=sys.stderr)
    run.write_json({"stage": stage.name, "seconds": round(elapsed, 3), "counters": ctx.counters},
                   layout.STATS, f"{stage.name}.json")
    run.write_success(stage.name, inputs_fingerprint, stage.outputs, {"seconds": round(elapsed, 3)})
    print(f"{stage.name}: done in {elapsed:.1f}s", file=sys.stderr)
    return True


def write_template(stage: Stage, run: RunDir, config: dict[str, Any], beam_args: list[str]) -> None:
    """Builds the stage's job for RUN's current inputs and writes it as a Dataflow classic template."""
    location = dataflow.template_location(beam_args)
    if not stage.runs_beam:
        raise StageError(f"{stage.name} runs no Beam job (it works in this process, reading RUN directly), so it "
                         f"has no Dataflow template: run `webtext {stage.name} {run.root}` itself")
    started = time.time()
    try:
        stage.execute(StageContext(stage.name, run, config, beam_args))
    except TemplateWritten:
        print(f"{stage.name}: Dataflow template written to {location} in {time.time() - started:.1f}s",
              file=sys.stderr)
        return
    raise RuntimeError(f"{stage.name}: the stage finished without building its Beam job")


def fingerprint(config: dict, inputs: Iterable[FileEntry], upstream: Iterable[str] = ()) -> str:
    """A hash of a stage's options, its external input files (name, size, mtime) and its upstream stages' fingerprints."""
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for entry in sorted(inputs, key=lambda e: e.path):
        digest.update(f"\n{entry.path}\t{entry.size}\t{entry.mtime:.3f}".encode())
    for upstream_fingerprint in upstream:
        digest.update(f"\n{upstream_fingerprint}".encode())
    return digest.hexdigest()
