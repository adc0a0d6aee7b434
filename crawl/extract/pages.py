"""Page bytes to a document: binary check, charset, trafilatura main text with title and date, language, quality."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from .charset import decode_html, looks_binary
from .language import identify_language
from .quality import QualityConfig, first_failure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractConfig:
    """Extraction settings (measured on the extraction benchmark: docs/crawl.md) and the filters after it."""

    extraction: str = field(default="precision", metadata={
        "help": "trafilatura's trade-off", "choices": ("precision", "balanced", "recall")})
    languages: tuple[str, ...] = field(default=("en",), metadata={
        "help": "languages kept (ISO 639-1 codes), or 'all'"})  # empty, like 'all': keep every language
    min_language_score: float = field(default=0.5, metadata={"min": 0, "max": 1, "help": "lowest language-ID probability kept"})
    include_comments: bool = False
    include_tables: bool = True
    quality: QualityConfig = field(default_factory=QualityConfig)

    def __post_init__(self) -> None:
        languages = tuple(code.lower() for code in self.languages)
        object.__setattr__(self, "languages", () if "all" in languages else languages)

    @property
    def favor_precision(self) -> bool:
        return self.extraction == "precision"

    @property
    def favor_recall(self) -> bool:
        return self.extraction == "recall"


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


def quiet_libraries() -> None:
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
