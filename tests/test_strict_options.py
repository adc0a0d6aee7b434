"""Options are strict: every value from a flag or a TOML file is checked against its option's type and range before
any Beam job, and unknown sections, keys and flags are errors; each is one line naming the file, section and key."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cloud_peers import isolated_env
from webtext.pipeline import layout
from webtext.pipeline.cli import available_stages, build_parser
from webtext.pipeline.stage import StageError, resolve_config


def links_with_config(webtext_cli, tmp_path: Path, text: str | bytes, *flags: str) -> tuple[int, Path]:
    config = tmp_path / "webtext.toml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    run = tmp_path / "run"
    return webtext_cli("links", run, "--config", config, "--reddit-dumps", str(tmp_path / "RS.zst"), *flags), run


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("webtext links: error: ")
    return lines[0]


@pytest.mark.parametrize("text, expected", [
    ('[links]\nkeep_nsfw = "false"\n', "[links] keep_nsfw: expected true or false, got the string 'false'"),
    ('[links]\nkeep_nsfw = 0\n', "[links] keep_nsfw: expected true or false, got the number 0"),
    ('[links]\nmax_bad_fraction = "nan"\n', "[links] max_bad_fraction: expected a finite number, 0 to 1, got the "
                                            "string 'nan'"),
    ('[links]\nmax_bad_fraction = nan\n', "[links] max_bad_fraction: expected a finite number, 0 to 1, got nan"),
    ('[links]\nmax_bad_fraction = 1.5\n', "[links] max_bad_fraction: expected a finite number, 0 to 1, got 1.5"),
    ('[links]\nmin_karma = "three"\n', "[links] min_karma: expected an integer, got the string 'three'"),
    ('[links]\nmin_karma = "3"\n', "[links] min_karma: expected an integer, got the string '3'"),
    ('[links]\nlinks_shards = 2.5\n', "[links] links_shards: expected an integer, at least 1, got the number 2.5"),
    ('[links]\nlinks_shards = 0\n', "[links] links_shards: expected an integer, at least 1, got 0"),
    ('[links]\nkarma_rule = "mean"\n', "[links] karma_rule: expected one of max, sum, got the string 'mean'"),
    ('[links]\nbefore = "last year"\n', "[links] before: expected an integer, got 'last year'"),
    ('[links]\nbefore = 12:00:00\n', "[links] before: expected an integer, got '12:00:00'"),
    ('[links]\nreddit_dumps = [1, 2]\n', "[links] reddit_dumps: expected a string, got the number 1"),
    ('[crawl]\nhost_delay = -1\n', "[crawl] host_delay: expected a finite number, at least 0, got -1.0"),
    ('[dedup]\nthreshold = inf\n', "[dedup] threshold: expected a finite number, 0 to 1, got inf"),
    ('[links]\nmin_karam = 50\n', "unknown option(s) in [links]: min_karam"),
    ('links = 3\n', "links must be a [links] table, got 3"),
    ('[linkz]\nmin_karma = 3\n', "unknown section(s) [linkz]"),
    ('[run]\nbeam_args = "--runner DataflowRunner"\n', "[run] beam_args: expected a list of strings"),
    ('[run]\nbeam_arg = ["--runner=FnApiRunner"]\n', "unknown option(s) in [run]: beam_arg"),
    ('[run]\nbeam_args = ["--direct_num_wrokers=2"]\n', "[run] beam_args: unknown to Beam: --direct_num_wrokers=2"),
])
def test_a_wrong_config_value_is_one_line_naming_file_section_and_key(text, expected, tmp_path, webtext_cli, capsys):
    code, run = links_with_config(webtext_cli, tmp_path, text)
    assert code == 2
    line = one_error_line(capsys)
    assert f"{tmp_path / 'webtext.toml'}: " in line and expected in line
    assert not run.exists()  # refused before anything was written, Beam job included


@pytest.mark.parametrize("content, expected", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not TOML text: byte 0 is not UTF-8"),
    (None, "cannot read config file"),  # a directory
])
def test_a_config_file_that_is_not_text_is_one_line(content, expected, tmp_path, webtext_cli, capsys):
    config = tmp_path / "webtext.toml"
    config.write_bytes(content) if content is not None else config.mkdir()
    assert webtext_cli("links", tmp_path / "run", "--config", config, "--reddit-dumps", "x.zst") == 2
    line = one_error_line(capsys)
    assert str(config) in line and expected in line


def test_a_toml_date_is_taken_as_that_date():
    links = available_stages()["links"]
    for value in (dt.date(2017, 12, 1), dt.datetime(2017, 12, 1, tzinfo=dt.timezone.utc), "2017-12-01", 1512086400):
        assert resolve_config(links, {"links": {"before": value}}, {})["before"] == 1512086400


def test_a_section_for_another_stage_is_checked_too(tmp_path, webtext_cli, capsys):
    """`webtext links` with a config whose [dedup] is wrong fails at once, not when `webtext dedup` runs."""
    code, _ = links_with_config(webtext_cli, tmp_path, '[dedup]\nnum_perm = "128"\n')
    assert code == 2
    assert "[dedup] num_perm: expected an integer, at least 1, got the string '128'" in one_error_line(capsys)


def test_numbers_of_the_other_toml_type_are_taken_where_exact():
    links = available_stages()["links"]
    config = resolve_config(links, {"links": {"max_bad_fraction": 0, "keep_nsfw": True, "reddit_dumps": "a.zst"}}, {})
    assert config["max_bad_fraction"] == 0.0 and isinstance(config["max_bad_fraction"], float)
    assert config["keep_nsfw"] is True and config["reddit_dumps"] == ["a.zst"]
    with pytest.raises(StageError, match=r"\[links\] praw_limit: expected an integer, at least 1, got the boolean true"):
        resolve_config(links, {"links": {"praw_limit": True}}, {})


@pytest.mark.parametrize("flags, expected", [
    (["--max-bad-fraction", "nan"], "argument --max-bad-fraction: expected a finite number, 0 to 1, got nan"),
    (["--max-bad-fraction=-0.5"], "argument --max-bad-fraction: expected a finite number, 0 to 1, got -0.5"),
    (["--links-shards", "0"], "argument --links-shards: expected an integer, at least 1, got 0"),
    (["--links-shards", "2.5"], "argument --links-shards: expected an integer, at least 1, got '2.5'"),
    (["--before", "soon"], "argument --before: expected an integer, got 'soon' (not a date (YYYY-MM-DD): 'soon')"),
    (["--min-karam=50"], "unknown to webtext links and to Beam: --min-karam=50"),
])
def test_a_wrong_flag_value_is_refused_before_anything_runs(flags, expected, tmp_path, webtext_cli, capsys):
    with pytest.raises(SystemExit) as done:
        webtext_cli("links", tmp_path / "run", "--reddit-dumps", "x.zst", *flags)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith(f" error: {expected}")
    assert not (tmp_path / "run").exists()


def test_help_shows_each_options_range(capsys):
    with pytest.raises(SystemExit):
        build_parser(available_stages()).parse_args(["links", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.01; 0 to 1)" in help_text  # --max-bad-fraction
    assert "(default: 8; at least 1)" in help_text  # --links-shards


@pytest.mark.parametrize("run, expected", [
    ("s3://bucket/run", "s3://bucket/run: s3:// needs the boto3 package: pip install 'apache-beam[aws]'"),
    ("hdfs://namenode/run", "hdfs://namenode/run: hdfs:// needs the hdfs package: pip install 'apache-beam[hadoop]'"),
    ("ftp://host/run", "ftp://host/run: Beam has no file system for ftp://"),
])
def test_a_run_on_a_file_system_without_its_package_says_what_to_install(run, expected, webtext_cli, capsys):
    pytest.importorskip("apache_beam")
    for module in ("boto3", "hdfs"):
        if module in expected and __import__("importlib").util.find_spec(module) is not None:
            pytest.fail(f"{module} is installed here, so this case cannot show its absence")
    assert webtext_cli("links", run, "--reddit-dumps", "x.zst") == 2
    assert expected in one_error_line(capsys)


def test_a_gs_run_without_the_gcp_extra_says_what_to_install(tmp_path):
    done = subprocess.run([sys.executable, "-m", "webtext.pipeline.cli", "links", "gs://bucket/run", "--reddit-dumps",
                           "x.zst"], env=isolated_env(tmp_path, block=("google.cloud.storage",)), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "webtext links: error: gs://bucket/run: gs:// needs the google-cloud-storage package: pip install 'webtext[gcp]'"]


def test_the_resolved_config_of_a_run_is_a_valid_config(tmp_path, webtext_cli, beam_args):
    """RUN/config.toml (dates as seconds, floats, lists) passes the same checks when given back as --config."""
    from webtext.pipeline.cli import check_config_file, load_config_file, save_resolved_config
    stages = available_stages()
    run = layout.RunDir(str(tmp_path))
    configs = {name: resolve_config(stage, {"links": {"before": dt.date(2017, 12, 1)}}, {})
               for name, stage in stages.items()}
    save_resolved_config(run, configs, list(beam_args))
    saved = load_config_file(run.path(layout.CONFIG))
    assert check_config_file(saved, stages, run.path(layout.CONFIG)) == beam_args


@pytest.mark.parametrize("argv, expected", [
    (["train", "RUN", "--lr", "nan"], "argument --lr: must be a finite number, got nan"),
    (["train", "RUN", "--lr=-inf"], "argument --lr: must be a finite number, got -inf"),
    (["train", "RUN", "--beta2", "1.5"], "argument --beta2: must be 0 to 1, got 1.5"),
    (["train", "RUN", "--min-lr-ratio", "-0.1"], "argument --min-lr-ratio: must be 0 to 1, got -0.1"),
    (["sample", "CKPT", "--top-p", "2"], "argument --top-p: must be 0 to 1, got 2"),
    (["sample", "CKPT", "--temperature", "nan"], "argument --temperature: must be a finite number, got nan"),
])
def test_the_trainers_float_flags_are_finite_and_in_range(argv, expected, capsys):
    pytest.importorskip("torch")
    from webtext.train.cli import main

    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith(f"error: {expected}")


def test_the_trainers_help_shows_ranges(capsys):
    pytest.importorskip("torch")
    from webtext.train.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "AdamW beta2 (default: 0.95; 0 to 1)" in " ".join(capsys.readouterr().out.split())
