"""Options are declared once, as dataclass fields: the flag, the TOML key, --help and the parsed value follow."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from webtext.pipeline import layout
from webtext.pipeline.cli import available_stages, build_parser
from webtext.pipeline.stage_options import config_from, options_of
from webtext.pipeline.stage import Stage, resolve_config


@dataclass(frozen=True)
class Example:
    count: int = field(default=3, metadata={"help": "how many"})
    ratio: float = field(default=0.5, metadata={"help": "a share"})
    label: str | None = field(default=None, metadata={"help": "a label"})
    loud: bool = field(default=False, metadata={"help": "a switch"})
    limits: tuple[float, ...] = field(default=(0.2, 0.1), metadata={"help": "limits"})
    mode: str = field(default="a", metadata={"help": "a mode", "choices": ("a", "b")})
    day: int | None = field(default=None, metadata={"help": "a date", "type": lambda text: int(text.replace("-", ""))})
    internal: int = 7  # no help: not an option


def test_every_field_with_help_is_an_option_of_its_type_and_default():
    options = {o.flag: o for o in options_of(Example)}
    assert list(options) == ["--count", "--ratio", "--label", "--loud", "--limits", "--mode", "--day"]
    assert (options["--count"].type, options["--count"].default, options["--count"].key) == (int, 3, "count")
    assert options["--loud"].switch and not options["--label"].switch
    assert options["--limits"].multiple and options["--limits"].type is float and options["--limits"].default == [0.2, 0.1]
    assert options["--mode"].choices == ("a", "b")
    assert options["--day"].type("2017-12-01") == 20171201


def test_config_from_builds_the_dataclass_with_its_own_collection_types():
    built = config_from(Example, {"count": 5, "limits": [0.3], "loud": True, "unrelated": 1})
    assert built == Example(count=5, limits=(0.3,), loud=True)


def test_a_new_field_is_a_flag_a_toml_key_and_help(capsys):
    """Adding an option to a stage is one field on its options dataclass."""
    extended = dataclasses.make_dataclass("Extended", [("max_widgets", int, field(default=4, metadata={
        "help": "widgets at most"}))], bases=(Example,), frozen=True)
    stage = Stage("widgets", "a stage with a new option", options_of(extended), execute=lambda ctx: None)
    parser = build_parser({"widgets": stage})
    with pytest.raises(SystemExit):
        parser.parse_args(["widgets", "--help"])
    assert "--max-widgets MAX_WIDGETS" in capsys.readouterr().out
    args = parser.parse_args(["widgets", "RUN", "--max-widgets", "9"])
    assert resolve_config(stage, {}, vars(args))["max_widgets"] == 9
    assert resolve_config(stage, {"widgets": {"max_widgets": 11}}, {})["max_widgets"] == 11
    assert resolve_config(stage, {}, {})["max_widgets"] == 4
    assert config_from(extended, resolve_config(stage, {}, {})).max_widgets == 4


def test_a_flag_shared_by_stages_has_one_meaning():
    """`webtext build` takes the union of the stages' flags: two stages may share a flag only if it is the same option."""
    seen = {}
    for name, stage in available_stages().items():
        for option in stage.options:
            if option.flag in seen:
                other_stage, other = seen[option.flag]
                assert option == other, f"{option.flag} means different things in {other_stage} and {name}"
            seen[option.flag] = (name, option)


def test_the_stages_are_the_layouts_in_build_order():
    assert tuple(available_stages()) == layout.DATA_STAGES


def _readme_command(prefix: str) -> list[str]:
    import shlex

    from tests.conftest import REPO_ROOT

    text = (REPO_ROOT / "README.md").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.strip().startswith(prefix))
    return shlex.split(line, comments=True)[1:]


def test_every_command_has_a_description_and_every_argument_help():
    parser = build_parser(available_stages())
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, command in commands.items():
        if name in layout.TRAIN_COMMANDS:
            continue  # the trainer's own parser answers their --help
        assert command.description, name
        assert all(action.help for action in command._actions), name
    stats_help = " ".join(commands["stats"].format_help().split())
    assert "writes RUN/stats/stats.json and RUN/stats/report.html" in stats_help
    assert "RUN a run directory that a build or demo wrote" in stats_help


def test_the_readme_dataflow_line_reaches_beam_unchanged():
    from webtext.pipeline.cli import unknown_to_beam

    argv = _readme_command("webtext build gs://")
    args, beam_args = build_parser(available_stages()).parse_known_args(argv)
    assert (args.command, args.run, args.config) == ("build", "gs://bucket/run", "webtext.toml")
    assert beam_args == argv[argv.index("--runner"):]  # every Beam flag and value, in order, as written
    assert beam_args[:2] == ["--runner", "DataflowRunner"]
    assert unknown_to_beam(beam_args) == []


def test_beam_flags_in_both_forms_and_unknown_flags(webtext_cli, tmp_path, capsys):
    from webtext.pipeline.cli import unknown_to_beam

    assert unknown_to_beam(["--runner=FnApiRunner", "--experiments", "a", "--experiments=b", "--save_main_session",
                            "--direct_num_workers", "2"]) == []
    with pytest.raises(SystemExit) as exit_info:
        webtext_cli("links", tmp_path / "run", "--reddit-dumps", "x.zst", "--min-karam=50")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown to webtext links and to Beam: --min-karam=50" in err
    assert not (tmp_path / "run").exists()
