"""Page bytes to text as browsers read them: byte-order mark, HTTP and meta charsets, UTF-8, then detection."""
from __future__ import annotations

import codecs
import re
import unicodedata
from collections import Counter

_META_SCAN_BYTES = 8192
_META_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_:.\-]+)""", re.IGNORECASE)
_BINARY_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"%PDF", b"PK\x03\x04", b"\x1f\x8b", b"7z\xbc\xaf", b"RIFF",
                 b"\x00asm", b"\x7fELF", b"%!PS", b"OggS", b"ID3", b"BM", b"wOFF", b"wOF2", b"\xca\xfe\xba\xbe")
_NOT_CONTROL_BYTES = bytes(b for b in range(256) if b >= 0x20 or b in b"\t\n\r\f\x1b")  # deleted to count the rest
# WHATWG Encoding Standard: these labels mean windows-1252 in browsers, and pages are written for browsers.
_WINDOWS_1252_LABELS = frozenset({"ascii", "us-ascii", "latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1", "cp819",
                                  "ibm819", "iso_8859-1", "x-cp1252", "windows-1252", "cp1252"})
# Python codecs that are text encodings but no page's charset (browsers know none of them): the label counts as unknown.
_NOT_PAGE_CHARSETS = frozenset({"undefined", "idna", "punycode", "unicode-escape", "raw-unicode-escape", "utf-7"})


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
    """The Python codec for a charset label as browsers read it (latin-1 and ASCII mean windows-1252), or None for
    an unknown label, including one that names a codec that is not a text encoding (base64, hex, rot13, zlib, …:
    `codecs.lookup` finds them, but they turn bytes into bytes, and a page is never labelled with one)."""
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
        info = codecs.lookup(label)
    except LookupError:
        return None
    name = info.name
    if not getattr(info, "_is_text_encoding", True) or name in _NOT_PAGE_CHARSETS:
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
