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

from . import layout, sinks, storage
from .stage_options import Option
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
        return PipelineOptions(default_beam_args(self.beam_args))

    def run_pipeline(self, build: Callable[[beam.Pipeline], None]):
        """Builds and runs one Beam pipeline; its counters of this stage's namespace are added to the stage's.

        Returns the PipelineResult (for metrics of other namespaces)."""
        pipeline = beam.Pipeline(options=self.pipeline_options())
        build(pipeline)
        result = pipeline.run()
        result.wait_until_finish()
        counters = beam_counters(result, self.name)
        for name, value in counters.items():
            self.counters[name] = self.counters.get(name, 0) + value
        return result

    def count(self, name: str, value: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + value


# Local worker processes: our own progress at INFO; Beam's start-up notes that say nothing to a user hidden
# (sdk_worker_main's, and "Discarding unparseable args" for DirectRunner flags the worker does not know).
WORKER_LOG_LEVELS = {"webtext": "INFO", "apache_beam.runners.worker.sdk_worker_main": "ERROR", "__main__": "ERROR",
                     "apache_beam.options.pipeline_options": "ERROR"}


def default_beam_args(beam_args: Sequence[str]) -> list[str]:
    """Without a runner named, run locally on the DirectRunner with one worker process per core, whose Beam
    harness logs warnings only (at INFO it prints some 25 lines of set-up per worker and stage)."""
    args = list(beam_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append("--runner=DirectRunner")
        if not any(a.startswith("--direct_running_mode") for a in args):
            args.append("--direct_running_mode=multi_processing")
        if not any(a.startswith("--direct_num_workers") for a in args):
            args.append(f"--direct_num_workers={os.cpu_count() or 1}")
        if not any(a.startswith(("--default_sdk_harness_log_level", "--sdk_harness_log_level_overrides")) for a in args):
            args += ["--default_sdk_harness_log_level=WARNING", "--sdk_harness_log_level_overrides="
                     + json.dumps(WORKER_LOG_LEVELS)]
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
    upstream: Callable[[RunDir, dict], list[str]] = lambda run, config: []
    outputs: Sequence[str] = ()  # folders under RUN that the stage rewrites (cleared before a run)
    actions: Sequence[Action] = ()  # switches of this stage's subcommand that replace a run (not in `build`)

    def defaults(self) -> dict[str, Any]:
        return {o.key: o.empty_default() for o in self.options}


def resolve_config(stage: Stage, file_config: dict, flags: dict) -> dict[str, Any]:
    """Defaults, then the config file's [stage] section, then flags given on the command line."""
    section = file_config.get(stage.name, {})
    known = {o.key: o for o in stage.options}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise StageError(f"unknown option(s) in [{stage.name}] of the config file: {', '.join(unknown)}")
    config = stage.defaults()
    config.update({k: known[k].coerce(v) for k, v in section.items()})
    config.update({k: v for k, v in flags.items() if k in known})
    return config


def upstream_fingerprints(run: RunDir, stages: Sequence[str]) -> list[str]:
    """Fingerprints of the stages this one reads (empty strings for ones not run, e.g. inputs made elsewhere)."""
    return [(run.read_success(s) or {}).get("fingerprint", "") for s in stages]


def run_stage(stage: Stage, run: RunDir, config: dict[str, Any], beam_args: list[str], force: bool = False) -> bool:
    """Runs a stage unless it completed before on the same inputs; returns whether it ran."""
    inputs = stage.external_inputs(run, config)
    inputs_fingerprint = fingerprint(config, inputs, stage.upstream(run, config))
    previous = run.read_success(stage.name)
    if previous and previous.get("fingerprint") == inputs_fingerprint and not force:
        log.info("%s: already done for these inputs (%s); skipping (use --force to redo)",
                 stage.name, run.success_path(stage.name))
        print(f"{stage.name}: up to date, skipped", file=sys.stderr)
        return False
    storage.delete([run.success_path(stage.name)])
    for folder in stage.outputs:
        run.clear(folder, patterns=("*", "*/*"))
    run.clear(f"{layout.REJECTS}/{stage.name}")
    ctx = StageContext(stage.name, run, config, beam_args, force)
    started = time.time()
    stage.execute(ctx)
    sinks.fill_empty_shards(run.rejects(stage.name), "rejects", layout.REJECT_SCHEMA, layout.REJECT_SHARDS)
    elapsed = time.time() - started
    print(counter_table(stage.name, ctx.counters), file=sys.stderr)
    run.write_json({"stage": stage.name, "seconds": round(elapsed, 3), "counters": ctx.counters},
                   layout.STATS, f"{stage.name}.json")
    run.write_success(stage.name, inputs_fingerprint, {"seconds": round(elapsed, 3)})
    print(f"{stage.name}: done in {elapsed:.1f}s", file=sys.stderr)
    return True


def fingerprint(config: dict, inputs: Iterable[FileEntry], upstream: Iterable[str] = ()) -> str:
    """A hash of a stage's options, its external input files (name, size, mtime) and its upstream stages' fingerprints."""
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for entry in sorted(inputs, key=lambda e: e.path):
        digest.update(f"\n{entry.path}\t{entry.size}\t{entry.mtime:.3f}".encode())
    for upstream_fingerprint in upstream:
        digest.update(f"\n{upstream_fingerprint}".encode())
    return digest.hexdigest()
