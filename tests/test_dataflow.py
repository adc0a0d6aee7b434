"""Beyond this machine, offline: the demo corpus built on gs:// (the gcp-storage-emulator on 127.0.0.1) equals the local
build, and every Beam stage's Dataflow job is created exactly as it would be submitted, as a classic template.

Every command runs in a subprocess without torch (a plain install, no `train` extra) that may not resolve public names.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

pytest.importorskip("gcp_storage_emulator", reason="needs the dev extra (gcp-storage-emulator)")
storage = pytest.importorskip("google.cloud.storage", reason="needs the gcp extra (apache-beam[gcp])")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tomli_w  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402

from tests.cloud_peers import (PROJECT, google_env, isolated_env, metadata_server, public_names_resolved,  # noqa: E402
                               storage_emulator)
from webtext.pipeline import demo  # noqa: E402
from webtext.pipeline.cli import available_stages  # noqa: E402
from webtext.pipeline.demo_dump import make_sample_dump  # noqa: E402
from webtext.pipeline.demo_web import serve_sample_web  # noqa: E402

pytestmark = pytest.mark.slow

BUCKET = "bucket"
GS_RUN = f"gs://{BUCKET}/run"
BEAM_STAGES = ("links", "crawl", "dedup", "shards")  # the tokenizer trains in one process and has no Beam job
DATAFLOW = ["--runner", "DataflowRunner", "--project", PROJECT, "--region", "us-central1",
            "--temp_location", f"gs://{BUCKET}/tmp"]
# Each stage's job must hold these transforms (top-level labels of its pipeline).
TRANSFORMS = {
    "links": {"DumpFiles", "ReadDumps", "ParseAndFilter", "MergeAndWrite", "WriteRejects"},
    "crawl": {"ReadLinks", "GroupByHost", "Fetch", "Extract", "WriteDocs", "WriteFetchLog", "WriteRejects"},
    "dedup": {"ReadDocs", "Sketch", "CandidatePairs", "VerifiedPairs", "NearClusters", "SurvivorsAndRejects",
              "WriteDocs", "WriteClusters", "WriteRejects"},
    "shards": {"ReadDocs", "Encode", "Plan", "WriteShard", "WriteManifest", "WriteRejects"},
}
# Columns that hold when or where a page was fetched: a second crawl of the same web differs there, and nowhere else.
FETCH_DETAILS = ("fetched_at", "elapsed", "warc_file", "warc_offset")


class Cloud:
    """The emulator, the metadata server, the demo's sample web and dump, and a way to run `webtext` against them."""

    def __init__(self, root: Path, emulator, metadata: str, dump: Path):
        self.root, self.emulator, self.dump = root, emulator, dump
        self.env = isolated_env(root, block=("torch",), **google_env(emulator, metadata))
        self.config = root / "demo.toml"
        self.config.write_text(tomli_w.dumps(demo.demo_config(dump, available_stages())))
        self.client = storage.Client(project=PROJECT, credentials=AnonymousCredentials(),
                                     client_options={"api_endpoint": emulator.url})
        self.seconds: dict[str, float] = {}

    def webtext(self, *args: str, label: str | None = None) -> subprocess.CompletedProcess:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "webtext.pipeline.cli", *args], env=self.env, cwd=self.root,
                              capture_output=True, text=True, timeout=300)
        self.seconds[label or " ".join(args[:2])] = round(time.monotonic() - started, 1)
        return done

    def python(self, code: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, *args], env=self.env, cwd=self.root, capture_output=True,
                              text=True, timeout=300)

    def download(self, prefix: str, into: Path) -> Path:
        """Every object under gs://bucket/prefix/, through the storage API, as local files."""
        for blob in self.client.list_blobs(BUCKET, prefix=prefix.rstrip("/") + "/"):
            target = into / blob.name[len(prefix.rstrip("/")) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(target)
        return into

    def read(self, url: str) -> bytes:
        bucket, _, name = url.removeprefix("gs://").partition("/")
        return self.client.bucket(bucket).blob(name).download_as_bytes()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    root = tmp_path_factory.mktemp("cloud")
    with storage_emulator(root / "gcs", BUCKET) as emulator, metadata_server() as metadata, \
            serve_sample_web(n=demo.DEMO_PAGES, sites=demo.DEMO_SITES, seed=0) as web:
        dump = root / "sample" / "RS_demo.zst"
        dump.parent.mkdir()
        make_sample_dump(dump, n=400, seed=0, urls=web.urls)
        cloud = Cloud(root, emulator, metadata, dump)
        yield cloud
    print(f"\nseconds per command: {json.dumps(cloud.seconds)}")


@pytest.fixture(scope="module")
def built(cloud):
    """The demo corpus built twice by the same commands on the local runner: into gs://bucket/run and a local folder."""
    local = cloud.root / "local-run"
    for run, label in ((GS_RUN, "build gs://"), (str(local), "build local")):
        done = cloud.webtext("build", run, "--config", str(cloud.config), label=label)
        assert done.returncode == 0, done.stderr[-4000:]
    return cloud.download("run", cloud.root / "gs-run"), local


def files_of(run: Path) -> list[str]:
    """The run's files, but for those named by when and by whom they were written (WARC and journal files)."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*")
                  if p.is_file() and p.parent.name not in ("warc", "journal"))


def journal_urls(run: Path) -> list[str]:
    return sorted(json.loads(line)["url"] for path in (run / "crawl" / "journal").glob("*.jsonl")
                  for line in path.read_text().splitlines())


def warc_urls(run: Path) -> list[str]:
    from warcio.archiveiterator import ArchiveIterator

    urls = []
    for path in sorted((run / "crawl" / "warc").glob("*.warc.gz")):
        with open(path, "rb") as handle:
            urls += [r.rec_headers.get_header("WARC-Target-URI") for r in ArchiveIterator(handle)
                     if r.rec_type == "response"]
    return sorted(urls)


def without_seconds(path: Path) -> dict:
    """A stage's stats without the time it took (its seconds, and counters of time such as extract.milliseconds)."""
    stats = {k: v for k, v in json.loads(path.read_text()).items() if k != "seconds"}
    stats["counters"] = {k: v for k, v in stats["counters"].items() if not k.endswith((".milliseconds", ".seconds"))}
    return stats


def parquet_without(path: Path, columns: tuple[str, ...]) -> pa.Table:
    table = pq.read_table(path)
    return table.drop_columns([c for c in columns if c in table.column_names])


def test_the_demo_corpus_on_gcs_equals_the_local_build(cloud, built):
    gs, local = built
    names = files_of(local)
    assert names == files_of(gs)
    # WARC files are named by when and by whom they were written, and hold the HTTP dates: the same responses, though
    assert warc_urls(gs) == warc_urls(local) and len(warc_urls(local)) > 50
    assert journal_urls(gs) == journal_urls(local) and len(journal_urls(local)) > 50  # every link, journaled once
    identical, same_content = [], []
    for name in names:
        ours, theirs = (gs / name).read_bytes(), (local / name).read_bytes()
        if ours == theirs:
            identical.append(name)
        elif name.endswith(".parquet") and name.startswith(("docs/", "dedup/docs-", "crawl/fetch-log/")):
            # documents and the fetch log carry the fetch's time and the WARC file's (RUN-based) path and offset
            assert parquet_without(gs / name, FETCH_DETAILS).equals(parquet_without(local / name, FETCH_DETAILS)), name
            same_content.append(name)
        elif name.startswith("stats/") and name.removeprefix("stats/").removesuffix(".json") in available_stages():
            assert without_seconds(gs / name) == without_seconds(local / name), name  # the same counters
        else:  # the run's path and times: stats.json, report.html; _SUCCESS holds input fingerprints (mtimes)
            assert name in ("stats/stats.json", "stats/report.html") or name.endswith("/_SUCCESS"), name
    byte_for_byte = ("links/", "dedup/clusters-", "dedup/pairs-", "rejects/", "tokenizer/", "shards/")
    for prefix in byte_for_byte:
        assert any(n.startswith(prefix) for n in identical), prefix
        assert not [n for n in names if n.startswith(prefix) and n not in identical and not n.endswith("_SUCCESS")]
    assert {"shards/manifest.json", "tokenizer/tokenizer.json"} <= set(identical)
    assert any(n.endswith(".arrow") for n in identical)
    assert len(same_content) >= 3  # docs, dedup docs and the fetch log, with the fetch details set aside

    # `webtext stats` and `webtext shards --verify` read the run on gs:// as they read a local one
    for run in (GS_RUN, str(local)):
        stats = cloud.webtext("stats", run)
        assert stats.returncode == 0 and f"written: {run}/stats/stats.json" in stats.stdout, stats.stderr[-3000:]
    summary = json.loads(cloud.read(f"{GS_RUN}/stats/stats.json"))
    assert summary["funnel"] == json.loads((local / "stats" / "stats.json").read_text())["funnel"]
    funnel = {row["step"]: row for row in summary["funnel"]}
    assert funnel["qualifying links"]["count"] > 50 and funnel["documents in shards"]["tokens"] > 10_000
    verify = cloud.webtext("shards", GS_RUN, "--verify")
    assert verify.returncode == 0 and "shards verified" in verify.stdout, verify.stderr[-3000:]
    assert public_names_resolved(cloud.root) == []


TEMPLATES = """
import json, sys, time
from webtext.pipeline.cli import main
seconds, codes = {}, {}
run, stages, dataflow = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
for stage in stages:
    started = time.monotonic()
    codes[stage] = main([stage, run, *dataflow, f"--template_location=gs://bucket/tpl/{stage}.json"])
    seconds[stage] = round(time.monotonic() - started, 1)
print(json.dumps({"seconds": seconds, "codes": codes}))
"""


def pipeline_transforms(pipeline_pb: bytes) -> set[str]:
    from apache_beam.portability.api import beam_runner_api_pb2

    pipeline = beam_runner_api_pb2.Pipeline.FromString(pipeline_pb)
    return {pipeline.components.transforms[t].unique_name
            for root in pipeline.root_transform_ids for t in pipeline.components.transforms[root].subtransforms}


def unconditional_requirements(wheel: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = Parser().parsestr(archive.read(metadata).decode()).get_all("Requires-Dist") or []
    return [r for r in requires if "extra ==" not in r]


def test_dataflow_templates_of_every_beam_stage(cloud, built):
    before = sorted(b.name + str(b.generation) for b in cloud.client.list_blobs(BUCKET, prefix="run/"))
    done = cloud.python(TEMPLATES, GS_RUN, ",".join((*BEAM_STAGES, "tokenizer")), "--config", str(cloud.config),
                        *DATAFLOW)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == {**{s: 0 for s in BEAM_STAGES}, "tokenizer": 2}
    assert "tokenizer runs no Beam job" in done.stderr
    assert done.stderr.count("workers install webtext from") == 1  # one wheel for the whole command
    cloud.seconds["templates"] = result["seconds"]

    for stage in BEAM_STAGES:
        template = json.loads(cloud.read(f"gs://{BUCKET}/tpl/{stage}.json"))
        assert template["type"] == "JOB_TYPE_BATCH"
        options = template["environment"]["sdkPipelineOptions"]["options"]
        assert options["project"] == PROJECT and options["region"] == "us-central1"
        assert TRANSFORMS[stage] <= pipeline_transforms(cloud.read(options["pipelineUrl"])), stage
        packages = {p["name"]: p["location"] for pool in template["environment"]["workerPools"]
                    for p in pool.get("packages", [])}
        wheels = [name for name in packages if name.startswith("webtext-") and name.endswith(".whl")]
        assert len(wheels) == 1, packages
        location = packages[wheels[0]].replace("storage.googleapis.com/", "gs://", 1)
        requirements = unconditional_requirements(cloud.read(location))
        assert any(r.startswith("apache-beam") for r in requirements)
        assert not [r for r in requirements if r.startswith("torch")], requirements
    after = sorted(b.name + str(b.generation) for b in cloud.client.list_blobs(BUCKET, prefix="run/"))
    assert after == before  # making a template leaves the run as it was
    assert public_names_resolved(cloud.root) == []
