"""The links stage: Reddit submissions (dump files and/or PRAW) to one row per unique outbound URL, as WebText did."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import logging
import pickle
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Iterable, Iterator

import apache_beam as beam
import zstandard
import pyarrow as pa
from apache_beam.metrics import Metrics

from webtext.crawl.reddit import api, dumps, submissions
from webtext.crawl.reddit.linkrules import LinkRules, judge_submission, merge_link
from webtext.crawl.reddit.urls import UrlFilter
from . import layout, memory, sinks, storage
from .external_sort import ExternalSort
from .stage_options import options_of
from .stage import Stage, StageContext, StageError

log = logging.getLogger(__name__)

NAME = "links"
FILES_NAMESPACE = "links.files"
CHUNK_LINES = 4096  # raw dump lines per element: parsing is spread over workers, Beam's per-element cost is amortised
PROGRESS_LINES = 1_000_000
# reject reasons that stand for an unreadable stretch of a source, not for a submission read
NOT_SUBMISSIONS = frozenset({"truncated-file", "listing-failed"})

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


@dataclass(frozen=True)
class LinksOptions:
    """The links stage's options (flags and [links] keys)."""

    reddit_dumps: tuple[str, ...] = field(default=(), metadata={
        "help": "Pushshift/Arctic Shift submission dumps (globs; .zst .xz .bz2 .gz .ndjson .jsonl)"})
    praw_subreddits: str | None = field(default=None, metadata={
        "help": "subreddits to list through PRAW, comma-separated (e.g. science,news or all)"})
    praw_site: str | None = field(default=None, metadata={
        "help": "praw.ini site with the credentials and endpoints (default: PRAW's own defaults)"})
    praw_listing: str = field(default="top", metadata={"help": "PRAW listing", "choices": api.LISTINGS})
    praw_time_filter: str = field(default="all", metadata={
        "help": "time filter of top/controversial", "choices": api.TIME_FILTERS})
    praw_limit: int = field(default=1000, metadata={"min": 1,
        "help": "submissions per subreddit (Reddit serves about 1,000 at most)"})
    min_karma: int = field(default=3, metadata={"help": "karma a URL needs (see --karma-rule)"})
    karma_rule: str = field(default="max", metadata={
        "help": "max: any one submission has the karma (WebText); sum: summed over submissions (OpenWebText2)",
        "choices": ("max", "sum")})
    after: int | None = field(default=None, metadata={
        "help": "keep submissions created at or after this date (YYYY-MM-DD, UTC)", "type": parse_date})
    before: int | None = field(default=None, metadata={
        "help": "keep submissions created before this date (WebText: 2017-12-01)", "type": parse_date})
    keep_nsfw: bool = field(default=False, metadata={"help": "keep over_18 submissions"})
    blocked_domains: str | None = field(default=None, metadata={"help": "file replacing the shipped blocked-domains list"})
    blocked_extensions: str | None = field(default=None, metadata={
        "help": "file replacing the shipped blocked-extensions list"})
    max_bad_fraction: float = field(default=0.01, metadata={"min": 0, "max": 1,
        "help": "fail when more than this share of a dump file's lines is unreadable (a truncated file: all of it)"})
    max_line_bytes: int = field(default=dumps.MAX_LINE_BYTES, metadata={"min": 1,
        "help": "a dump line longer than this is rejected (bad-json) as it streams by, never held whole"})
    links_shards: int = field(default=8, metadata={"min": 1,
        "help": "links-*.parquet files (each is merged in one worker's memory)"})


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


def dump_files(config: dict) -> list[storage.FileEntry]:
    """Every dump file the globs name; a glob that matches nothing is an error before the pipeline starts."""
    return storage.match_each(config.get("reddit_dumps") or [], "--reddit-dumps")


# -- work files: the payloads (raw lines, parsed submissions, rejects) stay in RUN/links/_work; what crosses a
# shuffle is a Section, a few dozen bytes whatever the corpus's size.

Section = tuple[str, int, int]  # (work file, offset, size) of one zstd-compressed pickled list
SORT_RUN = ExternalSort.LIMIT  # items the per-URL merge and the rejects writer sort in memory before spilling a run to disk


def work_file(work: str, kind: str, source: str, first: int) -> str:
    """The work file of one chunk: named by its source and first line, so a retried bundle writes the same file."""
    tag = hashlib.sha1(source.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return storage.join(work, f"{kind}-{tag}-{first:012d}.zst")


def write_sections(path: str, parts: dict) -> dict:
    """Writes each list of `parts` as one section of the file at `path`; returns the Section of each key."""
    blobs, where, offset = [], {}, 0
    for key, items in sorted(parts.items()):
        blob = pack(items)
        where[key] = (path, offset, len(blob))
        blobs.append(blob)
        offset += len(blob)
    storage.write_bytes(path, b"".join(blobs))
    return where


def read_section(section: Section) -> list:
    path, offset, size = section
    with storage.open_read(path) as handle:
        handle.seek(offset)
        data = handle.read(size)
    if len(data) != size:
        raise StageError(f"{path}: work file cut short ({len(data)} of {size} bytes at offset {offset})")
    return pickle.loads(zstandard.ZstdDecompressor().decompress(data))


def read_sections(sections: Iterable[Section]) -> Iterator:
    """The items of every section, the sections in (file, offset) order."""
    for section in sorted(sections):
        yield from read_section(section)


# -- reading -------------------------------------------------------------------------------------------------------


class ReadDumpChunks(beam.DoFn):
    """One dump file to chunks of raw lines in work files; a truncated or corrupt file ends in a `truncated-file`
    line. Only each chunk's Section leaves the worker."""

    def __init__(self, work: str, max_line_bytes: int = dumps.MAX_LINE_BYTES):
        self.work, self.max_line_bytes = work, max_line_bytes

    def process(self, path: str) -> Iterator[tuple]:
        log.info("reading %s", path)
        lines = next_progress = 0
        with storage.open_read(path) as handle:
            for first, block in dumps.iter_dump_blocks(handle, path, self.max_line_bytes):
                for start in range(0, len(block), CHUNK_LINES):
                    yield path, first + start, spill_chunk(self.work, path, first + start,
                                                           block[start:start + CHUNK_LINES])
                lines = first + len(block) - 1
                if lines >= next_progress:
                    log.info("%s: %s lines read", path, f"{lines:,}")
                    next_progress += PROGRESS_LINES
        log.info("%s: done, %s lines", path, f"{lines:,}")


def spill_chunk(work: str, source: str, first: int, lines: list) -> Section:
    return write_sections(work_file(work, "chunk", source, first), {0: lines})[0]


class FetchPraw(beam.DoFn):
    """One subreddit's listing through PRAW (read-only), as chunks of submission dicts in work files."""

    def __init__(self, config: dict, work: str):
        self.config, self.work = config, work

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
                    yield source, first, spill_chunk(self.work, source, first, chunk)
                    chunk = []
        except api.RedditListingError as error:
            log.warning("%s: %s", source, error)
            if not chunk:
                first = number + 1
            chunk.append(dumps.DumpLine(source, number + 1, None, "listing-failed", f"{source}: {error}"))
        if chunk:
            yield source, first, spill_chunk(self.work, source, first, chunk)


# -- parsing and per-submission rules --------------------------------------------------------------------------------


# shuffled as plain tuples: cheaper to pickle
SUBMISSION_FIELDS = [f.name for f in dataclasses.fields(submissions.Submission)]


def utf8_safe(text: str) -> str:
    """`text` with any lone surrogate (a JSON \\ud800 escape) written out as \\ud800, so that Parquet can hold it."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def pack(batch: list) -> bytes:
    """A list as one compressed pickle: far cheaper to write and read than an object at a time."""
    return zstandard.ZstdCompressor(level=1).compress(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))


@beam.typehints.with_output_types(tuple[int, Section], rejects=tuple[int, Section])
class ParseAndFilter(beam.DoFn):
    """Parses a chunk, applies the per-submission rules and writes the survivors (by links shard) and the rejects
    (by rejects shard) as sections of one work file; the sections go on to the merge and the rejects writer."""

    def __init__(self, config: dict, work: str):
        self.config, self.work = config, work

    def setup(self):
        self.rules = link_rules(self.config)
        self.num_shards = self.config["links_shards"]
        self.read = Metrics.counter(NAME, "submissions.read")
        self.passed = Metrics.counter(NAME, "submissions.passed-rules")
        self.reject_counters = sinks.RejectCounters(NAME)

    def process(self, element: tuple) -> Iterator:
        source, first, chunk = element
        lines = read_section(chunk)
        kept: dict[int, list] = defaultdict(list)
        rejects: dict[int, list] = defaultdict(list)
        reasons: Counter = Counter()
        lines_read = bad = truncated = 0
        first_bad = None

        def drop(reason: str, detail: str, url: str | None, item_id: str) -> None:
            detail, url, item_id = utf8_safe(detail), url and utf8_safe(url), utf8_safe(item_id)
            reasons[reason] += 1
            rejects[sinks.reject_shard(reason, url, item_id)].append((reason, detail, url, item_id))

        for offset, line in enumerate(lines):
            line_no = first + offset
            if isinstance(line, bytes):
                if not line or line.isspace():
                    continue
                line = dumps.parse_dump_line(source, line_no, line)
            if isinstance(line, dumps.DumpLine):
                if line.error is not None:  # bad-json, or a truncated / corrupt stream after the last line
                    lines_read += line.error not in NOT_SUBMISSIONS
                    if line.error == "truncated-file":
                        truncated += 1
                        Metrics.distribution(FILES_NAMESPACE, f"truncated_at:{source}").update(line_no)
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
            kept[sinks.stable_shard(verdict.url_key, self.num_shards)].append(
                (verdict.url_key, *[getattr(submission, name) for name in SUBMISSION_FIELDS]))
        self.read.inc(lines_read)
        self.passed.inc(sum(len(batch) for batch in kept.values()))
        for reason, count in reasons.items():
            self.reject_counters.inc(reason, count)
        if not source.startswith("praw:"):
            Metrics.counter(FILES_NAMESPACE, f"lines:{source}").inc(lines_read)
            Metrics.counter(FILES_NAMESPACE, f"bad:{source}").inc(bad)
            Metrics.counter(FILES_NAMESPACE, f"truncated:{source}").inc(truncated)
            if first_bad is not None:
                Metrics.distribution(FILES_NAMESPACE, f"first_bad:{source}").update(first_bad)
        where = write_sections(work_file(self.work, "parsed", source, first),
                               {**{("kept", k): v for k, v in kept.items()},
                                **{("rejects", k): v for k, v in rejects.items()}})
        for (kind, shard), section in where.items():
            yield (shard, section) if kind == "kept" else beam.pvalue.TaggedOutput("rejects", (shard, section))


# -- merging by URL and writing ---------------------------------------------------------------------------------------


class MergeAndWriteShard(beam.DoFn):
    """The surviving submissions of one links shard: merge per URL, apply the karma rule, write the shard file.

    Streams: the shard's submissions are sorted by URL key in runs of SORT_RUN spilled to local disk, so a worker
    holds one run and the submissions of one URL; its rejects go to work files every SORT_RUN of them."""

    ROWS_PER_TABLE = 16 * 1024

    def __init__(self, config: dict, directory: str, work: str):
        self.config, self.directory, self.work = config, directory, work

    def setup(self):
        self.rules = link_rules(self.config)
        self.written = Metrics.counter(NAME, "links.written")
        self.merged = Metrics.counter(NAME, "submissions.merged")
        self.reject_counters = sinks.RejectCounters(NAME)

    def process(self, element) -> Iterator:
        shard, sections = element
        ordered = ExternalSort(key=itemgetter(0), limit=SORT_RUN)
        ordered.extend(read_sections(sections))
        rejects: dict[int, list] = defaultdict(list)
        flushed: list[tuple[int, Section]] = []
        pending, flushes, merged = 0, 0, 0
        name = sinks.shard_name("links", shard, self.config["links_shards"])

        def link_tables() -> Iterator[pa.Table]:
            nonlocal pending, flushes, merged
            rows: list = []
            for url_key, group in itertools.groupby(ordered.sorted(), key=itemgetter(0)):
                row, dropped = merge_link(url_key, [submissions.Submission(*values) for _, *values in group],
                                          self.rules)
                if row is not None:
                    rows.append(row)
                    merged += row.num_submissions
                for submission, reason, detail in dropped:
                    self.reject_counters.inc(reason)
                    rejects[sinks.reject_shard(reason, submission.url, submission.id)].append(
                        (reason, detail, submission.url, submission.id))
                pending += len(dropped)
                if pending >= SORT_RUN:
                    flushed.extend(self.flush_rejects(rejects, name, flushes))
                    pending, flushes = 0, flushes + 1
                if len(rows) >= self.ROWS_PER_TABLE:
                    yield self.table(rows)
                    rows = []
            if rows:
                yield self.table(rows)

        written = storage.write_parquet_stream(storage.join(self.directory, name), layout.LINKS_SCHEMA, link_tables())
        self.written.inc(written)
        self.merged.inc(merged)
        flushed.extend(self.flush_rejects(rejects, name, flushes))
        yield from flushed
        memory.release()

    def flush_rejects(self, rejects: dict[int, list], name: str, flush: int) -> list[tuple[int, Section]]:
        if not rejects:
            return []
        path = storage.join(self.work, f"merged-{name.removesuffix('.parquet')}-{flush:05d}.zst")
        where = write_sections(path, rejects)
        rejects.clear()
        return sorted(where.items())

    @staticmethod
    def table(rows: list) -> pa.Table:
        return pa.table([[getattr(row, name) for row in rows] for name in layout.LINKS_SCHEMA.names],
                        schema=layout.LINKS_SCHEMA)


def write_rejects(shard: int, sections: Iterable[Section], directory: str = "") -> str:
    """One rejects file from the sections of its rejects, sorted in runs spilled to local disk."""
    path = sinks.write_reject_shard(directory, NAME, shard, read_sections(sections), SORT_RUN)
    memory.release()
    return path


def build_pipeline(p: beam.Pipeline, ctx: StageContext, files: list[str], subreddits: list[str]) -> None:
    config, work = ctx.config, ctx.run.path(layout.LINKS_WORK)
    sources = []
    if files:
        sources.append(p | "DumpFiles" >> beam.Create(files) | "SpreadFiles" >> beam.Reshuffle()
                       | "ReadDumps" >> beam.ParDo(ReadDumpChunks(work, config["max_line_bytes"])))
    if subreddits:
        sources.append(p | "Subreddits" >> beam.Create(subreddits) | "SpreadSubreddits" >> beam.Reshuffle()
                       | "ListPraw" >> beam.ParDo(FetchPraw(config, work)))
    chunks = sources | "AllSources" >> beam.Flatten() | "SpreadChunks" >> beam.Reshuffle()
    parsed = chunks | "ParseAndFilter" >> beam.ParDo(ParseAndFilter(config, work)).with_outputs("rejects", main="kept")
    merge_rejects = (parsed.kept
                     | "GroupByLinksShard" >> beam.GroupByKey()
                     | "MergeAndWrite" >> beam.ParDo(MergeAndWriteShard(config, ctx.run.path(layout.LINKS), work)))
    ((parsed.rejects, merge_rejects)
     | "AllRejects" >> beam.Flatten().with_output_types(tuple[int, Section])
     | "GroupByRejectShard" >> beam.GroupByKey()
     | "WriteRejects" >> beam.MapTuple(write_rejects, directory=ctx.run.rejects(NAME)))


def file_metrics(result) -> dict[str, dict[str, int]]:
    """Per dump file: `lines` (submission lines), `bad` (rejected unread), `truncated` (0 or 1), and the line
    numbers `first_bad` and `truncated_at`, from the counters ParseAndFilter keeps."""
    by_file: dict[str, dict[str, int]] = defaultdict(dict)
    metrics = result.metrics().query()
    for metric in metrics["counters"]:
        if metric.key.metric.namespace == FILES_NAMESPACE:
            kind, _, source = metric.key.metric.name.partition(":")
            value = metric.committed if metric.committed is not None else metric.attempted
            by_file[source][kind] = int(value or 0)
    for metric in metrics["distributions"]:
        if metric.key.metric.namespace == FILES_NAMESPACE:
            kind, _, source = metric.key.metric.name.partition(":")
            value = metric.committed if metric.committed is not None else metric.attempted
            by_file[source][kind] = value.min
    return by_file


def check_dump_files(result, files: list[storage.FileEntry], max_bad_fraction: float) -> None:
    """Each dump file must have been readable: a file with no readable line fails the stage, as does one past
    --max-bad-fraction; a truncated or corrupt file counts as wholly unreadable, its unread rest being unknown."""
    by_file = file_metrics(result)
    for entry in files:
        path, found = entry.path, by_file.get(entry.path, {})
        total, wrong, truncated = found.get("lines", 0), found.get("bad", 0), found.get("truncated", 0)
        readable = total - (wrong - truncated)
        if readable == 0:
            if not wrong:
                if entry.size:  # an empty file was named before the pipeline
                    log.warning("%s: no lines in this dump", path)
                continue
            raise StageError(f"{path}: no readable line: {describe_damage(found, total)} — see rejects/links; "
                             f"is it a dump of the kind its name says?")
        if truncated and max_bad_fraction < 1:
            raise StageError(f"{path}: {describe_damage(found, total)}; what follows is unknown, so the file counts as "
                             f"unreadable (--max-bad-fraction {max_bad_fraction:.2%}); --max-bad-fraction 1 keeps "
                             f"the {readable:,} lines read — see rejects/links")
        if total and wrong / total > max_bad_fraction:
            raise StageError(f"{path}: {wrong:,} of {total:,} lines unreadable ({wrong / total:.2%} > --max-bad-fraction "
                             f"{max_bad_fraction:.2%}); the first bad one is line {found.get('first_bad')} — see "
                             f"rejects/links for each")


def describe_damage(found: dict[str, int], total: int) -> str:
    bad_json = found.get("bad", 0) - found.get("truncated", 0)
    parts = [f"{bad_json:,} of {total:,} lines are not JSON objects"] if bad_json else []
    if found.get("truncated_at") == 1:
        parts.append("the stream is corrupt or cut before its first line")
    elif found.get("truncated"):
        parts.append(f"the stream is truncated or corrupt after line {found['truncated_at'] - 1:,}")
    return ", and ".join(parts)


def execute(ctx: StageContext) -> None:
    config = ctx.config
    entries = dump_files(config)
    for entry in entries:
        if entry.size == 0:
            log.warning("%s: empty dump file (0 bytes)", entry.path)
    files = [entry.path for entry in entries]
    subreddits = [s.strip() for s in (config.get("praw_subreddits") or "").split(",") if s.strip()]
    if not files and not subreddits:
        raise StageError("links: give --reddit-dumps GLOB… and/or --praw-subreddits NAME,…")
    if config["links_shards"] < 1:
        raise StageError("--links-shards must be at least 1")
    if config["max_line_bytes"] < 1:
        raise StageError("--max-line-bytes must be at least 1")
    link_rules(config)  # a bad blocklist path fails here, before the pipeline
    if subreddits:
        site = config.get("praw_site")
        try:
            api.check_reddit_auth(api.make_reddit(site), site)
        except api.RedditAuthError as error:
            raise StageError(str(error)) from None
    ctx.run.clear(layout.LINKS_WORK)  # what a failed run left
    result = ctx.run_pipeline(lambda p: build_pipeline(p, ctx, files, subreddits))
    ctx.run.clear(layout.LINKS_WORK)
    storage.delete([ctx.run.path(layout.LINKS_WORK)])
    sinks.fill_empty_shards(ctx.run.path(layout.LINKS), "links", layout.LINKS_SCHEMA, config["links_shards"])
    check_dump_files(result, entries, config["max_bad_fraction"])
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
    options=options_of(LinksOptions),
    execute=execute,
    external_inputs=lambda run, config: dump_files(config),
    outputs=[layout.LINKS],
)
