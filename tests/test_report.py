"""`webtext stats RUN` on a small run: report.html (checked in headless Chromium), stats.json, the terminal summary."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from webtext.pipeline import layout, storage
from webtext.pipeline.layout import RunDir
from webtext.pipeline.report import collect, compare_domains, print_stats, registered_name, spearman
from webtext.pipeline.report_html import SECTIONS, domains_section, render_html
from webtext.train import shard_format

HOSTS = ["www.nytimes.com", "news.bbc.co.uk", "github.com", "blog.example.org"]


def write_run(root: Path, with_fetch_log: bool = True) -> RunDir:
    """A small finished run written file by file in the layout's formats (what the stages would leave)."""
    run = RunDir(str(root))
    counters = {
        "links": {"submissions.read": 100, "links.written": 12, "reject.self-post": 60, "reject.nsfw": 20,
                  "reject.wikipedia": 8},
        "crawl": {"links.read": 12, "pages.fetched": 11, "docs.written": 8, "reject.http-404": 1,
                  "reject.binary-body": 1, "reject.too-few-words": 2},
        "dedup": {"docs.read": 8, "docs.written": 7, "reject.exact-duplicate": 1},
    }
    for stage, values in counters.items():
        run.write_json({"stage": stage, "seconds": 1.5, "counters": values}, layout.STATS, f"{stage}.json")
    rejects = {
        "links": [("self-post", "self post", f"https://www.reddit.com/r/x/{i}") for i in range(60)]
        + [("nsfw", "over_18", f"https://nsfw.example.com/{i}") for i in range(20)]
        + [("wikipedia", "en.wikipedia.org", f"https://en.wikipedia.org/wiki/{i}") for i in range(8)],
        "crawl": [("http-404", "Not Found", "https://github.com/gone"),
                  ("binary-body", "4,008 bytes that are not text", "https://github.com/blob"),
                  ("too-few-words", "14 words < 50", "https://blog.example.org/a"),
                  ("too-few-words", "9 words < 50", "https://blog.example.org/b")],
        "dedup": [("exact-duplicate", "survivor d0", "https://www.nytimes.com/copy")],
    }
    for stage, rows in rejects.items():
        storage.write_parquet_rows(run.path(layout.REJECTS, stage, "rejects-00000-of-00001.parquet"),
                                   [layout.reject(stage, r, d, url=u) for r, d, u in rows], layout.REJECT_SCHEMA)
    docs = [dict.fromkeys(layout.DOC_SCHEMA.names) | {
        "doc_id": f"d{i}", "url": f"https://{HOSTS[i % 4]}/{i}", "url_key": f"https://{HOSTS[i % 4]}/{i}",
        "domain": HOSTS[i % 4], "text": "word " * (60 + 10 * i), "language": "en", "language_score": 0.9 + i / 100,
        "score": 3 + i, "n_words": 60 + 10 * i} for i in range(8)]
    storage.write_parquet_rows(run.path(layout.DOCS, "docs-00000-of-00001.parquet"), docs, layout.DOC_SCHEMA)
    storage.write_parquet_rows(run.path(layout.DEDUP, "docs-00000-of-00001.parquet"), docs[:7], layout.DOC_SCHEMA)
    storage.write_parquet_rows(run.path(layout.DEDUP, "clusters-00000-of-00001.parquet"),
                               [{"cluster_id": "d0", "doc_id": "d0", "kept": True, "jaccard": 1.0, "reason": ""},
                                {"cluster_id": "d0", "doc_id": "d7", "kept": False, "jaccard": 1.0,
                                 "reason": "exact-duplicate"}],
                               pa.schema([("cluster_id", pa.string()), ("doc_id", pa.string()), ("kept", pa.bool_()),
                                          ("jaccard", pa.float64()), ("reason", pa.string())]))
    run.write_json({"threshold": 0.8, "bands": 14, "rows": 9, "num_perm": 128,
                    "candidate_probability_at_jaccard": {"0.50": 0.027, "0.80": 0.867}}, layout.DEDUP, "lsh.json")
    for stage in ("links", "crawl", "dedup"):
        run.write_success(stage, "fingerprint", [])
    if with_fetch_log:
        log_rows = [dict.fromkeys(layout.FETCH_LOG_SCHEMA.names) | {
            "url": d["url"], "url_key": d["url_key"], "outcome": "page", "status": 200, "bytes": 4 * len(d["text"]),
            "elapsed": 0.1 * (i + 1)} for i, d in enumerate(docs)]
        log_rows.append(dict.fromkeys(layout.FETCH_LOG_SCHEMA.names) | {
            "url": "https://github.com/gone", "url_key": "https://github.com/gone", "outcome": "rejected",
            "status": 404, "elapsed": 0.2, "reason": "http-404", "detail": "Not Found"})
        storage.write_parquet_rows(run.path(layout.FETCH_LOG, "fetch-log-00000-of-00001.parquet"), log_rows,
                                   layout.FETCH_LOG_SCHEMA)
    shards = Path(run.path(layout.SHARDS))
    shards.mkdir(parents=True)
    stats = shard_format.write_shard(shards / "train-00000.arrow",
                                     [(d["doc_id"], np.arange(5 + i, dtype=np.uint16)) for i, d in enumerate(docs[:7])],
                                     "uint16")
    run.write_json({"format": "webtext-shards", "version": 1, "shards": [
        {"name": "train-00000.arrow", "split": "train", "documents": stats.documents, "tokens": stats.tokens,
         "sha256": stats.sha256}]}, layout.SHARDS_MANIFEST)
    run.write_json({"ngram": 8, "normalisation": "NFKC", "decontaminate": True, "contamination_threshold": 0.1,
                    "overlap": "share of a document's distinct n-grams found in the eval set",
                    "eval_sets": {"lambada": {"ngrams": 1000, "ngrams_in_corpus": 40, "share_in_corpus": 0.04,
                                              "share_after_decontamination": 0.0, "documents_with_overlap": 2,
                                              "documents_over_threshold": 1, "documents_dropped": 1,
                                              "top_documents": [{"doc_id": "d9", "url": "https://leak.example.com/",
                                                                 "ngrams": 50, "matched": 40, "overlap": 0.8,
                                                                 "dropped": True}]}}},
                   layout.STATS, "contamination.json")
    storage.write_bytes(run.path(layout.CONFIG), b'[links]\nmin_karma = 3\n\n[crawl]\nhost_delay = 1.0\n')
    train_log = [{"step": s, "loss": 8 - s / 10, "lr": 3e-4, "tokens_per_s": 500.0, "tokens": 256 * s}
                 | ({"val_loss": 8 - s / 12} if s % 5 == 0 else {}) for s in range(1, 11)]
    storage.write_bytes(run.path(layout.TRAINING, "tiny", "log.jsonl"),
                        "".join(json.dumps(row) + "\n" for row in train_log).encode())
    return run


@pytest.fixture(scope="module")
def report_run(tmp_path_factory) -> RunDir:
    run = write_run(tmp_path_factory.mktemp("report") / "run")
    assert print_stats(run.root) == 0
    return run


# -- stats.json ------------------------------------------------------------------------------------------------------

def test_funnel_counts_shares_and_top_reasons(report_run):
    stats = json.loads(Path(report_run.stats("stats.json")).read_text())
    funnel = {row["step"]: row for row in stats["funnel"]}
    assert [row["step"] for row in stats["funnel"]] == ["submissions read", "qualifying links", "fetched", "extracted",
                                                       "passed filters", "dedup survivors", "documents in shards"]
    assert [row["count"] for row in stats["funnel"]] == [100, 12, 11, 10, 8, 7, 7]
    assert funnel["qualifying links"]["share_of_previous"] == 0.12
    assert funnel["documents in shards"]["tokens"] == sum(range(5, 12))
    reasons = lambda step: [r["reason"] for r in funnel[step]["top_rejects"]]  # noqa: E731
    assert reasons("qualifying links") == ["self-post", "nsfw", "wikipedia"]
    assert reasons("fetched") == ["http-404"]  # a fetch-log reason
    assert reasons("extracted") == ["binary-body"]
    assert reasons("passed filters") == ["too-few-words"]  # a quality rule
    assert reasons("dedup survivors") == ["exact-duplicate"]
    examples = stats["rejects"]["crawl"]["too-few-words"]
    assert examples["count"] == 2 and examples["examples"][0] == {"url": "https://blog.example.org/a",
                                                                   "detail": "14 words < 50"}
    assert len(stats["rejects"]["links"]["self-post"]["examples"]) == 3


def test_distributions_domains_and_training_in_stats(report_run):
    stats = json.loads(Path(report_run.stats("stats.json")).read_text())
    dists = stats["distributions"]
    assert dists["document_words"]["count"] == 7 and dists["document_words"]["p50"] == 90  # dedup survivors
    assert dists["document_tokens"] == {**dists["document_tokens"], "count": 7, "min": 5, "max": 11}
    assert dists["fetch_seconds"]["count"] == 9 and "sample" not in dists["fetch_seconds"]
    assert dists["extraction_yield"]["count"] == 8 and dists["extraction_yield"]["max"] == 0.25
    assert stats["fetch_status_codes"] == {"200": 8, "404": 1}
    assert stats["duplicate_cluster_sizes"] == {"2": 1}
    domains = stats["domains"]
    assert [d for d, _ in domains["corpus_top"]] == ["nytimes", "bbc", "github", "example"]
    assert domains["overlap_with_webtext_top1000"] == 3 and domains["wikipedia_documents"] == 0
    assert domains["webtext_top"][0] == ["google", 1542261]
    assert stats["contamination"]["eval_sets"]["lambada"]["documents_dropped"] == 1
    assert stats["training"]["tiny"][-1]["step"] == 10
    assert stats["provenance"]["config"]["links"]["min_karma"] == 3
    assert stats["provenance"]["stages"]["crawl"]["seconds"] == 1.5


def test_registered_names_and_rank_correlation():
    assert registered_name("news.bbc.co.uk") == "bbc" and registered_name("en.wikipedia.org") == "wikipedia"
    assert registered_name("127.0.0.1") == "127.0.0.1"
    assert spearman([3, 2, 1], [30, 20, 10]) == 1.0 and spearman([1, 2, 3], [30, 20, 10]) == -1.0
    assert spearman([1, 2], [1, 2]) is None
    leaked = compare_domains(Counter({"bbc": 5, "wikipedia": 2}))
    assert leaked["wikipedia_documents"] == 2 and "present in 2 documents" in domains_section({"domains": leaked})


def test_missing_data_is_said_not_invented(tmp_path):
    run = write_run(tmp_path / "run", with_fetch_log=False)
    page = render_html(collect(run))
    assert "No fetch log in this run." in page
    assert page.count("Not recorded in this run.") == 2  # fetch time and extraction yield


def test_a_corpus_placed_by_hand_is_reported_with_what_it_has(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    storage.write_parquet_rows(run.path(layout.DOCS, "corpus.parquet"), [{"doc_id": "a", "text": "some words"}],
                               pa.schema([("doc_id", pa.string()), ("text", pa.string())]))
    assert print_stats(run.root) == 0
    page = Path(run.stats("report.html")).read_text()
    assert page.count("Not recorded in this run.") == len(SECTIONS) - 1  # every histogram: no column, no shards
    assert "The documents have no domain column" in page


def test_a_folder_that_is_no_run_is_a_one_line_error(tmp_path, webtext_cli, capsys):
    assert webtext_cli("stats", tmp_path / "no" / "such" / "run") == 2
    err = capsys.readouterr().err
    assert err == f"webtext stats: error: {tmp_path / 'no' / 'such' / 'run'}: does not exist: not a run directory " \
                  "(give the RUN of a build or demo)\n"
    assert not (tmp_path / "no").exists()
    (tmp_path / "notes.txt").write_text("not a run")
    assert webtext_cli("stats", tmp_path / "notes.txt") == 2
    assert "notes.txt: is a file: not a run directory" in capsys.readouterr().err
    (tmp_path / "folder").mkdir()
    assert webtext_cli("stats", tmp_path / "folder") == 2
    err = capsys.readouterr().err
    assert err.startswith("webtext stats: error: ") and "nothing to report" in err and "Traceback" not in err
    assert list((tmp_path / "folder").iterdir()) == []  # nothing written into a folder that holds no run


def test_terminal_summary_shows_each_counter_once(report_run, capsys):
    assert print_stats(report_run.root) == 0
    out = capsys.readouterr().out
    assert "funnel" in out and "passed filters" in out
    assert out.count("rejected self-post") == 1 and out.count("pages.fetched") == 1


def test_stats_command_regenerates_the_report(report_run, webtext_cli, capsys):
    Path(report_run.stats("report.html")).unlink()
    assert webtext_cli("stats", report_run.root) == 0
    assert Path(report_run.stats("report.html")).read_text().startswith("<!doctype html>")


# -- the page in a real browser --------------------------------------------------------------------------------------

class Chromium:
    """The system's headless Chromium driven over its DevTools protocol (websocket-client): a page's console
    errors, its network requests and a full-page screenshot."""

    def __init__(self, binary: str, profile: str):
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = None
        for line in self.process.stderr:
            if line.startswith("DevTools listening on "):
                url = line.split("on ", 1)[1].strip()
                break
        if url is None:
            self.process.kill()
            raise RuntimeError(f"{binary} did not open its DevTools port")
        import websocket
        self.socket = websocket.create_connection(url, timeout=60)
        self.next_id, self.events = 0, []

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}
                                    | ({"sessionId": session} if session else {})))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(method)
            self.events.append(json.loads(self.socket.recv()))

    def open(self, url: str) -> str:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session)
        self.send("Emulation.setDeviceMetricsOverride", session, width=1280, height=900, deviceScaleFactor=1,
                  mobile=False)
        self.events.clear()
        self.send("Page.navigate", session, url=url)
        self.wait_for("Page.loadEventFired")
        return session

    def console_errors(self) -> list[str]:
        errors = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                errors.append(str(params["exceptionDetails"]))
            elif event.get("method") == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                errors.append(str(params["args"]))
            elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(params["entry"]["text"])
        return errors

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def evaluate(self, session: str, expression: str):
        return self.send("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"]["value"]

    def screenshot(self, session: str, path: Path) -> None:
        import base64
        shot = self.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def chromium():
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("no system Chromium (Debian: apt-get install chromium); .ci/run installs it")
    with tempfile.TemporaryDirectory() as profile:
        browser = Chromium(binary, profile)
        yield browser
        browser.close()


def test_report_page_in_headless_chromium(report_run, chromium, tmp_path):
    page = Path(report_run.stats("report.html")).resolve()
    session = chromium.open(page.as_uri())
    assert chromium.console_errors() == []
    assert [url for url in chromium.requests() if url != page.as_uri()] == []  # no CDN, no font, no favicon
    sections = chromium.evaluate(session, "Array.from(document.querySelectorAll('section[id]')).map(s => s.id)")
    assert sections == [key for key, _ in SECTIONS]
    assert chromium.evaluate(session, "document.querySelectorAll('section svg').length") >= 10  # the plots
    broken = chromium.evaluate(session, "Array.from(document.querySelectorAll('a[href^=\"#\"]'))"
                                        ".filter(a => !document.getElementById(a.hash.slice(1))).map(a => a.hash)")
    assert broken == []  # every reason in the funnel links to its row in the rejects section
    contamination = chromium.evaluate(session, "document.querySelector('#decontamination').innerText")
    assert "lambada" in contamination and "https://leak.example.com/" in contamination
    shot = tmp_path / "report.png"
    chromium.screenshot(session, shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


# -- a run on gs:// --------------------------------------------------------------------------------------------------

COPY_THEN_STATS = """
import sys
from pathlib import Path
from webtext.pipeline import storage
from webtext.pipeline.cli import main

local, remote, back = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
for path in sorted(p for p in local.rglob("*") if p.is_file() and p.name not in ("stats.json", "report.html")):
    storage.write_bytes(f"{remote}/{path.relative_to(local).as_posix()}", path.read_bytes())
code = main(["stats", remote])
for name in ("stats.json", "report.html"):
    (back / name).write_bytes(storage.read_bytes(f"{remote}/stats/{name}"))
sys.exit(code)
"""


@pytest.mark.slow
def test_report_of_a_run_on_gcs(tmp_path):
    pytest.importorskip("google.cloud.storage", reason="needs the gcp extra (apache-beam[gcp])")
    from tests.cloud_peers import google_env, isolated_env, metadata_server, public_names_resolved, storage_emulator

    local = write_run(tmp_path / "run")
    assert print_stats(local.root) == 0
    back = tmp_path / "back"
    back.mkdir()
    with storage_emulator(tmp_path / "gcs") as emulator, metadata_server() as metadata:
        env = isolated_env(tmp_path, **google_env(emulator, metadata))
        done = subprocess.run([sys.executable, "-c", COPY_THEN_STATS, local.root, "gs://bucket/run", str(back)],
                              env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert public_names_resolved(tmp_path) == []
    ours, theirs = (json.loads(p.read_text()) for p in (Path(local.stats("stats.json")), back / "stats.json"))
    for key in ("funnel", "rejects", "distributions", "fetch_status_codes", "duplicate_cluster_sizes", "domains",
                "training"):
        assert ours[key] == theirs[key], key
    assert "gs://bucket/run" in (back / "report.html").read_text()
