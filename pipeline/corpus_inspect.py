"""`webtext inspect RUN …`: documents, rejects, duplicate clusters and one URL's way through the stages, streamed from
a run's files (local or gs://) and printed as text or as JSON (pipeline/inspect_terminal.py draws the text)."""
from __future__ import annotations

import argparse
import difflib
import hashlib
import itertools
import json
import os
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from webtext.crawl.fetch.warc import read_response_at, warc_date
from webtext.crawl.reddit.urls import InvalidUrl, fetch_url, normalize_url, url_host
from webtext.dedup.minhash import jaccard, shingle_hashes, shingles
from webtext.dedup.text import words

from . import layout, storage
from .layout import RunDir
from .stage_options import config_from, options_of
from .storage import StageError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

TEXT_START = 300  # characters of a document's text shown in a listing
MATCH_CONTEXT = 60  # characters shown either side of a --grep match
LISTED_COLUMNS = ["doc_id", "url", "domain", "score", "language", "language_score", "n_words", "text"]
FETCH_STEP, EXTRACTION_STEP, FILTER_STEP = "fetch", "extraction", "quality filter"


# -- options (flags derived as the stages' are: pipeline/stage_options.py) -------------------------------------------

@dataclass(frozen=True)
class InspectOptions:
    as_json: bool = field(default=False, metadata={"flag": "--json", "help": (
        "print JSON for scripts: one object per line (docs, rejects) or one object (doc, cluster, url)")})


@dataclass(frozen=True)
class ListingOptions(InspectOptions):
    limit: int = field(default=20, metadata={"min": 0, "help": "list at most this many (0: all of them)"})


@dataclass(frozen=True)
class DocsOptions(ListingOptions):
    domain: str | None = field(default=None, metadata={
        "help": "only documents of this domain or its subdomains (nytimes.com also matches cooking.nytimes.com)"})
    min_words: int = field(default=0, metadata={"min": 0, "help": "only documents of at least this many words"})
    grep: str | None = field(default=None, metadata={
        "help": "only documents whose text matches this Python regular expression ((?i) for any case)"})
    sample: int | None = field(default=None, metadata={"min": 1, "help": (
        "a uniform random sample of this many of the matching documents (reservoir sampling over all of them, "
        "listed in corpus order; --limit does not apply)")})
    seed: int = field(default=0, metadata={"help": "seed of --sample: the same seed gives the same sample"})


@dataclass(frozen=True)
class RejectsOptions(ListingOptions):
    stage: str | None = field(default=None, metadata={
        "required": True, "choices": layout.DATA_STAGES, "help": "the stage whose rejects to list"})
    reason: str | None = field(default=None, metadata={"help": "only rejects with this reason (e.g. too-few-words)"})


# -- finding rows ---------------------------------------------------------------------------------------------------

def rows_of(batches: Iterable[pa.RecordBatch]) -> Iterator[dict]:
    for batch in batches:
        yield from batch.to_pylist()


def rows_where(files: list, column: str, value: str, columns: list[str] | None = None) -> list[dict]:
    """The rows whose `column` equals `value`; row groups that cannot hold it (by their statistics) stay unread."""
    return list(rows_of(storage.scan_parquet(files, columns, lambda b: pc.equal(b.column(column), value), [column],
                                             within=(column, value, value))))


def documents_by_id(run: RunDir, doc_ids: Iterable[str]) -> dict[str, dict]:
    """Whole document rows by doc_id: from RUN/docs (the crawl's, removed duplicates included), then RUN/dedup."""
    wanted, found = set(doc_ids), {}
    for pattern in (layout.DOCS_GLOB, layout.DEDUP_DOCS_GLOB):
        missing = sorted(wanted - set(found))
        if not missing:
            break
        keep = lambda b, ids=pa.array(missing, pa.string()): pc.is_in(b.column("doc_id"), value_set=ids)  # noqa: E731
        for row in rows_of(storage.scan_parquet(run.files(pattern), None, keep, ["doc_id"],
                                                within=("doc_id", missing[0], missing[-1]))):
            found.setdefault(row["doc_id"], row)
    return found


def document(run: RunDir, doc_id: str) -> dict | None:
    return documents_by_id(run, [doc_id]).get(doc_id)


def rejects_of(run: RunDir, stage: str, item_id: str) -> list[dict]:
    """What `stage` rejected under this item id (a url_key for the crawl, a doc_id for dedup and shards)."""
    return list(rows_of(storage.scan_parquet(run.reject_files(stage), list(layout.REJECT_SCHEMA.names),
                                             lambda b: pc.equal(b.column("item_id"), item_id), ["item_id"])))


def finished(run: RunDir, stage: str) -> bool:
    return run.read_success(stage) is not None


def open_run(root: str) -> RunDir:
    run = RunDir(root)
    if not run.is_run():
        raise StageError(f"{root}: not a run directory (no {layout.CONFIG}, no <stage>/{layout.SUCCESS}, "
                         f"no {layout.DOCS_GLOB})")
    return run


def run_config(run: RunDir) -> dict:
    path = run.path(layout.CONFIG)
    return tomllib.loads(storage.read_bytes(path).decode()) if storage.exists(path) else {}


def unknown_document(run: RunDir, doc_id: str) -> StageError:
    return StageError(f"no document {doc_id!r} in {run.path(layout.DOCS_GLOB)} or {run.path(layout.DEDUP_DOCS_GLOB)}")


# -- docs ------------------------------------------------------------------------------------------------------------

def corpus_files(run: RunDir) -> layout.DocumentSource:
    """The documents a listing reads: the deduplicated corpus once dedup has finished, else the crawl's."""
    source = layout.require_documents(run)
    if source.stage:
        run.require_finished(source.stage)
    return source


def compile_grep(pattern: str | None) -> re.Pattern | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as error:
        raise StageError(f"--grep {pattern!r}: not a regular expression ({error})") from None


def document_filter(options: DocsOptions, names: set[str], where: str):
    """(keep, its columns) for storage.scan_parquet from --domain and --min-words; (None, []) without either."""
    tests = []
    if options.domain:
        domain = options.domain.lower().removeprefix("www.")
        tests.append(("domain", "--domain", lambda b: pc.or_(pc.equal(b.column("domain"), domain),
                                                            pc.ends_with(b.column("domain"), pattern="." + domain))))
    if options.min_words:
        tests.append(("n_words", "--min-words", lambda b: pc.greater_equal(b.column("n_words"), options.min_words)))
    for column, flag, _ in tests:
        if column not in names:
            raise StageError(f"{where}: the documents have no column {column!r}, which {flag} needs")
    if not tests:
        return None, []

    def keep(batch: pa.RecordBatch) -> pa.Array:
        masks = [test(batch) for _, _, test in tests]
        return masks[0] if len(masks) == 1 else pc.and_(*masks)
    return keep, [column for column, _, _ in tests]


def listing(row: dict, pattern: re.Pattern | None) -> dict | None:
    """A document as a listing shows it, or None when --grep does not match its text."""
    text = row.get("text") or ""
    item = {name: row.get(name) for name in LISTED_COLUMNS if name != "text"}
    if pattern is not None:
        found = pattern.search(text)
        if found is None:
            return None
        start, end = max(0, found.start() - MATCH_CONTEXT), found.end() + MATCH_CONTEXT
        item["match"] = {"start": found.start(), "end": found.end(), "context": text[start:end]}
    item["text_start"] = text[:TEXT_START]
    return item


def reservoir(items: Iterable, size: int, seed: int) -> list:
    """A uniform sample of `size` items of a stream (Algorithm R), in stream order."""
    rng, chosen = random.Random(seed), []
    for index, item in enumerate(items):
        if index < size:
            chosen.append((index, item))
        else:
            slot = rng.randrange(index + 1)
            if slot < size:
                chosen[slot] = (index, item)
    return [item for _, item in sorted(chosen, key=lambda pair: pair[0])]


def find_docs(run: RunDir, _: None, options: DocsOptions) -> Iterator[dict]:
    source = corpus_files(run)
    pattern = compile_grep(options.grep)
    keep, keep_columns = document_filter(options, set(layout.check_documents(source.files, [])[0].names),
                                         source.pattern)
    rows = rows_of(storage.scan_parquet(source.files, LISTED_COLUMNS, keep, keep_columns))
    items = (item for item in (listing(row, pattern) for row in rows) if item is not None)
    if options.sample:
        yield from reservoir(items, options.sample, options.seed)
    else:
        yield from itertools.islice(items, options.limit or None)


# -- rejects ---------------------------------------------------------------------------------------------------------

def find_rejects(run: RunDir, _: None, options: RejectsOptions) -> Iterator[dict]:
    stage = options.stage
    run.require_finished(stage)
    files = run.reject_files(stage)
    keep = (lambda b: pc.equal(b.column("reason"), options.reason)) if options.reason else None
    rows = rows_of(storage.scan_parquet(files, list(layout.REJECT_SCHEMA.names), keep, ["reason"]))
    listed = 0
    for row in itertools.islice(rows, options.limit or None):
        listed += 1
        yield row
    if not listed and options.reason:
        reasons = sorted({row["reason"] for row in rows_of(storage.scan_parquet(files, ["reason"]))})
        raise StageError(f"{run.rejects(stage)}: the {stage} stage rejected nothing for {options.reason!r} "
                         f"(its reasons: {', '.join(reasons) or 'none, it rejected nothing'})")


# -- doc -------------------------------------------------------------------------------------------------------------

def warc_record(run: RunDir, warc_file: str | None, offset: int | None) -> dict | None:
    """The archived response a document was extracted from: found in RUN's own WARC folder (a run that was copied or
    moved keeps its records there), else at the path the crawl recorded."""
    if not warc_file or offset is None:
        return None
    path = run.path(layout.WARC, warc_file.rstrip("/").rsplit("/", 1)[-1])
    if not storage.exists(path):
        path = warc_file
    if not storage.exists(path):
        return {"file": warc_file, "offset": offset, "error": f"{warc_file} not found (nor in {run.path(layout.WARC)})"}
    try:
        with storage.open_read(path) as handle:
            exchange = read_response_at(handle, path, offset)
    except Exception as error:  # noqa: BLE001 — warcio raises several kinds on a damaged record
        return {"file": path, "offset": offset, "error": f"no readable response record there ({error})"}
    return {"file": path, "offset": offset, "target_uri": exchange.url, "status": exchange.status,
            "date": warc_date(exchange.started_at) if exchange.started_at else None, "ip": exchange.ip,
            "content_type": exchange.header("content-type"), "payload_bytes": len(exchange.body),
            "truncated": exchange.truncated}


def token_count(run: RunDir, text: str | None) -> dict | None:
    """The document's tokens as the shards stage writes them (its text, then <|endoftext|>), encoded with
    RUN/tokenizer/tokenizer.json: one document's encoding costs far less than finding it in the shards."""
    from .token_encoding import Encoder

    path = run.path(layout.TOKENIZER_JSON)
    if not text or not storage.exists(path):
        return None
    data = storage.read_bytes(path)
    encoder = Encoder(data, engine="tokenizers")  # tiktoken, where the shards used it, gives the same ids
    manifest_path = run.path(layout.SHARDS_MANIFEST)
    shards_sha256 = json.loads(storage.read_bytes(manifest_path)).get("tokenizer_sha256") \
        if storage.exists(manifest_path) else None
    same = None if shards_sha256 is None else hashlib.sha256(data).hexdigest() == shards_sha256
    return {"tokens": len(encoder.encode([text])[0]) + 1, "tokenizer": path, "same_tokenizer_as_shards": same}


def corpus_fate(run: RunDir, doc_id: str) -> dict:
    """Whether dedup and the shards stage kept the document (a stage that has not finished says so)."""
    fate = {}
    for stage in ("dedup", "shards"):
        if not finished(run, stage):
            fate[stage] = {"outcome": "not run"}
            continue
        dropped = rejects_of(run, stage, doc_id)
        fate[stage] = ({"outcome": "dropped", "reason": dropped[0]["reason"], "detail": dropped[0]["detail"]}
                       if dropped else {"outcome": "kept"})
        if dropped:
            break
    return fate


def find_doc(run: RunDir, doc_id: str, options: InspectOptions) -> Iterator[dict]:
    row = document(run, doc_id)
    if row is None:
        raise unknown_document(run, doc_id)
    fetches = rows_where(run.files(layout.FETCH_LOG_GLOB), "url_key", row["url_key"]) if row.get("url_key") else []
    cluster = cluster_rows(run, doc_id) if finished(run, "dedup") else []
    yield {**row, "tokens": token_count(run, row.get("text")),
           "fetch_log": fetches[0] if fetches else None,
           "warc_record": warc_record(run, row.get("warc_file"), row.get("warc_offset")),
           "corpus": corpus_fate(run, doc_id),
           "cluster": [{k: r[k] for k in ("doc_id", "kept", "jaccard", "reason")} for r in cluster] or None}


# -- cluster ---------------------------------------------------------------------------------------------------------

def cluster_rows(run: RunDir, doc_id: str) -> list[dict]:
    """The rows of the duplicate cluster holding doc_id, its survivor first; empty when it has no duplicate."""
    files = run.files(layout.DEDUP_CLUSTERS_GLOB)
    rows = rows_where(files, "cluster_id", doc_id)  # doc_id is the survivor: the files are sorted by cluster_id
    if not rows:
        member = rows_where(files, "doc_id", doc_id, ["cluster_id"])
        rows = rows_where(files, "cluster_id", member[0]["cluster_id"]) if member else []
    return sorted(rows, key=lambda r: (not r["kept"], r["doc_id"]))


def word_diff(survivor: str, member: str) -> list[dict]:
    """The member's words against the survivor's: runs of equal words, and what the member deletes, inserts or
    replaces."""
    old, new = survivor.split(), member.split()
    ops = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            ops.append({"op": "equal", "words": i2 - i1, "text": " ".join(old[i1:i2])})
        else:
            ops.append({"op": tag, "survivor": " ".join(old[i1:i2]), "member": " ".join(new[j1:j2])})
    return ops


def dedup_ngram(run: RunDir) -> int:
    from .dedup_stage import DedupOptions

    return int(run_config(run).get("dedup", {}).get("ngram", DedupOptions().ngram))


def find_cluster(run: RunDir, doc_id: str, options: InspectOptions) -> Iterator[dict]:
    run.require_finished("dedup")
    rows = cluster_rows(run, doc_id)
    docs = documents_by_id(run, [r["doc_id"] for r in rows] or [doc_id])
    if doc_id not in docs:
        raise unknown_document(run, doc_id)
    if not rows:
        yield {"doc_id": doc_id, "cluster_id": None, "survivor": None, "members": []}
        return
    ngram = dedup_ngram(run)
    survivor = docs.get(rows[0]["doc_id"]) or {}
    survivor_shingles = shingle_hashes(shingles(words(survivor.get("text") or ""), ngram))
    members = []
    for row in rows[1:]:
        member = docs.get(row["doc_id"]) or {}
        text = member.get("text") or ""
        members.append({"doc_id": row["doc_id"], "url": member.get("url"), "n_words": member.get("n_words"),
                        "reason": row["reason"], "jaccard_estimated": row["jaccard"],
                        "jaccard": round(jaccard(survivor_shingles, shingle_hashes(shingles(words(text), ngram))), 4),
                        "diff": word_diff(survivor.get("text") or "", text)})
    yield {"doc_id": doc_id, "cluster_id": rows[0]["cluster_id"], "shingle_words": ngram,
           "survivor": {"doc_id": rows[0]["doc_id"], "url": survivor.get("url"), "n_words": survivor.get("n_words"),
                        "text": survivor.get("text")},
           "members": members}


# -- url -------------------------------------------------------------------------------------------------------------

def _same_link(posted: str | None, key: str | None, raw: str) -> bool:
    if not posted:
        return False
    try:
        return normalize_url(posted) == key
    except InvalidUrl:
        return fetch_url(posted) == raw


def links_rejects(run: RunDir, raw: str, key: str | None) -> list[dict]:
    """The submissions of this URL that the links stage rejected: rows whose URL names its host (a cheap Arrow test)
    and that normalise to its url_key (or, for a URL that is no link, equal it)."""
    hosts = {url_host(key)} if key else set()
    hosts.add(raw.partition("://")[2].split("/")[0] if "://" in raw else raw.split("/")[0])
    hosts.discard("")

    def keep(batch: pa.RecordBatch) -> pa.Array:
        masks = [pc.match_substring(batch.column("url"), host, ignore_case=True) for host in sorted(hosts)]
        return masks[0] if len(masks) == 1 else pc.or_(*masks)
    rows = rows_of(storage.scan_parquet(run.reject_files("links"), ["reason", "detail", "url", "item_id"], keep,
                                        ["url"])) if hosts else iter(())
    return [{"reason": r["reason"], "detail": r["detail"], "url": r["url"], "submission_id": r["item_id"]}
            for r in rows if _same_link(r["url"], key, raw)]


def trace_links(run: RunDir, raw: str, key: str | None) -> dict:
    if not finished(run, "links"):
        return {"stage": "links", "outcome": "not run"}
    link = rows_where(run.files(layout.LINKS_GLOB), "url_key", key) if key else []
    rejected = links_rejects(run, raw, key)
    if link:
        return {"stage": "links", "outcome": "kept", "link": link[0], "rejected_submissions": rejected}
    if rejected:
        reason = Counter(r["reason"] for r in rejected).most_common(1)[0][0]
        detail = next(r["detail"] for r in rejected if r["reason"] == reason)
        return {"stage": "links", "outcome": "dropped", "reason": reason, "detail": detail,
                "rejected_submissions": rejected}
    return {"stage": "links", "outcome": "not seen", "detail": "no submission the links stage read links to it"}


def crawl_step(reason: str, fetch: dict | None) -> str:
    from .report import FILTER_REASONS

    if fetch is None or fetch["outcome"] != "page":
        return FETCH_STEP
    return FILTER_STEP if reason in FILTER_REASONS else EXTRACTION_STEP


def crawled_document(run: RunDir, key: str) -> dict | None:
    """The crawl's document of a url_key: by its doc_id (a lookup), else by url_key (a scan, for placed corpora)."""
    from .crawl_stage import doc_id

    files = run.files(layout.DOCS_GLOB)
    found = rows_where(files, "doc_id", doc_id(key), ["doc_id", "url_key"]) or \
        rows_where(files, "url_key", key, ["doc_id", "url_key"])
    return found[0] if found else None


def trace_crawl(run: RunDir, key: str, reached: bool) -> tuple[dict, str | None]:
    """The crawl's step for the link, and the doc_id of its document (also of one placed in RUN/docs by hand)."""
    doc = crawled_document(run, key) if key else None
    doc_id = doc["doc_id"] if doc else None
    if not finished(run, "crawl"):
        return {"stage": "crawl", "outcome": "not run"}, doc_id
    if not reached:
        return {"stage": "crawl", "outcome": "not reached"}, None
    fetches = rows_where(run.files(layout.FETCH_LOG_GLOB), "url_key", key)
    fetch = fetches[0] if fetches else None
    if doc is not None:
        return {"stage": "crawl", "outcome": "kept", "doc_id": doc_id, "fetch_log": fetch}, doc_id
    rejected = rejects_of(run, "crawl", key)
    if rejected:
        reason = rejected[0]["reason"]
        return {"stage": "crawl", "outcome": "dropped", "step": crawl_step(reason, fetch), "reason": reason,
                "detail": rejected[0]["detail"], "fetch_log": fetch}, None
    return {"stage": "crawl", "outcome": "unaccounted", "detail": "no document and no reject for it",
            "fetch_log": fetch}, None


def trace_corpus(run: RunDir, doc_id: str | None, stage: str, survivors: str | None) -> dict:
    """The dedup or shards stage's step for a document: kept, dropped (with the reject), not run or not reached."""
    if not finished(run, stage):
        return {"stage": stage, "outcome": "not run"}
    if doc_id is None:
        return {"stage": stage, "outcome": "not reached"}
    rejected = rejects_of(run, stage, doc_id)
    if rejected:
        return {"stage": stage, "outcome": "dropped", "reason": rejected[0]["reason"],
                "detail": rejected[0]["detail"]}
    if survivors and not rows_where(run.files(survivors), "doc_id", doc_id, ["doc_id"]):
        return {"stage": stage, "outcome": "unaccounted", "detail": "not among its documents and no reject for it"}
    return {"stage": stage, "outcome": "kept"}


def find_url(run: RunDir, url: str, options: InspectOptions) -> Iterator[dict]:
    raw = fetch_url(url)
    try:
        key, invalid = normalize_url(url), None
    except InvalidUrl as error:
        key, invalid = None, error.why
    links = trace_links(run, raw, key)
    crawl, doc_id = trace_crawl(run, key, links["outcome"] in ("kept", "not run"))
    if links["outcome"] in ("not seen", "not run") and doc_id is None:
        known = f"url_key {key}" if key else f"not a link the links stage takes: {invalid}"
        raise StageError(f"{url}: not in {run.root} ({known}): no submission the links stage read links to it "
                         "and no document has it")
    reached = crawl["outcome"] in ("kept", "not run") and doc_id is not None
    dedup = trace_corpus(run, doc_id if reached else None, "dedup", layout.DEDUP_DOCS_GLOB)
    shards = trace_corpus(run, doc_id if dedup["outcome"] in ("kept", "not run") else None, "shards", None)
    stages = [links, crawl, dedup, shards]
    dropped = next((s for s in stages if s["outcome"] in ("dropped", "unaccounted")), None)
    where = None if dropped is None else {k: dropped.get(k) for k in ("stage", "step", "reason", "detail")}
    yield {"url": url, "url_key": key, "invalid": invalid, "doc_id": doc_id,
           "outcome": "dropped" if dropped else "kept", "dropped_at": where, "stages": stages}


# -- the command -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Subcommand:
    help: str
    options: type
    find: Callable[[RunDir, str | None, InspectOptions], Iterator[dict]]
    argument: tuple[str, str] | None = None  # (METAVAR, help) of its one positional argument
    streams: bool = False  # many items, one JSON line each; otherwise one JSON object


SUBCOMMANDS = {
    "docs": Subcommand("documents of the corpus (the deduplicated one once dedup has run, else the crawl's) with URL, "
                       "score, language, length and the start of the text", DocsOptions, find_docs, streams=True),
    "doc": Subcommand("one document whole, with its provenance (submissions, subreddits, fetch-log row, WARC record), "
                      "its token count and its duplicate cluster", InspectOptions, find_doc,
                      ("DOC_ID", "the document's doc_id (see `inspect RUN docs`)")),
    "rejects": Subcommand("what a stage rejected, with reason and detail", RejectsOptions, find_rejects, streams=True),
    "cluster": Subcommand("a duplicate cluster side by side: its survivor, and each removed member with its Jaccard "
                          "similarity and a word diff against the survivor", InspectOptions, find_cluster,
                          ("DOC_ID", "any member's doc_id (the survivor's or a removed one's)")),
    "url": Subcommand("where a URL went, stage by stage: kept, or the stage, step and reason that dropped it",
                      InspectOptions, find_url,
                      ("URL", "the URL as posted or pasted (normalised as the links stage does)")),
}


def add_inspect_parser(commands: argparse._SubParsersAction) -> None:
    description = ("Look at individual items of a run: documents, rejects, duplicate clusters, one URL's way "
                   "through the stages. Reads the run's files as they stream (local or gs://), writes nothing.")
    parser = commands.add_parser("inspect", help=description.split(":")[0], description=description,
                                 allow_abbrev=False)
    parser.add_argument("run", metavar="RUN", help="run directory: a local path or any Beam filesystem URL (gs://…)")
    parser.set_defaults(log_level="WARNING")
    whats = parser.add_subparsers(dest="what", required=True, metavar="WHAT",
                                  help="what to look at (each has its own --help)")
    for name, sub in SUBCOMMANDS.items():
        what = whats.add_parser(name, help=sub.help, description=sub.help[0].upper() + sub.help[1:] + ".",
                                allow_abbrev=False)
        if sub.argument:
            what.add_argument("item", metavar=sub.argument[0], help=sub.argument[1])
        for option in options_of(sub.options):
            option.add_to(what)


def inspect_command(args: argparse.Namespace) -> int:
    from .inspect_terminal import RENDER

    sub = SUBCOMMANDS[args.what]
    options = config_from(sub.options, vars(args))
    items = sub.find(open_run(args.run), getattr(args, "item", None), options)
    try:
        if options.as_json:
            for item in items:
                print(json.dumps(item, ensure_ascii=False, indent=None if sub.streams else 2), flush=sub.streams)
        else:
            RENDER[args.what](items)
        sys.stdout.flush()
    except BrokenPipeError:  # `| head` closed the pipe: what was asked for was read
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 — so the interpreter's final flush does not fail again
    return 0
