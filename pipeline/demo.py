"""`webtext demo RUN`: generate the offline sample (a Reddit dump whose links point at a loopback web) and build it.

Everything the demo needs is made here: article pages from the Python standard library's own documentation, served
on 127.0.0.1 (several ports, several hosts), and a Pushshift-style .zst dump linking to them among messy posts.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from pathlib import Path

from webtext.pipeline import layout
from webtext.pipeline.cli import TRAIN_EXTRA, run_stages, torch_installed
from webtext.pipeline.demo_dump import make_sample_dump
from webtext.pipeline.report import print_stats
from webtext.pipeline.stage import StageError

log = logging.getLogger(__name__)

DEMO_PAGES = 60
DEMO_SITES = 4
DEMO_TRAINING = "demo"
DEMO_STEPS = 20


def demo_config(dump: Path, stages: dict) -> dict:
    """Options suited to a corpus of a few dozen pages; everything else keeps its production default."""
    config = {
        "links": {"reddit_dumps": [str(dump)], "links_shards": 2},
        # the sample web lives on loopback addresses; a short delay keeps the demo quick and still polite
        "crawl": {"allow_private_addresses": True, "host_delay": 0.05, "docs_shards": 2, "fetch_log_shards": 2},
        "dedup": {"dedup_shards": 2},
        "tokenizer": {"vocab_size": 2048},
        "shards": {"shard_tokens": 200_000, "val_fraction": 0.05},
    }
    return {name: options for name, options in config.items() if name in stages}


def demo_training(root: str) -> list[str]:
    """A few steps of a tiny GPT-2 on the demo shards, enough to see the trainer run end to end on a CPU."""
    return ["train", root, "--n-layer", "2", "--n-head", "2", "--n-embd", "64", "--block-size", "64",
            "--micro-batch", "4", "--batch-tokens", "256", "--max-steps", str(DEMO_STEPS), "--warmup", "2",
            "--eval-every", "10", "--ckpt-every", str(DEMO_STEPS), "--device", "cpu", "--name", DEMO_TRAINING]


def record_sample_web(web, record: Path) -> None:
    """Says which recorded port another process holds (that site moves, so every stage builds again), and records
    the ports served for the next run."""
    from webtext.pipeline.demo_web import record_ports
    for site, (asked, given) in sorted(web.moved.items()):
        print(f"demo: {site}'s port {asked}, recorded in {record}, is taken by another process: {site} is served on "
              f"port {given} instead, so its URLs and doc ids change and every stage builds again", file=sys.stderr)
    record_ports(record, web.ports)


def demo_model_current(train_dir: Path, run: layout.RunDir) -> bool:
    """Whether train_dir holds the demo's finished model (its last step's checkpoint), saved after the shards were
    last built."""
    from webtext.train import checkpoint
    found = checkpoint.list_checkpoints(train_dir)
    shards_done = Path(run.success_path("shards"))
    if not found or not shards_done.is_file():
        return False
    try:
        step = checkpoint.read_meta(found[-1]).get("step")
    except checkpoint.CheckpointError:
        return False
    return step == DEMO_STEPS and (found[-1] / checkpoint.META).stat().st_mtime > shards_done.stat().st_mtime


def run_demo(root: str, stages: dict, submissions: int = 400, beam_args: list[str] | None = None,
             force: bool = False) -> int:
    if "://" in root:
        raise StageError("the demo serves its sample web on this machine: give a local RUN directory")
    dump = Path(root, layout.SAMPLE_DUMP)
    dump.parent.mkdir(parents=True, exist_ok=True)
    web_record = Path(root, layout.SAMPLE_WEB)
    web_context = contextlib.nullcontext(None)
    if "crawl" in stages:  # on the ports of the last run: same URLs, same dump, so the stages are up to date
        from webtext.pipeline.demo_web import recorded_ports, serve_sample_web
        web_context = serve_sample_web(n=DEMO_PAGES, sites=DEMO_SITES, seed=0, ports=recorded_ports(web_record))
    with web_context as web:
        urls = web.urls if web is not None else None
        if web is not None:
            record_sample_web(web, web_record)
        planted = make_sample_dump(dump, n=submissions, seed=0, urls=urls)
        print(sample_banner(dump, planted, urls), file=sys.stderr)
        ran = run_stages(list(stages), stages, root, demo_config(dump, stages), {}, list(beam_args or []), force)
    if "shards" in stages and not torch_installed():
        print(f"demo: training skipped: {TRAIN_EXTRA}", file=sys.stderr)
    elif "shards" in stages:
        from webtext.train.cli import main as train_main
        train_dir = Path(root, layout.TRAINING, DEMO_TRAINING)
        if not ran and not force and demo_model_current(train_dir, layout.RunDir(root)):
            print(f"demo: training up to date, skipped: no stage rebuilt and {train_dir} holds the model of its "
                  f"{DEMO_STEPS} steps, trained on these shards", file=sys.stderr)
        else:
            shutil.rmtree(train_dir, ignore_errors=True)  # the demo's own scratch model
            code = train_main(demo_training(root))
            if code:
                return code
    code = print_stats(root)
    if "shards" in stages and not code:
        print(next_steps(root, trained=torch_installed()))
    return code


def sample_banner(dump: Path, planted: dict, urls: list[str] | None) -> str:
    """What the generated dump holds. Its URL count is of distinct URLs linked with enough karma: the links stage's
    other rules (file extensions, hosts, …) still drop some, so its "qualifying links" can be fewer."""
    linked = (f"{planted['links']} distinct URLs linked with at least 3 karma"
              + (f", pointing at the {len(urls)} pages of a sample web on {DEMO_SITES} loopback hosts" if urls else ""))
    wrote = "kept (unchanged)" if planted.get("unchanged") else "wrote"
    return (f"demo: {wrote} {dump}: {planted['lines']} submissions; {linked} (the links stage's rules decide which "
            "qualify: the sample web has a .pdf, which they drop)")


def next_steps(root: str, trained: bool) -> str:
    """The commands to look further, with real ids from this run so that each can be pasted as it is."""
    import pyarrow.parquet as pq

    run = layout.RunDir(root)
    clusters = [f.path for f in run.files(layout.DEDUP_CLUSTERS_GLOB)]
    members = [row for path in clusters for row in pq.read_table(path, columns=["doc_id", "kept"]).to_pylist()]
    survivor = next((row["doc_id"] for row in members if row["kept"]), None)
    docs = [f.path for f in run.files(layout.DEDUP_DOCS_GLOB)]
    first = pq.read_table(docs[0], columns=["doc_id", "url"]).slice(0, 1).to_pylist() if docs else []
    doc_id = survivor or (first[0]["doc_id"] if first else "DOC_ID")
    url = first[0]["url"] if first else "URL"
    lines = ["", "What next:",
             f"  open {Path(root, layout.STATS, 'report.html')}   # the corpus report (any browser, offline)",
             f"  webtext inspect {root} docs --sample 5          # a few documents",
             f"  webtext inspect {root} doc {doc_id}   # one whole, with its provenance",
             f"  webtext inspect {root} cluster {doc_id}   # its duplicates side by side",
             f"  webtext inspect {root} url {url}   # where a URL went",
             f"  webtext inspect {root} rejects --stage crawl    # what the crawl dropped, and why"]
    if trained:
        lines.append(f"  webtext sample {Path(root, layout.TRAINING, DEMO_TRAINING)} --prompt \"The\" --max-tokens 40"
                     "   # text from the demo's tiny model")
    return "\n".join(lines)
