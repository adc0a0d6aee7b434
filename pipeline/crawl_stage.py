"""The crawl stage: RUN/links to RUN/crawl/warc (responses), RUN/crawl/fetch-log (one row per link) and RUN/docs.

As it goes, each worker counts every finished link in RUN/crawl/journal, after the WARC records that the row names:
a rerun of a killed crawl takes those links' outcomes from there and fetches only the others (--restart: all).

Links are grouped by host, so one worker fetches a host, one request at a time with the delay between; each worker
crawls many hosts at once in threads. A redirect to another host is not followed there: the link goes on in a further
round, grouped by the target host like the first (up to --max-redirects rounds), so every request to a host comes from
the one worker that holds the host in that round. `--from-warc` replays archived responses instead of the network.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Iterator
from urllib.parse import urljoin

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from webtext.crawl.extract import quality
from webtext.crawl.extract.pages import ExtractConfig, Page, PageResult
from webtext.crawl.extract.sandbox import ExtractionSandbox, InlineExtractor
from webtext.crawl.fetch.config import FetchConfig
from webtext.crawl.fetch.fetcher import Fetcher
from webtext.crawl.fetch.host_links import crawl_host, finished_item, item_link, redirect_item
from webtext.crawl.fetch.journal import CrawlArchive, read_journal
from webtext.crawl.fetch.outcomes import FetchFailure, FetchResult
from webtext.crawl.fetch.politeness import HostDone, HostPool, host_key
from webtext.crawl.fetch.responses import REDIRECT_STATUSES, follow_redirect, page_outcome
from webtext.crawl.fetch.warc import HttpExchange, iter_responses, read_response_at
from webtext.crawl.reddit.urls import InvalidUrl, normalize_url, url_domain
from webtext.pipeline import layout, sinks, storage
from webtext.pipeline.stage_options import Option, config_from, options_of
from webtext.pipeline.progress import Progress
from webtext.pipeline.stage import Stage, StageContext, StageError

log = logging.getLogger(__name__)

NAME = "crawl"


@dataclass(frozen=True)
class CrawlOptions:
    """The crawl stage's own options; those of fetching, extraction and the quality rules are their configs' fields."""

    hosts_in_flight: int = field(default=256, metadata={"min": 1, "help": "hosts each worker crawls at once (one thread each)"})
    max_pages_per_host: int = field(default=0, metadata={"min": 0,
        "help": "links fetched per host, the rest rejected host-cap (0: all)"})
    max_host_failures: int = field(default=5, metadata={"min": 0,
        "help": "network failures in a row after which a host's other links are rejected host-unreachable (0: never)"})
    warc_max_bytes: int = field(default=1_000_000_000, metadata={
        "min": 1, "help": "start a new WARC file after this many bytes"})
    warc_max_seconds: float = field(default=60.0, metadata={
        "min": 0, "help": "close a worker's WARC and journal files after this many seconds (0: only by size and at the "
                          "end); on gs://, where files appear once closed, a killed crawl fetches again at most this "
                          "much work"})
    from_warc: tuple[str, ...] = field(default=(), metadata={
        "help": "replay responses from these WARC files (globs) instead of fetching"})
    restart: bool = field(default=False, metadata={
        "help": "fetch every link again: delete RUN/crawl/warc and RUN/crawl/journal; without it a rerun (after a "
                "kill, or with --force) reuses every link an earlier run finished, redoing only extraction and "
                "filters"})
    extract_timeout: float = field(default=30.0, metadata={"min": 0,
        "help": "seconds per page in the extraction sandbox (0: no sandbox, no limit)"})
    extract_memory_mb: int = field(default=2048, metadata={"min": 0,
        "help": "address-space limit of the extraction process, so a page that needs too much memory is a reject, "
                "not a killed worker (0: none)"})
    docs_shards: int = field(default=8, metadata={"min": 1, "help": "docs-*.parquet files"})
    fetch_log_shards: int = field(default=4, metadata={"min": 1, "help": "fetch-log-*.parquet files"})


def crawl_options() -> list[Option]:
    """The flags and [crawl] keys: fetching, extraction and quality-rule settings, then the stage's own."""
    return [*options_of(FetchConfig), *options_of(ExtractConfig), *options_of(quality.QualityConfig),
            *options_of(CrawlOptions)]


# -- configuration ---------------------------------------------------------------------------------------------------

def fetch_config(config: dict) -> FetchConfig:
    return config_from(FetchConfig, config)


def extract_config(config: dict) -> ExtractConfig:
    return config_from(ExtractConfig, {**config, "quality": config_from(quality.QualityConfig, config)})


def doc_id(url_key: str) -> str:
    """A stable document id: 128 bits of BLAKE2b of the link's url_key."""
    return hashlib.blake2b(url_key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


# -- records ---------------------------------------------------------------------------------------------------------

def log_row(link: dict, result: FetchResult) -> dict:
    return {
        "url": link["url"], "url_key": link.get("url_key"), "final_url": result.final_url,
        "outcome": "page" if result.ok else "rejected", "status": result.status, "bytes": result.bytes_received,
        "elapsed": round(result.elapsed, 4), "attempts": result.attempts, "redirects": result.redirects,
        "reason": result.reason, "detail": result.detail or None, "warc_file": result.warc_file,
        "warc_offset": result.warc_offset, "fetched_at": int(result.fetched_at) if result.fetched_at else None,
    }


def page_record(link: dict, result: FetchResult) -> dict:
    """What extraction needs: the link row and the fetched body."""
    return {"link": link, "final_url": result.final_url or link["url"], "content_type": result.content_type,
            "body": result.body, "fetched_at": int(result.fetched_at), "warc_file": result.warc_file,
            "warc_offset": result.warc_offset}


def link_reject(link: dict, reason: str, detail: str) -> dict:
    return layout.reject(NAME, reason, detail, url=link["url"], item_id=link.get("url_key"))


def _int(value) -> int:
    return int(value) if value is not None else 0


def doc_row(page: dict, result: PageResult) -> dict:
    link = page["link"]
    url_key = link.get("url_key") or link["url"]
    return {
        "doc_id": doc_id(url_key), "url": link["url"], "url_key": url_key, "final_url": page["final_url"],
        "domain": link.get("domain") or url_domain(url_key), "title": result.title, "date": result.date,
        "text": result.text, "language": result.language, "language_score": round(result.language_score, 4),
        "score": _int(link.get("score")), "score_sum": _int(link.get("score_sum")),
        "num_submissions": _int(link.get("num_submissions")), "created_utc": _int(link.get("created_utc")),
        "subreddits": list(link.get("subreddits") or []), "submission_ids": list(link.get("submission_ids") or []),
        "reddit_title": link.get("title"), "fetched_at": page["fetched_at"], "n_words": result.n_words,
        "charset": result.charset, "warc_file": page["warc_file"], "warc_offset": page["warc_offset"],
    }


# -- fetching from the network ---------------------------------------------------------------------------------------

def _global(value):
    return GlobalWindows.windowed_value(value)


HOST_STATE = "host_state"  # the key of a host's state among a round's items (the others are links)


@beam.typehints.with_output_types(dict, log=dict, rejects=dict, redirects=tuple[str, dict], hosts=tuple[str, dict])
class FetchHosts(beam.DoFn):
    """(host, items) to fetched pages (main), fetch-log rows (`log`), rejects (`rejects`) and, for the next round,
    links redirected to another host (`redirects`, keyed by the target host) and the state of every host crawled
    (`hosts`: its politeness clock, robots.txt verdicts and Crawl-delay, for whichever worker holds it next).

    Round 0 gets the links of a host; round n > 0 gets the links that round n - 1 redirected to the host, with the
    host's state if an earlier round crawled it. Only redirects within the host are followed here, so all requests
    to a host in a round come from this worker. Each host runs in a thread of a pool shared by the bundle, so many
    hosts are crawled at once; a host's links are fetched one after another. Results are emitted as they arrive,
    the rest when the bundle finishes."""

    def __init__(self, config: FetchConfig, warc_dir: str, journal_dir: str, warc_max_bytes: int,
                 warc_max_seconds: float, hosts_in_flight: int, max_pages: int, max_failures: int, round_index: int = 0,
                 last_round: bool = True):
        self.config, self.warc_dir, self.journal_dir = config, warc_dir, journal_dir
        self.warc_max_bytes, self.warc_max_seconds = warc_max_bytes, warc_max_seconds
        self.hosts_in_flight, self.max_pages, self.max_failures = hosts_in_flight, max_pages, max_failures
        self.round_index, self.last_round = round_index, last_round
        self.links_read = Metrics.counter(NAME, "links.read")
        self.hosts = Metrics.counter(NAME, "hosts")
        self.pages = Metrics.counter(NAME, "pages.fetched")
        self.received = Metrics.counter(NAME, "bytes.received")
        self.attempts = Metrics.counter(NAME, "fetch.attempts")
        self.redirects = Metrics.counter(NAME, "fetch.redirects")
        self.handed_on = Metrics.counter(NAME, "fetch.redirects-to-other-hosts")
        self.resumed = Metrics.counter(NAME, "links.resumed")

    def setup(self) -> None:
        # Replaced per bundle by the bundle's thread while no host thread runs (finish_bundle drained the pool);
        # host threads write through it (CrawlArchive locks itself).
        self.writer: CrawlArchive | None = None
        self.fetcher = Fetcher(self.config, archive=self._archive)  # shared by the host threads: thread-safe
        self.pool = HostPool(self._crawl_host, max_hosts=self.hosts_in_flight)
        # The bundle's thread only (process, finish_bundle): host threads reach it through the pool's queue.
        self.unfinished: dict[str, dict[int, dict]] = {}
        self.progress = Progress(log, f"crawl: fetch round {self.round_index} (this worker)")

    def start_bundle(self) -> None:
        if self.writer is not None:  # a bundle that failed before finish_bundle left its file open
            self.writer.close()
        prefix = f"webtext-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:10]}"
        self.writer = CrawlArchive(self.warc_dir, self.journal_dir, prefix, self.warc_max_bytes, self.warc_max_seconds,
                                   open_file=storage.open_warc_write)

    def _archive(self, exchange: HttpExchange) -> tuple[str, int]:
        assert self.writer is not None
        return self.writer.archive(exchange)

    def _crawl_host(self, host: str, items: list[dict]) -> Iterator[tuple[str, dict, FetchResult]]:
        max_pages = self.max_pages if self.round_index == 0 else 0  # the cap counts a host's own links
        for link, result in crawl_host(self.fetcher, items, max_pages, self.max_failures, stay_on_host=True,
                                       recover=self._recover):
            if not result.pending and not result.recovered:
                assert self.writer is not None
                self.writer.record(log_row(link, result))  # finished: its records are written, so it counts
            yield host, link, result

    def _recover(self, link: dict, row: dict) -> FetchResult | None:
        """An earlier run's outcome of a link from its journal row (and a page's body from the WARC record the row
        names); None, so it is fetched again, when that record cannot be read."""
        return recovered_result(link, row, self.config)

    def process(self, element: tuple[str, Iterable[dict]]):
        host, items = element
        work = []
        for item in items:
            if HOST_STATE in item:
                self.fetcher.restore_host(host, item[HOST_STATE])
            else:
                work.append(item)
        if not work:  # nothing for this host in this round: its state waits for a later one
            if not self.last_round:
                yield TaggedOutput("hosts", (host, {HOST_STATE: self.fetcher.host_state(host)}))
            return
        if self.round_index == 0:
            self.links_read.inc(len(work))
            self.hosts.inc()
        self.unfinished[host] = {id(item_link(item)): item_link(item) for item in work}
        for output in self.pool.submit(host, work):
            yield from self._outputs(output)
        for output in self.pool.ready():
            yield from self._outputs(output)

    def finish_bundle(self):
        for item in self.pool.drain():
            for output in self._outputs(item):
                yield TaggedOutput(output.tag, _global(output.value)) if isinstance(output, TaggedOutput) \
                    else _global(output)
        if self.writer is not None:
            self.writer.close()

    def teardown(self) -> None:
        self.pool.close()
        self.fetcher.close()

    def _outputs(self, item) -> Iterator:
        if isinstance(item, HostDone):
            for link in self.unfinished.pop(item.host, {}).values():  # only after a crash inside the host's thread
                yield TaggedOutput("rejects", link_reject(link, "fetch-error", item.error or "host thread ended early"))
            if not self.last_round:
                yield TaggedOutput("hosts", (item.host, {HOST_STATE: self.fetcher.host_state(item.host)}))
            return
        host, link, result = item
        self.unfinished.get(host, {}).pop(id(link), None)
        if result.pending and self.last_round:  # cannot happen: the last round's hop is the last one allowed
            result.redirect_to, result.reason = None, "too-many-redirects"
            result.detail = f"more than {self.config.max_redirects} redirects"
        if result.pending:
            self.handed_on.inc()
            yield TaggedOutput("redirects", (host_key(result.redirect_to), redirect_item(link, result)))
            return
        if result.recovered:
            self.resumed.inc()
        self.attempts.inc(result.attempts)
        self.redirects.inc(result.redirects)
        self.received.inc(result.bytes_received)
        self.progress.add(links=1, pages=int(result.ok), bytes=result.bytes_received)
        yield from link_outcome(link, result, self.pages)


def link_outcome(link: dict, result: FetchResult, pages) -> Iterator:
    """A finished link's fetch-log row, then its page (on to extraction) or its reject."""
    yield TaggedOutput("log", log_row(link, result))
    if result.ok:
        pages.inc()
        yield page_record(link, result)
    else:
        yield TaggedOutput("rejects", link_reject(link, result.reason, result.detail))


# -- replaying from WARC files ---------------------------------------------------------------------------------------

def _keys(url: str) -> list[str]:
    """The index keys of a URL: as it is and normalised (Common Crawl's URLs and ours differ in small ways)."""
    keys = [url]
    try:
        normalized = normalize_url(url)
    except InvalidUrl:
        return keys
    return keys if normalized == url else keys + [normalized]


def index_warc(path: str) -> Iterator[tuple[str, tuple]]:
    """(url key, (path, offset, status, location, date)) for every whole response record of one WARC file: a file
    whose writer was killed ends in a partial record, which is skipped with a warning, and so is the rest of a file
    that is damaged in the middle (its links become `not-in-warc`)."""
    with storage.open_read(path) as handle:
        try:
            for exchange in iter_responses(handle, path, with_body=False):
                ref = (path, exchange.warc_offset, exchange.status, exchange.header("location"), exchange.started_at)
                for key in _keys(exchange.url):
                    yield key, ref
        except Exception as error:  # warcio raises several kinds (EOF, zlib, parse errors) on a cut-off record
            log.warning("%s: no whole record after this point (%s: %s); using the records before it", path,
                        type(error).__name__, error)


def warc_index(p: beam.Pipeline, files: list[str], name: str):
    """url key -> the best record (`best_ref`) among these WARC files, as a PCollection of pairs."""
    return (p | f"{name}Files" >> beam.Create(files)
            | f"Spread{name}Files" >> beam.Reshuffle()
            | f"Index{name}" >> beam.FlatMap(index_warc).with_output_types(tuple[str, tuple])
            | f"Best{name}Record" >> beam.CombinePerKey(best_ref))


def best_ref(refs: Iterable[tuple]) -> tuple:
    """Of several records of one URL: the latest final answer (retried 5xx/429 records lose to later ones)."""
    def rank(ref):
        status = ref[2]
        final = not (status == 429 or status >= 500)
        return (final, ref[4], ref[0], ref[1])
    return max(refs, key=rank)


@beam.typehints.with_output_types(dict, log=dict, rejects=dict)
class ReplayLinks(beam.DoFn):
    """A link to its archived response (following archived redirects), as if it had been fetched."""

    def __init__(self, config: FetchConfig):
        self.config = config
        self.links_read = Metrics.counter(NAME, "links.read")
        self.pages = Metrics.counter(NAME, "pages.replayed")

    def process(self, link: dict, index: dict):
        self.links_read.inc()
        yield from link_outcome(link, self.replay(link, index), self.pages)

    def replay(self, link: dict, index: dict) -> FetchResult:
        started = time.monotonic()
        result = FetchResult(url=link["url"])
        current, seen = link["url"], {link["url"]}
        try:
            for hop in range(self.config.max_redirects + 1):
                keys = _keys(current) + ([link["url_key"]] if hop == 0 and link.get("url_key") else [])
                ref = next((index[key] for key in keys if key in index), None)
                if ref is None:
                    raise FetchFailure("not-in-warc", f"no archived response for {current[:200]}")
                path, offset, status, location, date = ref
                result.final_url, result.status, result.fetched_at = current, status, date
                result.warc_file, result.warc_offset = path, offset
                if status in REDIRECT_STATUSES and location:
                    target = urljoin(current, location.strip()).split("#", 1)[0]
                    current = follow_redirect(current, target, hop, seen, self.config.max_redirects)
                    result.redirects += 1
                    continue
                with storage.open_read(path) as handle:
                    exchange = read_response_at(handle, path, offset)
                result.bytes_received = len(exchange.body)
                result.content_type = exchange.header("content-type", "") or ""
                result.body = page_outcome(exchange, self.config)
                return result
        except FetchFailure as failure:
            result.reason, result.detail = failure.reason, failure.detail[:500]
        finally:
            result.elapsed = time.monotonic() - started
        return result


# -- resuming from the journal --------------------------------------------------------------------------------------

def recovered_result(link: dict, row: dict, config: FetchConfig) -> FetchResult | None:
    """A link's outcome as an earlier run's journal row has it (a page with its body read back from the WARC record
    the row names); None when that record cannot be read (the link is fetched again)."""
    result = FetchResult(
        url=link["url"], reason=row.get("reason"), detail=row.get("detail") or "", final_url=row.get("final_url"),
        status=row.get("status"), bytes_received=row.get("bytes") or 0, elapsed=row.get("elapsed") or 0.0,
        attempts=row.get("attempts") or 0, redirects=row.get("redirects") or 0, fetched_at=row.get("fetched_at") or 0,
        warc_file=row.get("warc_file"), warc_offset=row.get("warc_offset"), recovered=True)
    if row.get("outcome") != "page":
        return result
    try:
        with storage.open_read(result.warc_file) as handle:
            exchange = read_response_at(handle, result.warc_file, result.warc_offset)
        result.content_type = exchange.header("content-type", "") or ""
        result.body = page_outcome(exchange, config)
    except Exception as error:  # a deleted or damaged file, or options that now refuse the page: fetch it again
        log.warning("%s: its record at %s:%s cannot be used (%s: %s); fetching it again", link["url"],
                    result.warc_file, result.warc_offset, type(error).__name__, error)
        return None
    return result


def journal_rows(path: str) -> Iterator[tuple[str, dict]]:
    """(url, fetch-log row) for every whole line of one journal file."""
    with storage.open_read(path) as handle:
        for row in read_journal(iter(handle.readline, b""), path):
            yield row["url"], row


def latest_row(rows: Iterable[dict]) -> dict:
    """Of several rows of one link (a retried bundle, a record that could not be read back): the latest."""
    return max(rows, key=lambda row: (row.get("fetched_at") or 0, json.dumps(row, sort_keys=True)))


def _mark_finished(element: tuple[str, dict]) -> Iterator[dict]:
    _, joined = element
    rows = list(joined["rows"])
    for link in joined["links"]:
        yield finished_item(link, rows[0]) if rows else link


def mark_finished(p: beam.Pipeline, links, journal_files: list[str]):
    """The links, each with its row when the journal of an earlier run holds one (`finished_item`)."""
    rows = (p | "JournalFiles" >> beam.Create(journal_files)
            | "SpreadJournalFiles" >> beam.Reshuffle()
            | "ReadJournals" >> beam.FlatMap(journal_rows).with_output_types(tuple[str, dict])
            | "LatestJournalRow" >> beam.CombinePerKey(latest_row))
    keyed = links | "KeyByUrl" >> beam.Map(lambda link: (link["url"], link)).with_output_types(tuple[str, dict])
    return ({"links": keyed, "rows": rows} | "JoinJournal" >> beam.CoGroupByKey()
            | "MarkFinished" >> beam.FlatMap(_mark_finished).with_output_types(dict))


# -- extraction ------------------------------------------------------------------------------------------------------

@beam.typehints.with_output_types(dict, rejects=dict)
class ExtractDocs(beam.DoFn):
    """Fetched pages to documents (main) or rejects, in a sandbox process with a per-page time limit."""

    def __init__(self, config: ExtractConfig, timeout: float, memory_mb: int):
        self.config, self.timeout, self.memory_mb = config, timeout, memory_mb
        self.docs = Metrics.counter(NAME, "docs.written")
        self.words = Metrics.counter(NAME, "docs.words")
        self.extract_ms = Metrics.counter(NAME, "extract.milliseconds")

    def setup(self) -> None:
        if self.timeout > 0:
            self.extractor = ExtractionSandbox(self.config, self.timeout, self.memory_mb)
            self.extractor.start()  # the child imports trafilatura while the pipeline starts up
        else:
            self.extractor = InlineExtractor(self.config)
        self.progress = Progress(log, "crawl: extraction (this worker)")

    def process(self, page: dict):
        link = page["link"]
        result = self.extractor.process(Page(page["final_url"], page["body"], page["content_type"]))
        self.extract_ms.inc(int(result.seconds * 1000))
        self.progress.add(pages=1, docs=int(result.ok))
        if result.ok:
            self.docs.inc()
            self.words.inc(result.n_words)
            yield doc_row(page, result)
        else:
            yield TaggedOutput("rejects", link_reject(link, result.reason, result.detail))

    def teardown(self) -> None:
        self.extractor.close()


# -- the stage -------------------------------------------------------------------------------------------------------

def warc_inputs(config: dict) -> list[storage.FileEntry]:
    return storage.match_each(config.get("from_warc") or [], "--from-warc")


class _Fetched:
    """The merged outputs of all fetch rounds, shaped like a ParDo's tagged outputs."""

    def __init__(self, pages, log, rejects):
        self.pages, self.log, self.rejects = pages, log, rejects


def fetch_rounds(links, fetching: FetchConfig, run: layout.RunDir, config: dict) -> _Fetched:
    """Round 0 fetches the links (or `finished_item`s) grouped by their host; each later round (up to --max-redirects
    of them) the links that the previous round redirected to another host, grouped by that target host together with
    the host's state from earlier rounds. A fixed sequence of steps: a round without redirects still shuffles one
    state record per host crawled so far (its clock, delay and robots.txt rules), and nothing else."""
    rounds = fetching.max_redirects + 1

    def fetch_hosts(index: int) -> FetchHosts:
        return FetchHosts(fetching, run.path(layout.WARC), run.path(layout.FETCH_JOURNAL), config["warc_max_bytes"],
                          config["warc_max_seconds"], config["hosts_in_flight"], config["max_pages_per_host"],
                          config["max_host_failures"], round_index=index, last_round=index == rounds - 1)

    outputs = ("log", "rejects", "redirects", "hosts")
    current = (links
               | "KeyByHost" >> beam.Map(lambda item: (host_key(item_link(item)["url"]), item))
               .with_output_types(tuple[str, dict])
               | "GroupByHost" >> beam.GroupByKey()
               | "Fetch" >> beam.ParDo(fetch_hosts(0)).with_outputs(*outputs, main="pages"))
    pages, logs, rejects = [current.pages], [current.log], [current.rejects]
    for index in range(1, rounds):
        current = ((current.redirects, current.hosts)
                   | f"Redirects{index}" >> beam.Flatten()
                   | f"GroupByTargetHost{index}" >> beam.GroupByKey()
                   | f"FetchRedirects{index}" >> beam.ParDo(fetch_hosts(index)).with_outputs(*outputs, main="pages"))
        pages.append(current.pages)
        logs.append(current.log)
        rejects.append(current.rejects)
    return _Fetched(pages=pages | "AllPages" >> beam.Flatten(), log=logs | "AllFetchLogs" >> beam.Flatten(),
                    rejects=rejects | "AllFetchRejects" >> beam.Flatten())


def execute(ctx: StageContext) -> None:
    config = ctx.config
    links_glob = ctx.run.path(layout.LINKS_GLOB)
    if not storage.match(links_glob):
        raise StageError(f"no links in {links_glob}; run `webtext links {ctx.run.root}` first")
    fetching = fetch_config(config)
    extraction = extract_config(config)
    warc_files = [e.path for e in warc_inputs(config)]
    docs_dir, log_dir = ctx.run.path(layout.DOCS), ctx.run.path(layout.FETCH_LOG)
    if config["restart"]:
        ctx.run.clear(layout.WARC, patterns=("*", "*/*"))
        ctx.run.clear(layout.FETCH_JOURNAL, patterns=("*", "*/*"))
    journals = [] if warc_files else [e.path for e in storage.match(ctx.run.path(layout.FETCH_JOURNAL_GLOB))]
    if journals:
        log.info("crawl: resuming from the %d journal files in %s (--restart to fetch everything again)",
                 len(journals), ctx.run.path(layout.FETCH_JOURNAL))

    def build(p: beam.Pipeline) -> None:
        links = p | "ReadLinks" >> beam.io.ReadFromParquet(links_glob)
        if warc_files:
            index = warc_index(p, warc_files, "Warc")
            fetched = links | "Replay" >> beam.ParDo(ReplayLinks(fetching), index=beam.pvalue.AsDict(index)) \
                .with_outputs("log", "rejects", main="pages")
        else:
            fetched = fetch_rounds(mark_finished(p, links, journals) if journals else links, fetching, ctx.run, config)
        extract_docs = ExtractDocs(extraction, config["extract_timeout"], config["extract_memory_mb"])
        extracted = fetched.pages | "Extract" >> beam.ParDo(extract_docs).with_outputs("rejects", main="docs")
        extracted.docs | "WriteDocs" >> sinks.WriteParquet(
            docs_dir, "docs", layout.DOC_SCHEMA, config["docs_shards"], shard_key=lambda r: r["doc_id"],
            sort_key=lambda r: r["doc_id"])
        fetched.log | "WriteFetchLog" >> sinks.WriteParquet(
            log_dir, "fetch-log", layout.FETCH_LOG_SCHEMA, config["fetch_log_shards"], shard_key=lambda r: r["url"],
            sort_key=lambda r: (r["url_key"] or "", r["url"]))
        ((fetched.rejects, extracted.rejects) | "AllRejects" >> beam.Flatten()
         | "CountRejects" >> beam.ParDo(sinks.CountRejects(NAME))
         | "WriteRejects" >> sinks.WriteRejects(ctx.run.rejects(NAME), NAME))

    ctx.run_pipeline(build)
    sinks.fill_empty_shards(docs_dir, "docs", layout.DOC_SCHEMA, config["docs_shards"])
    sinks.fill_empty_shards(log_dir, "fetch-log", layout.FETCH_LOG_SCHEMA, config["fetch_log_shards"])


STAGE = Stage(
    name=NAME,
    help="fetch the links politely into WARC files, extract the main text, keep documents that pass the filters",
    options=crawl_options(),
    execute=execute,
    external_inputs=lambda run, config: warc_inputs(config),
    upstream=lambda run, config: ["links"],
    outputs=[layout.FETCH_LOG, layout.DOCS],  # not WARC: a rerun resumes from it, --restart clears it (execute)
)
