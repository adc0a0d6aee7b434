"""Running beyond this machine: the runner and template options, the webtext wheel that Dataflow workers install (built
once per command from the installed webtext), and a fast check for Google credentials before gs:// is touched."""
from __future__ import annotations

import atexit
import base64
import csv
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import unquote, urlparse

from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions, SetupOptions, StandardOptions,
                                                  WorkerOptions)

from .storage import StageError

log = logging.getLogger(__name__)

DIST = "webtext"


def _options(beam_args: Sequence[str]) -> PipelineOptions:
    return PipelineOptions(list(beam_args))


def names_runner(beam_args: Sequence[str]) -> bool:
    return _options(beam_args).view_as(StandardOptions).runner is not None


def is_dataflow(beam_args: Sequence[str]) -> bool:
    runner = _options(beam_args).view_as(StandardOptions).runner or ""
    return runner.rsplit(".", 1)[-1].lower() in ("dataflow", "dataflowrunner")


def template_location(beam_args: Sequence[str]) -> str | None:
    """Where a Dataflow classic template is to be written instead of running the job (--template_location)."""
    return _options(beam_args).view_as(GoogleCloudOptions).template_location or None


def gcs_locations(beam_args: Sequence[str]) -> list[str]:
    google = _options(beam_args).view_as(GoogleCloudOptions)
    return [p for p in (google.temp_location, google.staging_location, google.template_location) if p]


# -- what Dataflow workers install ------------------------------------------------------------------------------------

def staging_args(beam_args: Sequence[str]) -> list[str]:
    """For a Dataflow job whose user gave no container image and no package of their own: `--extra_package` with a
    wheel of the installed webtext, which Beam stages and every worker pip-installs (with its dependencies)."""
    if not is_dataflow(beam_args):
        return []
    options = _options(beam_args)
    setup, worker = options.view_as(SetupOptions), options.view_as(WorkerOptions)
    if setup.extra_packages or setup.setup_file or setup.requirements_file or worker.sdk_container_image:
        return []
    return [f"--extra_package={webtext_wheel()}"]


@functools.cache
def webtext_wheel() -> str:
    """A wheel of the webtext this process runs, built once per process in a temporary folder."""
    out = Path(tempfile.mkdtemp(prefix="webtext-wheel-"))
    atexit.register(shutil.rmtree, out, True)
    dist, source = installed_webtext()
    if source is not None:
        wheel = build_wheel(source, out)
        how = f"built from {source}"
    else:
        wheel = repack_wheel(dist, out)
        how = f"repacked from the installed files in {dist.locate_file('')}"
    log.info("dataflow: workers install webtext from %s (%s), staged with --extra_package", wheel, how)
    return str(wheel)


def installed_webtext() -> tuple[importlib.metadata.Distribution, Path | None]:
    """The distribution this webtext was imported from, and its project folder when it is an editable install."""
    import webtext.pipeline

    module = Path(webtext.pipeline.__file__).resolve()
    for dist in importlib.metadata.distributions(name=DIST):
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        if direct.get("dir_info", {}).get("editable"):
            source = Path(unquote(urlparse(direct["url"]).path)).resolve()
            if module.is_relative_to(source):
                return dist, source
        elif Path(dist.locate_file("webtext/pipeline/__init__.py")).resolve() == module:
            return dist, None
    raise StageError(f"cannot tell which installed {DIST} {module} belongs to; build a wheel yourself and give it "
                     "with --extra_package")


def build_wheel(source: Path, out: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the project (only what the build reads, so no stale build/ leaks in)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((source / "pyproject.toml").read_text())
    tree = out / "source"
    tree.mkdir()
    readme = project.get("project", {}).get("readme")
    for name in ["pyproject.toml", *([readme] if isinstance(readme, str) else [])]:
        shutil.copy2(source / name, tree / name)
    for folder in sorted(set(project.get("tool", {}).get("setuptools", {}).get("package-dir", {}).values())):
        shutil.copytree(source / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--wheel-dir", str(out), str(tree)]
    if importlib.util.find_spec("setuptools") is not None:
        command.insert(4, "--no-build-isolation")  # build with the setuptools installed here: nothing downloaded
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(out.glob("*.whl"))
    if done.returncode or not wheels:
        raise StageError(f"building the webtext wheel for Dataflow failed ({' '.join(command)}):\n{done.stderr}")
    shutil.rmtree(tree, ignore_errors=True)
    return wheels[0]


def repack_wheel(dist: importlib.metadata.Distribution, out: Path) -> Path:
    """A wheel of an installed (non-editable) webtext: its files as installed, its metadata, a new RECORD."""
    info = f"{dist.metadata['Name']}-{dist.version}.dist-info"
    skipped = {f"{info}/{name}" for name in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    wheel = out / f"{dist.metadata['Name']}-{dist.version}-py3-none-any.whl"
    record = io.StringIO()
    rows = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(dist.files or [], key=str):
            name = file.as_posix()
            if name.startswith("..") or name in skipped or "__pycache__" in file.parts:
                continue  # scripts (re-made from entry_points.txt), installer notes and bytecode
            data = Path(dist.locate_file(file)).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            archive.writestr(name, data)
            rows.writerow([name, f"sha256={digest}", len(data)])
        rows.writerow([f"{info}/RECORD", "", ""])
        archive.writestr(f"{info}/RECORD", record.getvalue())
    return wheel


# -- Google credentials -----------------------------------------------------------------------------------------------

@functools.cache
def _google_credentials_found() -> str:
    """'' when Google's default credentials are found, else why not."""
    try:
        import google.auth
        import google.auth.exceptions
    except ImportError:
        return "gs:// needs Beam's gcp extra: pip install 'webtext[gcp]'"
    quiet = logging.getLogger("google.auth")  # its own warning on the way; ours below says what to do
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError:
        return ("no Google credentials found for gs://; on your machine run `gcloud auth application-default login`, "
                "or set GOOGLE_APPLICATION_CREDENTIALS to a service account's key file (see docs/dataflow.md). "
                "Without them, Beam retries for about 30 s in every process and then goes on anonymously")
    finally:
        quiet.setLevel(level)
    return ""


def check_google_credentials(paths: Iterable[str]) -> None:
    """Fails at once, saying what to do, when a gs:// path is to be used and Google's credentials are not found."""
    if any(str(path).startswith("gs://") for path in paths):
        problem = _google_credentials_found()
        if problem:
            raise StageError(problem)
