"""The crawl stage's extraction (`webtext crawl RUN --from-warc …`: decoding, trafilatura, title and date, language ID,
quality rules, Parquet) against calling trafilatura directly on the same pages in a plain loop, in one run, one core
each; plus word-level F1 of each against the extraction benchmark's ground truth.

    python benchmarks/bench_extract.py --copies 5

The 91 pages of ../shared/data/extraction-benchmark are archived `--copies` times (under different URLs) into a WARC
file as our fetcher would have written them; the stage replays them on Beam's in-process FnApiRunner, with the
extraction sandbox process (the stage's default) doing the work while the runner waits: one busy core, like the loop.
"""
from __future__ import annotations

import argparse
import gc
import glob
import gzip
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load_pages(data: Path) -> tuple[dict[str, bytes], dict[str, str], dict[str, str]]:
    truth = json.loads((data / "ground-truth.json").read_text())
    pages = {i: gzip.decompress((data / "html" / f"{i}.html.gz").read_bytes()) for i in sorted(truth)}
    return pages, {i: t["articleBody"] for i, t in truth.items()}, {i: t["url"] for i, t in truth.items()}


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the extraction sandboxes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Timer:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, cpu_seconds() - self.cpu


def plain_loop(pages: list[bytes], **settings) -> tuple[Timer, list[str | None]]:
    import trafilatura

    with Timer() as timer:
        texts = [trafilatura.extract(page, **settings) for page in pages]
    return timer, texts


def metadata_loop(pages: list[bytes]) -> tuple[Timer, list[str | None]]:
    """trafilatura with its metadata (title, date, author, …): what a plain loop needs to get what the stage gives."""
    import trafilatura

    with Timer() as timer:
        documents = [trafilatura.bare_extraction(page, favor_precision=True, include_comments=False, with_metadata=True)
                     for page in pages]
    return timer, [d.text if d else None for d in documents]


def library_loop(pages: list[bytes], urls: list[str], languages: tuple[str, ...]) -> tuple[Timer, list]:
    from webtext.crawl.extract.pages import ExtractConfig, Page, process_page

    config = ExtractConfig(languages=languages)
    with Timer() as timer:
        results = [process_page(Page(url, page, "text/html"), config) for url, page in zip(urls, pages)]
    return timer, results


def write_run(run: Path, pages: list[bytes], urls: list[str]) -> None:
    """A WARC holding every page as a 200 text/html response, and the links table pointing at them."""
    from tests.testweb import write_links
    from webtext.crawl.fetch.warc import HttpExchange, WarcWriter

    writer = WarcWriter(str(run / "archive"), "bench")
    (run / "archive").mkdir(parents=True)
    for url, page in zip(urls, pages):
        writer.write(HttpExchange(url=url, status=200, reason_phrase="OK", body=page, started_at=time.time(),
                                  response_headers=[("Content-Type", "text/html"), ("Content-Length", str(len(page)))]))
    writer.close()
    write_links(run, urls, shards=4)


def stage_run(run: Path, extra: list[str]) -> Timer:
    from webtext.pipeline.cli import main as webtext

    with Timer() as timer:
        code = webtext(["crawl", str(run), "--from-warc", str(run / "archive" / "*.warc.gz"), "--force",
                        "--runner=FnApiRunner", "--log-level", "WARNING", *extra])
        gc.collect()  # the DoFns' teardown closes the sandbox, so its CPU time is counted here
    if code != 0:
        raise SystemExit(f"the crawl stage failed ({code})")
    return timer


def stage_docs(run: Path) -> dict[str, str]:
    from webtext.pipeline import layout
    from webtext.pipeline.storage import read_rows as read_parquet_rows

    return {row["url"]: row["text"] for path in glob.glob(str(run / layout.DOCS_GLOB))
            for row in read_parquet_rows(path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=5, help="times each of the 91 pages is archived")
    parser.add_argument("--rounds", type=int, default=2, help="each measurement is repeated, the best kept")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "extraction-benchmark"))
    args = parser.parse_args()
    from benchmarks.extraction_metric import extraction_scores

    pages_by_id, truth, original_urls = load_pages(Path(args.data))
    ids = list(pages_by_id)
    copies = [(f"http://bench{c}.example/{i}.html", i) for c in range(args.copies) for i in ids]
    urls, pages = [u for u, _ in copies], [pages_by_id[i] for _, i in copies]
    print(f"{len(pages)} pages ({len(ids)} x {args.copies}), {sum(map(len, pages)) / 1e6:.1f} MB; "
          f"load average {os.getloadavg()}")
    plain_loop(pages[:20])  # import and warm up trafilatura before timing anything

    workdir = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        run = workdir / "run"
        write_run(run, pages, urls)
        timings: dict[str, list[Timer]] = {}
        texts: dict[str, dict[str, str | None]] = {}
        for round_ in range(args.rounds):  # alternate, so drifting machine load hits all sides alike
            timer, got = plain_loop(pages)
            timings.setdefault("trafilatura, default settings", []).append(timer)
            texts["trafilatura, default settings"] = dict(zip(urls, got))
            timer, got = plain_loop(pages, favor_precision=True, include_comments=False)
            timings.setdefault("trafilatura, our settings", []).append(timer)
            texts["trafilatura, our settings"] = dict(zip(urls, got))
            timer, got = metadata_loop(pages)
            timings.setdefault("trafilatura, our settings + its metadata", []).append(timer)
            texts["trafilatura, our settings + its metadata"] = dict(zip(urls, got))
            timer, results = library_loop(pages, urls, languages=())
            timings.setdefault("process_page loop (library, no sandbox)", []).append(timer)
            texts["process_page loop (library, no sandbox)"] = {u: r.text for u, r in zip(urls, results)}
            for label, extra in (("crawl stage --from-warc, filters off", ["--languages", "all", "--skip-rules", "all"]),
                                 ("crawl stage --from-warc, defaults", [])):
                timings.setdefault(label, []).append(stage_run(run, extra))
                texts[label] = stage_docs(run)
        base_wall = min(t.wall for t in timings["trafilatura, our settings"])
        base_cpu = min(t.cpu for t in timings["trafilatura, our settings"])
        print(f"\n| what | wall s, best of {args.rounds} | CPU s, best | pages/s | wall vs plain loop | CPU vs plain loop "
              f"| F1 (P / R) on the 91 pages |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        first_copy = {i: f"http://bench0.example/{i}.html" for i in ids}
        for label, values in timings.items():
            wall, cpu = min(t.wall for t in values), min(t.cpu for t in values)
            precision, recall, f1 = extraction_scores({i: texts[label].get(u) for i, u in first_copy.items()}, truth)
            print(f"| {label} | {wall:.2f} ({', '.join(f'{t.wall:.2f}' for t in values)}) | {cpu:.2f} | "
                  f"{len(pages) / wall:.0f} | {wall / base_wall:.2f}x | {cpu / base_cpu:.2f}x | "
                  f"{f1:.3f} ({precision:.3f} / {recall:.3f}) |")
        kept = len(texts["crawl stage --from-warc, defaults"]) // args.copies
        print(f"\ndocuments kept with the default filters: {kept} of {len(ids)} pages; load average {os.getloadavg()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
