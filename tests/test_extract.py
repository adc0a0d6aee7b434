"""Extraction: charset decoding from bytes, binary sniffing, title and date, language, and the sandbox."""
from __future__ import annotations

import codecs
import time

import pytest

from tests.testweb import ACCENTED, JAPANESE, SMART, legacy_page
from webtext.crawl.extract.charset import codec_name, decode_html, looks_binary
from webtext.crawl.extract.pages import ExtractConfig, Page, page_title, process_page
from webtext.crawl.extract.sandbox import ExtractionSandbox, InlineExtractor
from webtext.pipeline.demo_web import Article, german_article_text, render_article, sample_articles

RUSSIAN = ("Москва является столицей России и крупнейшим городом страны. "
           "В городе много музеев, театров и парков, а метро считается одним из самых красивых в мире. ") * 3


@pytest.fixture(scope="module")
def article_html() -> bytes:
    return render_article(sample_articles(1)[0], "The Test Journal").encode("utf-8")


@pytest.mark.parametrize("label, codec", [("ISO-8859-1", "cp1252"), ("latin1", "cp1252"), ("US-ASCII", "cp1252"),
                                          ("utf8", "utf-8"), ("UTF-16", "utf-8"), ("Shift_JIS", "shift_jis"),
                                          ("x-sjis", "cp932"), ("windows-1251", "cp1251"), ("bogus", None)])
def test_charset_labels_are_read_as_browsers_read_them(label, codec):
    assert codec_name(label) == codec


def test_declared_charsets_header_first_then_meta():
    body = "<html><head><meta charset='windows-1251'></head><body>Привет</body></html>".encode("cp1251")
    assert decode_html(body, "text/html; charset=windows-1251")[1] == "cp1251"
    assert decode_html(body, "text/html")[1] == "cp1251"  # from the meta tag
    text, codec = decode_html(body.replace(b"windows-1251", b"koi8-r"), "text/html; charset=windows-1251")
    assert codec == "cp1251" and "Привет" in text  # the header wins over the meta tag
    equiv = b'<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1"><p>caf\xe9 \x93x\x94</p>'
    text, codec = decode_html(equiv)
    assert codec == "cp1252" and "café “x”" in text


def test_byte_order_marks_win():
    body = codecs.BOM_UTF16_LE + "<p>naïve</p>".encode("utf-16-le")
    assert decode_html(body, "text/html; charset=iso-8859-1") == ("<p>naïve</p>", "utf-16-le")
    assert decode_html(codecs.BOM_UTF8 + "<p>é</p>".encode())[0] == "<p>é</p>"


@pytest.mark.parametrize("text, encoding, expected_codec, needle", [
    (ACCENTED, "latin-1", "cp1252", "crème brûlée"),
    (SMART + ACCENTED, "cp1252", "cp1252", "“it’s fine” — and paid €5"),
    (JAPANESE * 2, "shift_jis", "cp932", "東京は日本の首都"),
    (RUSSIAN, "cp1251", "cp1251", "Москва является столицей"),
    (ACCENTED, "utf-8", "utf-8", "crème brûlée"),
])
def test_undeclared_charsets_are_detected(text, encoding, expected_codec, needle):
    body = legacy_page(text, encoding, "Page")
    decoded, codec = decode_html(body, "text/html")
    assert codec == expected_codec
    assert needle in decoded


def test_a_page_mislabelled_utf8_falls_back_to_detection():
    body = legacy_page(SMART + ACCENTED, "cp1252", "Page")
    decoded, codec = decode_html(body, "text/html; charset=utf-8")
    assert codec == "cp1252" and "“it’s fine”" in decoded


def test_binary_sniffing(article_html):
    assert looks_binary(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    assert looks_binary(bytes(range(256)) * 4)
    assert looks_binary(b"%PDF-1.4 ...")
    assert not looks_binary(article_html)
    assert not looks_binary(codecs.BOM_UTF16_LE + "<html>".encode("utf-16-le"))
    assert not looks_binary(legacy_page(JAPANESE, "shift_jis", "x"))


def test_title_prefers_og_title_then_title_then_h1():
    from trafilatura import load_html

    assert page_title(load_html('<html><head><meta property="og:title" content="OG"><title>T</title></head>'
                                '<body><h1>H</h1><p>x</p></body></html>')) == "OG"
    assert page_title(load_html("<html><head><title>  The\n title </title></head><body><p>x</p></body></html>")) \
        == "The title"
    assert page_title(load_html("<html><body><h1>Heading</h1><p>text</p></body></html>")) == "Heading"


def test_an_article_becomes_a_document_without_boilerplate_or_comments(article_html):
    article = sample_articles(1)[0]
    result = process_page(Page("https://example.com/a", article_html, "text/html"), ExtractConfig())
    assert result.ok, result
    assert result.title == article.title
    assert result.date == article.published
    assert result.language == "en" and result.language_score > 0.9
    assert result.charset == "utf-8"
    assert article.paragraphs[0][:80] in result.text
    assert result.n_words == len(result.text.split()) > 100
    for boilerplate in ["Related posts", "All rights reserved", "Subscribe", *article.comments]:
        assert boilerplate not in result.text


def test_languages_filter_and_all():
    german = Article("de", "Neue Leseräume", [german_article_text()], "Redaktion", "2017-02-01")
    body = render_article(german, "Zeitung").encode()
    result = process_page(Page("https://example.de/a", body), ExtractConfig())
    assert result.reason == "language" and result.detail.startswith("de ")
    assert result.text == ""
    kept = process_page(Page("https://example.de/a", body), ExtractConfig(languages=()))
    assert kept.ok and kept.language == "de"


@pytest.mark.parametrize("body, reason", [
    (b"\x89PNG\r\n\x1a\n" + bytes(200), "binary-body"),
    (b"<html><head><title>t</title></head><body></body></html>", "no-text"),
])
def test_pages_without_text(body, reason):
    assert process_page(Page("https://example.com/", body), ExtractConfig()).reason == reason


def big_page(paragraphs: int) -> bytes:
    text = " ".join(sample_articles(3)[2].paragraphs)
    return ("<html><body>" + "".join(f"<div><p>{i} {text}</p></div>" for i in range(paragraphs))
            + "</body></html>").encode()


def test_the_sandbox_gives_the_same_results_as_inline_extraction(article_html):
    pages = [Page("https://example.com/a", article_html), Page("https://example.com/b", b"\x89PNG" + bytes(100))]
    inline = InlineExtractor(ExtractConfig())
    with ExtractionSandbox(ExtractConfig(), timeout=30) as sandbox:
        for page in pages:
            got, expected = sandbox.process(page), inline.process(page)
            got.seconds = expected.seconds = 0.0
            assert got == expected


def test_a_page_over_the_time_limit_is_rejected_and_the_sandbox_recovers(article_html):
    with ExtractionSandbox(ExtractConfig(), timeout=0.05) as sandbox:
        sandbox.process(Page("https://example.com/warm", article_html))  # start the process first
        started = time.monotonic()
        slow = sandbox.process(Page("https://example.com/slow", big_page(1500)))
        assert slow.reason == "extract-timeout"
        assert time.monotonic() - started < 1.0
        sandbox.timeout = 30
        after = sandbox.process(Page("https://example.com/after", article_html))
        assert after.ok and sandbox.restarts == 1


def test_a_sandbox_that_died_while_idle_is_restarted(article_html):
    with ExtractionSandbox(ExtractConfig(), timeout=30) as sandbox:
        assert sandbox.process(Page("https://example.com/1", article_html)).ok
        sandbox._process.kill()
        sandbox._process.join()
        assert sandbox.process(Page("https://example.com/2", article_html)).ok


def test_a_page_that_needs_too_much_memory_is_a_reject_not_a_dead_worker(article_html):
    huge_tree = ("<html><body>" + "<div><p>word and more words here</p></div>" * 150_000 + "</body></html>").encode()
    with ExtractionSandbox(ExtractConfig(), timeout=60, memory_mb=400) as sandbox:
        result = sandbox.process(Page("https://example.com/huge", huge_tree))
        assert result.reason == "extract-error" and "MemoryError" in result.detail
        assert sandbox.process(Page("https://example.com/after", article_html)).ok


NOT_TEXT_CODECS = ["base64", "hex", "rot13", "uu", "zlib", "bz2", "quopri", "utf-7", "undefined"]


@pytest.mark.parametrize("label", NOT_TEXT_CODECS)
def test_a_charset_that_names_no_text_encoding_is_unknown(label):
    assert codec_name(label) is None
    body = "<p>naïve café</p>".encode("cp1252")
    assert decode_html(body, f"text/html; charset={label}") == decode_html(body)  # detected, as if undeclared


def test_pages_labelled_with_non_text_codecs_are_extracted_without_restarting_the_sandbox(article_html):
    meta = article_html.replace(b"<head>", b'<head><meta charset="base64">', 1)
    with ExtractionSandbox(ExtractConfig(), timeout=30) as sandbox:
        assert sandbox.process(Page("https://example.com/warm", article_html)).ok
        child = sandbox._process
        for index, label in enumerate(NOT_TEXT_CODECS):
            result = sandbox.process(Page(f"https://example.com/{index}", article_html, f"text/html; charset={label}"))
            assert result.ok and result.charset == "utf-8", (label, result.reason, result.detail)
        result = sandbox.process(Page("https://example.com/meta", meta, "text/html"))
        assert result.ok and result.charset == "utf-8"
        assert sandbox.restarts == 0 and sandbox._process is child and child.is_alive()
