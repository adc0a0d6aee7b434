"""Times the links stage on a generated dump against a plain single-process loop over the same file, in one run.

    python benchmarks/bench_links.py --submissions 1000000 --workers 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict

from webtext.crawl.reddit import dumps, submissions
from webtext.crawl.reddit.linkrules import LinkRules, judge_submission, merge_link
from webtext.crawl.reddit.urls import UrlFilter
from webtext.pipeline import layout
from webtext.pipeline.cli import available_stages, run_stages
from webtext.pipeline.demo_dump import make_sample_dump


def plain_loop(path: str) -> tuple[int, int]:
    """What a careful one-off script would do: stream, parse, filter, group by URL, merge."""
    rules = LinkRules(url_filter=UrlFilter.default())
    by_url = defaultdict(list)
    read = 0
    with open(path, "rb") as handle:
        for _, line in dumps.iter_dump_lines(handle, path):
            if isinstance(line, dumps.DumpLine):
                continue
            read += 1
            try:
                record = json.loads(line)
                submission = submissions.parse_submission(record)
            except (ValueError, submissions.BadSubmission):
                continue
            verdict = judge_submission(submission, rules)
            if verdict.reason is None:
                by_url[verdict.url_key].append(submission)
    links = sum(1 for key in sorted(by_url) if merge_link(key, by_url[key], rules)[0] is not None)
    return read, links


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--submissions", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-links-")
    dump = os.path.join(workdir, "RS_bench.zst")
    started = time.perf_counter()
    planted = make_sample_dump(dump, n=args.submissions, seed=1)
    print(f"generated {args.submissions:,} submissions in {time.perf_counter() - started:.1f}s "
          f"({os.path.getsize(dump) / 1e6:.1f} MB zst): {planted}")

    started = time.perf_counter()
    read, links = plain_loop(dump)
    loop_s = time.perf_counter() - started
    print(f"plain loop, 1 process: {read:,} submissions -> {links:,} links in {loop_s:.1f}s = {read / loop_s:,.0f}/s")

    run = os.path.join(workdir, "run")
    shutil.rmtree(run, ignore_errors=True)
    stages = available_stages()
    beam_args = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"]
    started = time.perf_counter()
    run_stages(["links"], stages, run, {"links": {"reddit_dumps": [dump]}}, {}, beam_args, force=True)
    beam_s = time.perf_counter() - started
    stats = json.loads(open(os.path.join(run, layout.STATS, "links.json")).read())["counters"]
    beam_read, beam_links = stats["submissions.read"], stats["links.written"]
    print(f"links stage, DirectRunner x{args.workers}: {beam_read:,} submissions -> {beam_links:,} links in "
          f"{beam_s:.1f}s = {beam_read / beam_s:,.0f}/s")
    print(f"ratio (stage / loop throughput): {loop_s / beam_s:.2f}x; same links: {beam_links == links}")
    print(f"peak RSS of the driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
          f"load average: {os.getloadavg()}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if beam_links == links else 1)


if __name__ == "__main__":
    main()
