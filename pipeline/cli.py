"""The `webtext` command: one subcommand per stage, RUN first, options from --config TOML and flags, the rest to Beam."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from typing import Sequence

from .logs import quiet_beam_imports, setup_logging
from .memory import configure_process

# Beam's GCP modules warn about a missing optional client at import time (so before our Beam imports below); that
# says nothing about a webtext run.
quiet_beam_imports()

from . import layout, storage  # noqa: E402
from .cancel import Cancelled, stop_on_signals  # noqa: E402

log = logging.getLogger("webtext")

RUN_SECTION = "run"  # the config file's section for what is not a stage's: beam_args
TRAIN_EXTRA = "PyTorch is not installed; the trainer needs it: pip install 'webtext[train]'"


def torch_installed() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except ImportError:
        return False


def available_stages() -> dict:
    """The data stages in build order, each its module's STAGE."""
    return {name: importlib.import_module(f"webtext.pipeline.{name}_stage").STAGE for name in layout.DATA_STAGES}


def load_config_file(path: str | None) -> dict:
    if not path:
        return {}
    from .stage import StageError
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise StageError(f"config file not found: {path}") from None
    except OSError as error:
        raise StageError(f"cannot read config file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise StageError(f"config file {path} is not TOML text: byte {error.start} is not UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise StageError(f"config file {path} is not valid TOML: {error}") from None


def check_config_file(file_config: dict, stages: dict, path: str) -> list[str]:
    """Checks every section of the config file against the options it may hold (whichever command runs); returns
    its [run] beam_args. An unknown section or key, or a value of the wrong type or range, is a StageError naming it."""
    from .stage import StageError, resolve_config

    unknown = sorted(set(file_config) - set(stages) - {RUN_SECTION})
    if unknown:
        raise StageError(f"{path}: unknown section(s) {', '.join(f'[{name}]' for name in unknown)} "
                         f"(sections: {', '.join(f'[{name}]' for name in [*stages, RUN_SECTION])})")
    for stage in stages.values():
        resolve_config(stage, file_config, {}, source=path)
    run = file_config.get(RUN_SECTION, {})
    if not isinstance(run, dict) or set(run) - {"beam_args"}:
        extra = sorted(set(run) - {"beam_args"}) if isinstance(run, dict) else [repr(run)]
        raise StageError(f"{path}: unknown option(s) in [{RUN_SECTION}]: {', '.join(extra)} (its options: beam_args)")
    beam_args = run.get("beam_args", [])
    if not isinstance(beam_args, list) or not all(isinstance(arg, str) for arg in beam_args):
        raise StageError(f"{path}: [{RUN_SECTION}] beam_args: expected a list of strings "
                         f"(beam_args = [\"--runner\", \"DataflowRunner\"]), got {beam_args!r}")
    unknown_args = unknown_to_beam(beam_args)
    if unknown_args:
        raise StageError(f"{path}: [{RUN_SECTION}] beam_args: unknown to Beam: {' '.join(unknown_args)}")
    return beam_args


def save_resolved_config(run, stage_configs: dict[str, dict], beam_args: list[str]) -> None:
    """Merges the resolved options of the stages just run into RUN/config.toml (provenance of the run)."""
    import tomli_w


    path = run.path(layout.CONFIG)
    existing = tomllib.loads(storage.read_bytes(path).decode()) if storage.exists(path) else {}
    for name, config in stage_configs.items():
        existing[name] = {k: v for k, v in config.items() if v is not None}
    existing[RUN_SECTION] = {"beam_args": [a for a in beam_args]}
    storage.write_bytes(path, tomli_w.dumps(existing).encode())


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run directory: a local path or any Beam filesystem URL (gs://…)")
    parser.add_argument("--config", help="TOML file with a [stage] section per stage; flags win over it")
    parser.add_argument("--force", action="store_true", help="run even if RUN/<stage>/_SUCCESS says it is done")
    parser.add_argument("--log-level", default="INFO", help="level of webtext's own log (default: INFO); Beam's "
                                                             "shows warnings")


def build_parser(stages: dict) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webtext", allow_abbrev=False,
        description="Build a GPT-2 WebText corpus and train GPT-2 on it. Unrecognised --flags go to Beam as pipeline "
                    "options (--runner DataflowRunner --project … --region … --temp_location gs://…).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, stage in stages.items():
        sub = commands.add_parser(name, help=stage.help, description=stage.help, allow_abbrev=False)
        _common_arguments(sub)
        for option in stage.options:
            option.add_to(sub)
        for action in stage.actions:
            sub.add_argument(action.flag, dest=action.key, action="store_true", help=action.help)
    build_help = f"run every data stage in order ({', '.join(stages)}), then `webtext stats`"
    build = commands.add_parser("build", help=build_help, description=build_help, allow_abbrev=False)
    _common_arguments(build)
    _add_union_of_options(build, stages)
    demo_help = "generate the offline sample (Reddit dumps and a loopback web) and build it into RUN"
    demo = commands.add_parser("demo", allow_abbrev=False, help=demo_help,
                               description=f"{demo_help}, train a tiny GPT-2 on it and report; a rerun on the same "
                                           "RUN skips what is up to date")
    _common_arguments(demo)
    demo.add_argument("--submissions", type=int, default=400, help="submissions in the generated dump (default: 400)")
    stats_help = "report on a run: the funnel and a table per stage"
    stats = commands.add_parser(
        "stats", allow_abbrev=False, help=stats_help,
        description=f"{stats_help}, the rejects with examples, distributions, domains against WebText's, "
                    "decontamination, training curves and provenance; writes RUN/stats/stats.json and "
                    "RUN/stats/report.html (a self-contained page) and prints the summary. Reads RUN only.")
    stats.add_argument("run", metavar="RUN", help="a run directory that a build or demo wrote (local or gs://…)")
    stats.add_argument("--log-level", default="WARNING", help="level of webtext's own log (default: WARNING)")
    from .corpus_inspect import add_inspect_parser
    add_inspect_parser(commands)
    for name in layout.TRAIN_COMMANDS:
        commands.add_parser(name, add_help=False, help=f"(trainer) see `webtext {name} --help`")
    return parser


def _add_union_of_options(parser: argparse.ArgumentParser, stages: dict) -> None:
    seen = set()
    for stage in stages.values():
        for option in stage.options:
            if option.flag not in seen:
                seen.add(option.flag)
                option.add_to(parser)


def unknown_to_beam(args: Sequence[str]) -> list[str]:
    """The arguments that no Beam pipeline option takes (in `--flag value` or `--flag=value` form, as Beam parses them)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for options in {str(cls): cls for cls in PipelineOptions.__subclasses__()}.values():
        options._add_argparse_args(parser)  # what PipelineOptions itself parses with
    _, unknown = parser.parse_known_args(list(args))
    return unknown


def run_stages(names: Sequence[str], stages: dict, run_root: str, file_config: dict, flags: dict,
               beam_args: list[str], force: bool) -> list[str]:
    """Runs the named stages in order, each unless it is up to date; returns the names of those that ran."""
    from . import dataflow
    from .stage import StageError, resolve_config, run_stage

    run = layout.RunDir(run_root)
    configs = {name: resolve_config(stages[name], file_config, flags) for name in names}
    beam_args = list(file_config.get(RUN_SECTION, {}).get("beam_args", [])) + list(beam_args)
    dataflow.check_google_credentials([run_root, *dataflow.gcs_locations(beam_args)])
    if dataflow.template_location(beam_args):  # a template is one stage's job; making it leaves RUN as it is
        if not dataflow.is_dataflow(beam_args):
            raise StageError("--template_location writes a Dataflow template: add --runner DataflowRunner "
                             "--project … --region … --temp_location gs://…")
        if len(names) > 1:
            raise StageError("--template_location writes one stage's job: give it to one stage's command "
                             f"(webtext {'|'.join(n for n in names if stages[n].runs_beam)} RUN …)")
    else:
        save_resolved_config(run, configs, beam_args)
    ran = []
    for name in names:
        try:
            if run_stage(stages[name], run, configs[name], beam_args, force=force):
                ran.append(name)
        except Cancelled as stop:
            stop.stage = name
            raise
    return ran


def run_command(args: argparse.Namespace, stages: dict, beam_args: list[str]) -> int:
    if args.command != "demo":
        storage.check_filesystem(args.run)
        from .dataflow import check_google_credentials
        check_google_credentials([args.run])
    if args.command == "stats":
        from .report import print_stats
        return print_stats(args.run)
    if args.command == "inspect":
        from .corpus_inspect import inspect_command
        return inspect_command(args)
    if args.command == "demo":
        from .demo import run_demo
        return run_demo(args.run, stages, submissions=args.submissions, beam_args=beam_args, force=args.force)
    file_config = load_config_file(args.config)
    check_config_file(file_config, stages, args.config)
    chosen = [a for a in getattr(stages.get(args.command), "actions", ()) if getattr(args, a.key, False)]
    if chosen:
        return chosen[0].run(layout.RunDir(args.run))
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "run", "config", "force", "log_level")}
    names = list(stages) if args.command == "build" else [args.command]
    run_stages(names, stages, args.run, file_config, flags, beam_args, args.force)
    if args.command == "build":
        from .report import print_stats
        return print_stats(args.run)  # the build ends with its report, as the demo does
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in layout.TRAIN_COMMANDS:
        if not torch_installed():
            print(f"webtext {argv[0]}: error: {TRAIN_EXTRA}", file=sys.stderr)
            return 2
        from webtext.train.cli import main as train_main
        return train_main(argv)
    configure_process()
    stages = available_stages()
    parser = build_parser(stages)
    args, beam_args = parser.parse_known_args(argv)
    unknown = unknown_to_beam(beam_args)
    if unknown:
        parser.error(f"unknown to webtext {args.command} and to Beam: {' '.join(unknown)}")
    setup_logging(args.log_level)
    try:
        with stop_on_signals():
            return run_command(args, stages, beam_args)
    except Cancelled as stop:
        print(stopped_message(args.command, args.run, stop), file=sys.stderr)
        return stop.exit_code
    except Exception as error:  # a StageError, or one that a Beam worker raised and the runner sent back as text
        problem = storage.error_line(error)
        if problem is None:
            raise  # a bug: its traceback is what helps
        print(f"webtext {args.command}: error: {problem}", file=sys.stderr)
        return 2


def stopped_message(command: str, run_root: str, stop: Cancelled) -> str:
    stage = getattr(stop, "stage", None)
    if stage is None:
        return f"webtext {command}: stopped by {stop}"
    return (f"webtext {command}: stopped by {stop} during {stage}, its Beam job cancelled; "
            f"{layout.RunDir(run_root).success_path(stage)} not written; the same command runs it again "
            f"(a crawl resumes from the fetches it finished)")


if __name__ == "__main__":
    sys.exit(main())
