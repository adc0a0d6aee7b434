"""The links stage: Reddit submissions (dump files and/or PRAW) to one row per unique outbound URL, as WebText did."""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import pickle
import zlib
from collections import Counter, defaultdict
from typing import Iterable, Iterator

import apache_beam as beam
import zstandard
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from webtext.crawl.reddit import api, dumps, submissions
from webtext.crawl.reddit.linkrules import LinkRules, judge_submission, merge_link
from webtext.crawl.reddit.urls import UrlFilter
from webtext.pipeline import beamio, rundir
from webtext.pipeline.stage import Option, Stage, StageContext, StageError

log = logging.getLogger(__name__)

NAME = "links"
FILES_NAMESPACE = "links.files"
CHUNK_LINES = 4096  # raw dump lines per element: parsing is spread over workers, Beam's per-element cost is amortised
PROGRESS_LINES = 1_000_000
# reject reasons that stand for an unreadable stretch of a source, not for a submission read
NOT_SUBMISSIONS = frozenset({"truncated-file", "listing-failed"})

LINKS_SCHEMA = pa.schema([
    ("url", pa.string()),
    ("url_key", pa.string()),
    ("domain", pa.string()),
    ("score", pa.int64()),
    ("score_sum", pa.int64()),
    ("num_submissions", pa.int64()),
    ("created_utc", pa.int64()),
    ("subreddits", pa.list_(pa.string())),
    ("submission_ids", pa.list_(pa.string())),
    ("title", pa.string()),
])


def parse_date(text: str) -> int:
    """YYYY-MM-DD (UTC midnight) or an ISO timestamp or epoch seconds, as epoch seconds."""
    text = str(text).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a date (YYYY-MM-DD): {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp())


OPTIONS = [
    Option("--reddit-dumps", "Pushshift/Arctic Shift submission dumps (globs; .zst .xz .bz2 .gz .ndjson .jsonl)", multiple=True),
    Option("--praw-subreddits", "subreddits to list through PRAW, comma-separated (e.g. science,news or all)"),
    Option("--praw-site", "praw.ini site with the credentials and endpoints (default: PRAW's own defaults)"),
    Option("--praw-listing", "PRAW listing", default="top", choices=["top", "new", "hot", "controversial"]),
    Option("--praw-time-filter", "time filter of top/controversial", default="all",
           choices=["all", "year", "month", "week", "day", "hour"]),
    Option("--praw-limit", "submissions per subreddit (Reddit serves about 1,000 at most)", type=int, default=1000),
    Option("--min-karma", "karma a URL needs (see --karma-rule)", type=int, default=3),
    Option("--karma-rule", "max: any one submission has the karma (WebText); sum: summed over submissions (OpenWebText2)",
           default="max", choices=["max", "sum"]),
    Option("--after", "keep submissions created at or after this date (YYYY-MM-DD, UTC)", type=parse_date),
    Option("--before", "keep submissions created before this date (WebText: 2017-12-01)", type=parse_date),
    Option("--keep-nsfw", "keep over_18 submissions", switch=True),
    Option("--blocked-domains", "file replacing the shipped blocked-domains list"),
    Option("--blocked-extensions", "file replacing the shipped blocked-extensions list"),
    Option("--max-bad-fraction", "fail when more than this share of a dump file's lines is unreadable", type=float, default=0.01),
    Option("--num-shards", "links-*.parquet files (each is merged in one worker's memory)", type=int, default=8),
]


def link_rules(config: dict) -> LinkRules:
    if config.get("blocked_domains") or config.get("blocked_extensions"):
        try:
            url_filter = UrlFilter.from_files(config.get("blocked_domains"), config.get("blocked_extensions"))
        except OSError as error:
            raise StageError(f"cannot read a blocklist: {error}") from None
    else:
        url_filter = UrlFilter.default()
    try:
        return LinkRules(min_karma=config["min_karma"], karma_rule=config["karma_rule"], after=config.get("after"),
                         before=config.get("before"), keep_nsfw=config["keep_nsfw"], url_filter=url_filter)
    except ValueError as error:
        raise StageError(f"links: {error}") from None


def dump_files(config: dict) -> list[rundir.FileEntry]:
    """Every dump file the globs name; a glob that matches nothing is an error before the pipeline starts."""
    files: list[rundir.FileEntry] = []
    for pattern in config.get("reddit_dumps") or []:
        matched = rundir.match(pattern)
        if not matched:
            raise StageError(f"--reddit-dumps: no file matches {pattern!r}")
        files.extend(matched)
    return sorted({f.path: f for f in files}.values(), key=lambda f: f.path)


# -- reading -------------------------------------------------------------------------------------------------------


class ReadDumpChunks(beam.DoFn):
    """One dump file to chunks of raw lines; a truncated or corrupt file ends in a `truncated-file` line."""

    def process(self, path: str) -> Iterator[tuple]:
        log.info("reading %s", path)
        lines = next_progress = 0
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            for first, block in dumps.iter_dump_blocks(handle, path):
                for start in range(0, len(block), CHUNK_LINES):
                    yield path, first + start, join_lines(block[start:start + CHUNK_LINES])
                lines = first + len(block) - 1
                if lines >= next_progress:
                    log.info("%s: %s lines read", path, f"{lines:,}")
                    next_progress += PROGRESS_LINES
        log.info("%s: done, %s lines", path, f"{lines:,}")


class FetchPraw(beam.DoFn):
    """One subreddit's listing through PRAW (read-only), as chunks of submission dicts."""

    def __init__(self, config: dict):
        self.config = config

    def process(self, subreddit: str) -> Iterator[tuple]:
        client = api.make_reddit(self.config.get("praw_site"))
        source = f"praw:r/{subreddit}/{self.config['praw_listing']}"
        chunk, first, number = [], 1, 0
        listing = api.iter_praw_submissions(client, subreddit, self.config["praw_listing"],
                                               self.config["praw_time_filter"], self.config["praw_limit"])
        try:
            for number, submission in enumerate(listing, start=1):
                if not chunk:
                    first = number
                chunk.append(submission)
                if len(chunk) >= CHUNK_LINES:
                    yield source, first, chunk
                    chunk = []
        except api.RedditListingError as error:
            log.warning("%s: %s", source, error)
            if not chunk:
                first = number + 1
            chunk.append(dumps.DumpLine(source, number + 1, None, "listing-failed", f"{source}: {error}"))
        if chunk:
            yield source, first, chunk


# -- parsing and per-submission rules --------------------------------------------------------------------------------


# shuffled as plain tuples: cheaper to pickle
SUBMISSION_FIELDS = [f.name for f in dataclasses.fields(submissions.Submission)]


def join_lines(lines: list) -> bytes | list:
    """Raw lines cross the shuffle as one zstd-compressed bytes object (far cheaper to move than thousands of
    objects, or than the raw text); a chunk holding an unreadable stretch stays a list."""
    if all(type(line) is bytes for line in lines):
        return zstandard.ZstdCompressor(level=1).compress(b"\n".join(lines))
    return lines


def split_lines(payload: bytes | list) -> list:
    if isinstance(payload, bytes):
        return zstandard.ZstdDecompressor().decompress(payload).split(b"\n")
    return payload


def reject_shard(item_id: str) -> int:
    return zlib.crc32(item_id.encode("utf-8", "surrogatepass")) % beamio.REJECT_SHARDS


def pack(batch: list) -> bytes:
    """A batch crosses the shuffle as one compressed pickle: Beam's default coder would pickle each object on its own."""
    return zstandard.ZstdCompressor(level=1).compress(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))


def unpack(batches: Iterable[bytes]) -> Iterator:
    decompressor = zstandard.ZstdDecompressor()
    for batch in batches:
        yield from pickle.loads(decompressor.decompress(batch))


@beam.typehints.with_output_types(tuple[int, bytes], rejects=tuple[int, bytes])
class ParseAndFilter(beam.DoFn):
    """Parses a chunk, applies the per-submission rules and sends survivors, batched by links shard, to the merge."""

    def __init__(self, config: dict):
        self.config = config

    def setup(self):
        self.rules = link_rules(self.config)
        self.num_shards = self.config["num_shards"]
        self.read = Metrics.counter(NAME, "submissions.read")
        self.passed = Metrics.counter(NAME, "submissions.passed-rules")
        self.reject_counters: dict[str, object] = {}

    def _count_rejects(self, reasons: Counter) -> None:
        for reason, count in reasons.items():
            if reason not in self.reject_counters:
                self.reject_counters[reason] = Metrics.counter(NAME, f"reject.{reason}")
            self.reject_counters[reason].inc(count)

    def process(self, element: tuple) -> Iterator:
        source, first, payload = element
        lines = split_lines(payload)
        kept: dict[int, list] = defaultdict(list)
        rejects: dict[int, list] = defaultdict(list)
        reasons: Counter = Counter()
        lines_read = bad = 0
        first_bad = None

        def drop(reason: str, detail: str, url: str | None, item_id: str) -> None:
            reasons[reason] += 1
            rejects[reject_shard(item_id)].append((reason, detail, url, item_id))

        for offset, line in enumerate(lines):
            line_no = first + offset
            if isinstance(line, bytes):
                if not line or line.isspace():
                    continue
                line = dumps.parse_dump_line(source, line_no, line)
            if isinstance(line, dumps.DumpLine):
                if line.error is not None:  # bad-json, or a truncated / corrupt stream after the last line
                    lines_read += line.error not in NOT_SUBMISSIONS
                    drop(line.error, line.detail, None, f"{source}:{line_no}")
                    bad += 1
                    first_bad = first_bad or line_no
                    continue
                line = line.record
            lines_read += 1
            try:
                submission = submissions.parse_submission(line)
            except submissions.BadSubmission as error:
                url = line.get("url")
                drop(error.reason, f"{source}:{line_no}: {error.detail}", url if isinstance(url, str) else None,
                     str(line.get("id") or f"{source}:{line_no}"))
                continue
            verdict = judge_submission(submission, self.rules)
            if verdict.reason is not None:
                drop(verdict.reason, verdict.detail, submission.url, submission.id)
                continue
            kept[beamio.stable_shard(verdict.url_key, self.num_shards)].append(
                (verdict.url_key, *[getattr(submission, name) for name in SUBMISSION_FIELDS]))
        self.read.inc(lines_read)
        self.passed.inc(sum(len(batch) for batch in kept.values()))
        self._count_rejects(reasons)
        if not source.startswith("praw:"):
            Metrics.counter(FILES_NAMESPACE, f"lines:{source}").inc(lines_read)
            Metrics.counter(FILES_NAMESPACE, f"bad:{source}").inc(bad)
            if first_bad is not None:
                Metrics.distribution(FILES_NAMESPACE, f"first_bad:{source}").update(first_bad)
        for shard, batch in sorted(kept.items()):
            yield shard, pack(batch)
        for shard, batch in sorted(rejects.items()):
            yield beam.pvalue.TaggedOutput("rejects", (shard, pack(batch)))


# -- merging by URL and writing ---------------------------------------------------------------------------------------


class MergeAndWriteShard(beam.DoFn):
    """All surviving submissions of one links shard: merge per URL, apply the karma rule, write the shard file."""

    def __init__(self, config: dict, directory: str):
        self.config, self.directory = config, directory

    def setup(self):
        self.rules = link_rules(self.config)
        self.written = Metrics.counter(NAME, "links.written")
        self.merged = Metrics.counter(NAME, "submissions.merged")
        self.reject_counters: dict[str, object] = {}

    def process(self, element) -> Iterator:
        shard, batches = element
        by_url: dict[str, list] = defaultdict(list)
        for url_key, *values in unpack(batches):
            by_url[url_key].append(submissions.Submission(*values))
        rows: list = []
        rejects: dict[int, list] = defaultdict(list)
        for url_key in sorted(by_url):
            row, dropped = merge_link(url_key, by_url[url_key], self.rules)
            if row is not None:
                rows.append(row)
            for submission, reason, detail in dropped:
                if reason not in self.reject_counters:
                    self.reject_counters[reason] = Metrics.counter(NAME, f"reject.{reason}")
                self.reject_counters[reason].inc()
                rejects[reject_shard(submission.id)].append((reason, detail, submission.url, submission.id))
        self.written.inc(len(rows))
        self.merged.inc(sum(row.num_submissions for row in rows))
        path = rundir.join(self.directory, beamio.shard_name("links", shard, self.config["num_shards"]))
        columns = [[getattr(row, name) for row in rows] for name in LINKS_SCHEMA.names]
        beamio.write_parquet_table(path, pa.table(columns, schema=LINKS_SCHEMA))
        for shard_index, batch in sorted(rejects.items()):
            yield shard_index, pack(batch)


class WriteRejectShard(beam.DoFn):
    """One rejects shard, sorted by reason, URL and id; rows travel as (reason, detail, url, item_id) tuples."""

    def __init__(self, directory: str):
        self.directory = directory

    def process(self, element) -> Iterator[str]:
        shard, batches = element
        rows = sorted(unpack(batches), key=lambda r: (r[0], r[2] or "", r[3] or "", r[1] or ""))
        reasons, details, urls, item_ids = (list(column) for column in zip(*rows)) if rows else ([], [], [], [])
        table = pa.table([[NAME] * len(rows), reasons, details, urls, item_ids], schema=beamio.REJECT_SCHEMA)
        path = rundir.join(self.directory, beamio.shard_name("rejects", shard, beamio.REJECT_SHARDS))
        beamio.write_parquet_table(path, table)
        yield path


def build_pipeline(p: beam.Pipeline, ctx: StageContext, files: list[str], subreddits: list[str]) -> None:
    config = ctx.config
    sources = []
    if files:
        sources.append(p | "DumpFiles" >> beam.Create(files) | "SpreadFiles" >> beam.Reshuffle()
                       | "ReadDumps" >> beam.ParDo(ReadDumpChunks()))
    if subreddits:
        sources.append(p | "Subreddits" >> beam.Create(subreddits) | "SpreadSubreddits" >> beam.Reshuffle()
                       | "ListPraw" >> beam.ParDo(FetchPraw(config)))
    chunks = sources | "AllSources" >> beam.Flatten() | "SpreadChunks" >> beam.Reshuffle()
    parsed = chunks | "ParseAndFilter" >> beam.ParDo(ParseAndFilter(config)).with_outputs("rejects", main="kept")
    merge_rejects = (parsed.kept
                     | "GroupByLinksShard" >> beam.GroupByKey()
                     | "MergeAndWrite" >> beam.ParDo(MergeAndWriteShard(config, ctx.run.path(NAME))))
    ((parsed.rejects, merge_rejects)
     | "AllRejects" >> beam.Flatten().with_output_types(tuple[int, bytes])
     | "GroupByRejectShard" >> beam.GroupByKey()
     | "WriteRejects" >> beam.ParDo(WriteRejectShard(ctx.run.path("rejects", NAME))))


def check_bad_fractions(result, files: list[str], max_bad_fraction: float) -> None:
    """Past --max-bad-fraction a dump file fails the stage, naming the file and its first bad line."""
    lines, bad, first_bad = {}, {}, {}
    metrics = result.metrics().query()
    for metric in metrics["counters"]:
        if metric.key.metric.namespace == FILES_NAMESPACE:
            kind, _, source = metric.key.metric.name.partition(":")
            value = metric.committed if metric.committed is not None else metric.attempted
            (lines if kind == "lines" else bad)[source] = int(value or 0)
    for metric in metrics["distributions"]:
        if metric.key.metric.namespace == FILES_NAMESPACE:
            value = metric.committed if metric.committed is not None else metric.attempted
            first_bad[metric.key.metric.name.partition(":")[2]] = value.min
    for path in files:
        total, wrong = lines.get(path, 0), bad.get(path, 0)
        if total and wrong / total > max_bad_fraction:
            raise StageError(f"{path}: {wrong:,} of {total:,} lines unreadable ({wrong / total:.2%} > --max-bad-fraction "
                             f"{max_bad_fraction:.2%}); the first bad one is line {first_bad.get(path)} — see "
                             f"rejects/links for each")


def execute(ctx: StageContext) -> None:
    config = ctx.config
    files = [f.path for f in dump_files(config)]
    subreddits = [s.strip() for s in (config.get("praw_subreddits") or "").split(",") if s.strip()]
    if not files and not subreddits:
        raise StageError("links: give --reddit-dumps GLOB… and/or --praw-subreddits NAME,…")
    if config["num_shards"] < 1:
        raise StageError("--num-shards must be at least 1")
    link_rules(config)  # a bad blocklist path fails here, before the pipeline
    if subreddits:
        site = config.get("praw_site")
        try:
            api.check_reddit_auth(api.make_reddit(site), site)
        except api.RedditAuthError as error:
            raise StageError(str(error)) from None
    result = ctx.run_pipeline(lambda p: build_pipeline(p, ctx, files, subreddits))
    beamio.fill_empty_shards(ctx.run.path(NAME), NAME, LINKS_SCHEMA, config["num_shards"])
    check_bad_fractions(result, files, config["max_bad_fraction"])
    check_accounting(ctx.counters)


def check_accounting(counters: dict[str, int]) -> None:
    """Every submission read is merged into a link row or rejected under exactly one reason."""
    read = counters.get("submissions.read", 0)
    rejected = sum(v for k, v in counters.items()
                   if k.startswith("reject.") and k.removeprefix("reject.") not in NOT_SUBMISSIONS)
    if read != counters.get("submissions.merged", 0) + rejected:
        raise RuntimeError(f"links: accounting broken: {read} submissions read, {counters.get('submissions.merged', 0)} "
                           f"merged, {rejected} rejected")


STAGE = Stage(
    name=NAME,
    help="Reddit submissions (dumps and/or PRAW) to one row per unique outbound URL with enough karma",
    options=OPTIONS,
    execute=execute,
    external_inputs=lambda run, config: dump_files(config),
    outputs=[NAME],
)
