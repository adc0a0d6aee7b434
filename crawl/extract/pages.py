"""Page bytes to a document: charset decoding, trafilatura main text with title and date, language and quality rules.

`ExtractionSandbox` runs this in a child process with a per-page time limit: a pathological page is killed with its
process (reject `extract-timeout`) instead of hanging a worker thread that Python could never stop.
"""
from __future__ import annotations

import codecs
import logging
import os
import pickle
import re
import select
import struct
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO

from webtext.crawl.filters import QualityConfig, first_failure
from webtext.crawl.language import identify_language

log = logging.getLogger(__name__)

_META_SCAN_BYTES = 8192
_META_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_:.\-]+)""", re.IGNORECASE)
_BINARY_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"%PDF", b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"RIFF",
                 b"\x00asm", b"\x7fELF", b"%!PS", b"OggS", b"ID3", b"BM", b"wOFF", b"wOF2", b"\xca\xfe\xba\xbe")
_NOT_CONTROL_BYTES = bytes(b for b in range(256) if b >= 0x20 or b in b"\t\n\r\f\x1b")  # deleted to count the rest
# WHATWG Encoding Standard: these labels mean windows-1252 in browsers, and pages are written for browsers.
_WINDOWS_1252_LABELS = frozenset({"ascii", "us-ascii", "latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1", "cp819",
                                  "ibm819", "iso_8859-1", "x-cp1252", "windows-1252", "cp1252"})


# -- configuration and records -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExtractConfig:
    """Extraction settings (measured on the extraction benchmark: docs/crawl.md) and the filters after it."""

    favor_precision: bool = True
    favor_recall: bool = False
    include_comments: bool = False
    include_tables: bool = True
    languages: tuple[str, ...] = ("en",)  # empty: keep every language
    min_language_score: float = 0.5
    quality: QualityConfig = field(default_factory=QualityConfig)


@dataclass
class Page:
    """A fetched page: its URL, its body (content-decoded bytes) and the Content-Type header it came with."""

    url: str
    body: bytes
    content_type: str = ""


@dataclass
class PageResult:
    """A document (`reason` is None) or why the page gave none."""

    reason: str | None = None
    detail: str = ""
    text: str = ""
    title: str | None = None
    date: str | None = None
    language: str = ""
    language_score: float = 0.0
    charset: str = ""
    n_words: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reason is None


# -- bytes to text -------------------------------------------------------------------------------------------------

def looks_binary(body: bytes) -> bool:
    """Images, archives, executables and other non-text served as text/html."""
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF8)):
        return False
    head = body[:4096]
    if head.startswith(_BINARY_MAGIC) or head[4:8] == b"ftyp":
        return True
    if b"\x00" in head:
        return True
    controls = len(head.translate(None, _NOT_CONTROL_BYTES))
    return bool(head) and controls / len(head) > 0.05


def codec_name(label: str | bytes | None) -> str | None:
    """The Python codec for a charset label as browsers read it (latin-1 and ASCII mean windows-1252), or None."""
    if not label:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", "ignore")
    label = label.strip().strip("\"'").lower()
    if label in _WINDOWS_1252_LABELS:
        return "cp1252"
    if label in ("x-sjis", "shift-jis", "sjis", "ms_kanji", "csshiftjis"):
        return "cp932"  # what Shift_JIS pages are written in in practice
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    return "utf-8" if name.startswith("utf-16") or name.startswith("utf-32") else name  # a meta tag cannot mean UTF-16


def header_charset(content_type: str | None) -> str | None:
    for parameter in (content_type or "").split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return codec_name(value)
    return None


def meta_charset(body: bytes) -> str | None:
    match = _META_CHARSET_RE.search(body[:_META_SCAN_BYTES])
    return codec_name(match.group(1)) if match else None


def detect_charset(body: bytes) -> str:
    """A guess for undeclared, non-UTF-8 bytes. charset_normalizer is good at scripts but often calls Latin text
    cp1250 or similar; Latin-script pages are taken as windows-1252, the browsers' default for unlabelled pages."""
    from charset_normalizer import from_bytes

    best = from_bytes(body[:200_000]).best()
    if best is None:
        return "cp1252"
    letters = [c for c in str(best) if ord(c) > 127 and c.isalpha()]
    scripts = Counter(unicodedata.name(c, "?").split(" ")[0] for c in letters)
    latin = scripts.get("LATIN", 0) >= sum(scripts.values()) / 2
    if latin:
        try:
            body.decode("cp1252")
            return "cp1252"
        except UnicodeDecodeError:
            pass
    return codec_name(best.encoding) or "cp1252"


def decode_html(body: bytes, content_type: str | None = None) -> tuple[str, str]:
    """(text, codec): a byte-order mark, then the HTTP header's charset, then a meta tag, then UTF-8, then detection.

    A declared charset that does not decode is replaced by detection when it is UTF-8 (the usual mislabel) and
    otherwise decoded with replacement characters."""
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if body.startswith(bom):
            return body[len(bom):].decode(codec, errors="replace"), codec
    declared = header_charset(content_type) or meta_charset(body)
    if declared:
        try:
            return body.decode(declared), declared
        except UnicodeDecodeError:
            if declared != "utf-8":
                return body.decode(declared, errors="replace"), declared
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    detected = detect_charset(body)
    return body.decode(detected, errors="replace"), detected


# -- text extraction -----------------------------------------------------------------------------------------------

def _quiet_libraries() -> None:
    for name in ("trafilatura", "htmldate", "courlan", "charset_normalizer"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _clean(text: str | None, limit: int = 500) -> str | None:
    text = " ".join((text or "").split())
    return text[:limit] or None


def page_title(tree) -> str | None:
    """og:title, twitter:title, <title> or the first <h1>: cheap, without trafilatura's metadata pass."""
    for xpath in ('/html/head/meta[@property="og:title"]/@content', '/html/head/meta[@name="twitter:title"]/@content',
                  "/html/head/title//text()", "//title//text()", "//h1//text()"):
        found = tree.xpath(xpath)
        title = _clean(" ".join(str(part) for part in found)) if found else None
        if title:
            return title
    return None


def page_date(tree, url: str) -> str | None:
    """The publication date (YYYY-MM-DD) by htmldate's fast heuristics (meta tags, structured data, URL)."""
    import htmldate

    try:
        return htmldate.find_date(tree, url=url, extensive_search=False, original_date=True, outputformat="%Y-%m-%d")
    except Exception:  # a date is a nice-to-have: never lose a page over it
        return None


def extract_main(html_text: str, url: str, config: ExtractConfig) -> tuple[str | None, str | None, str | None]:
    """(main text, title, date) of an HTML page; the text is None when trafilatura finds no main content.

    The HTML is parsed once; trafilatura works on a copy of the tree, title and date are read from the original."""
    import trafilatura

    tree = trafilatura.load_html(html_text)
    if tree is None:
        return None, None, None
    text = trafilatura.extract(tree, url=url, favor_precision=config.favor_precision, favor_recall=config.favor_recall,
                               include_comments=config.include_comments, include_tables=config.include_tables,
                               deduplicate=False, with_metadata=False)
    return text, page_title(tree), page_date(tree, url)


def process_page(page: Page, config: ExtractConfig) -> PageResult:
    """Everything between a fetched body and a document: binary check, decoding, extraction, language, quality."""
    started = time.perf_counter()
    result = _process(page, config)
    result.seconds = time.perf_counter() - started
    return result


def _process(page: Page, config: ExtractConfig) -> PageResult:
    if looks_binary(page.body):
        return PageResult("binary-body", f"{len(page.body):,} bytes that are not text")
    html_text, charset = decode_html(page.body, page.content_type)
    try:
        text, title, date = extract_main(html_text, page.url, config)
    except Exception as error:  # trafilatura or lxml failing on one page must not stop the others
        return PageResult("extract-error", f"{type(error).__name__}: {error}"[:300], charset=charset)
    if not text or not text.strip():
        return PageResult("no-text", "no main text found", title=title, charset=charset)
    language, score = identify_language(text)
    result = PageResult(None, "", text, title, date, language, score, charset, len(text.split()))
    failure = _language_failure(language, score, config) or first_failure(text, language, config.quality)
    if failure is not None:
        result.reason, result.detail = failure
        result.text = ""  # rejects keep their statistics, not their text
    return result


def _language_failure(language: str, score: float, config: ExtractConfig) -> tuple[str, str] | None:
    if config.languages and language not in config.languages:
        return "language", f"{language} ({score:.2f})"
    if config.languages and score < config.min_language_score:
        return "language", f"{language} with low confidence ({score:.2f})"
    return None


# -- evaluation ----------------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"\w+")


def _shingles(text: str, n: int = 4) -> Counter:
    tokens = _WORD_RE.findall(text or "")
    if len(tokens) < n:
        return Counter([tuple(tokens)]) if tokens else Counter()
    return Counter(zip(*(tokens[i:] for i in range(n))))


def extraction_scores(predicted: dict[str, str | None], truth: dict[str, str]) -> tuple[float, float, float]:
    """(precision, recall, F1) of extracted texts against true article bodies, as the article-extraction benchmark
    computes them: word 4-gram multisets per page, each page's counts normalised, P and R averaged over pages."""
    precisions, recalls = [], []
    for key, true_text in truth.items():
        true_grams, predicted_grams = _shingles(true_text), _shingles(predicted.get(key) or "")
        tp = sum((true_grams & predicted_grams).values())
        fp, fn = sum(predicted_grams.values()) - tp, sum(true_grams.values()) - tp
        if fp == 0 and fn == 0:
            precisions.append(1.0)
            recalls.append(1.0)
            continue
        if tp + fp:
            precisions.append(tp / (tp + fp))
        if tp + fn:
            recalls.append(tp / (tp + fn))
    precision = sum(precisions) / len(precisions) if precisions else 0.0
    recall = sum(recalls) / len(recalls) if recalls else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


# -- the sandbox ---------------------------------------------------------------------------------------------------

class _Frames:
    """Length-prefixed pickles over a pair of pipes."""

    def __init__(self, reader: BinaryIO, writer: BinaryIO):
        self.reader, self.writer = reader, writer

    def send(self, value) -> None:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        self.writer.write(struct.pack(">Q", len(data)) + data)
        self.writer.flush()

    def receive(self, deadline: float | None = None):
        size = struct.unpack(">Q", self._read(8, deadline))[0]
        return pickle.loads(self._read(size, deadline))

    def _read(self, size: int, deadline: float | None) -> bytes:
        fd = self.reader.fileno()
        chunks, missing = [], size
        while missing:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    raise TimeoutError
            chunk = os.read(fd, min(missing, 1 << 20))
            if not chunk:
                raise EOFError("the other side closed the pipe")
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)


class ExtractionSandbox:
    """Processes pages in a child process, at most `timeout` seconds each; a page over time kills the child
    (the page is rejected `extract-timeout`) and the next page starts a fresh one. Not thread-safe."""

    STARTUP_SECONDS = 120.0

    def __init__(self, config: ExtractConfig, timeout: float = 30.0, memory_mb: int = 0):
        self.config, self.timeout, self.memory_mb = config, timeout, memory_mb
        self._process: subprocess.Popen | None = None
        self._frames: _Frames | None = None
        self._ready = False
        self.restarts = 0  # children killed or lost, each replaced by a fresh one

    def start(self) -> None:
        """Spawns the child now, so it imports its libraries while the caller goes on; `process` waits for it."""
        if self._process is None:
            self._spawn()

    def process(self, page: Page) -> PageResult:
        started = time.perf_counter()
        if not self._ready:
            self._start()
        assert self._frames is not None
        try:
            try:
                self._frames.send(page)
            except BrokenPipeError:  # the child died while idle (e.g. killed for memory): one fresh start
                self._stop()
                self.restarts += 1
                self._start()
                self._frames.send(page)
            result = self._frames.receive(deadline=time.monotonic() + self.timeout)
        except TimeoutError:
            self._stop()
            self.restarts += 1
            return PageResult("extract-timeout", f"no result within {self.timeout:g}s",
                              seconds=time.perf_counter() - started)
        except (EOFError, BrokenPipeError, OSError) as error:
            code = self._stop()
            self.restarts += 1
            return PageResult("extract-error", f"the extraction process died ({code}): {error}"[:300],
                              seconds=time.perf_counter() - started)
        return result

    def close(self) -> None:
        if self._process is not None:
            try:
                self._frames.writer.close()  # the child ends when its input does
                self._process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._stop()

    def _spawn(self) -> None:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self._process = subprocess.Popen([sys.executable, "-m", "webtext.crawl.extract", "--sandbox"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._frames = _Frames(self._process.stdout, self._process.stdin)
        self._frames.send((self.config, self.memory_mb))

    def _start(self) -> None:
        """Waits for the spawned (or a newly spawned) child to say it is ready."""
        if self._process is None:
            self._spawn()
        assert self._frames is not None
        try:
            ready = self._frames.receive(deadline=time.monotonic() + self.STARTUP_SECONDS)
        except (TimeoutError, EOFError) as error:
            self._stop()
            raise RuntimeError(f"the extraction sandbox did not start: {error!r}") from None
        if ready != "ready":
            self._stop()
            raise RuntimeError(f"the extraction sandbox answered {ready!r} instead of 'ready'")
        self._ready = True

    def _stop(self) -> int | None:
        process, self._process, self._frames, self._ready = self._process, None, None, False
        if process is None:
            return None
        if process.poll() is None:
            process.kill()
        code = process.wait()
        for pipe in (process.stdin, process.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        return code

    def __enter__(self) -> ExtractionSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InlineExtractor:
    """The same interface without a child process or time limit (benchmarks, tests, trusted input)."""

    def __init__(self, config: ExtractConfig):
        self.config = config

    def process(self, page: Page) -> PageResult:
        return process_page(page, self.config)

    def close(self) -> None:
        pass


def _sandbox_main() -> None:
    """The child: read (config, memory) then pages, answer each with its PageResult, until stdin closes."""
    reader = os.fdopen(os.dup(0), "rb", buffering=0)
    writer = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    _quiet_libraries()
    frames = _Frames(reader, writer)
    config, memory_mb = frames.receive()
    if memory_mb:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import trafilatura  # noqa: F401 (imported before answering "ready", so the first page is not slow)

    identify_language("warm up the model")
    frames.send("ready")
    while True:
        try:
            page = frames.receive()
        except EOFError:
            return
        try:
            result = process_page(page, config)
        except MemoryError:
            result = PageResult("extract-error", f"out of memory (limit {memory_mb} MB)")
        frames.send(result)


if __name__ == "__main__" and sys.argv[1:] == ["--sandbox"]:
    from webtext.crawl.extract import _sandbox_main as main  # the importable module, so results pickle by its name

    main()
