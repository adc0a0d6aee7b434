"""URL identity and URL filters for the links stage: `normalize_url` gives the key that merges
submissions of one page, `UrlFilter` rejects links that are not web pages worth fetching."""
from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "DOMAIN_CATEGORIES",
    "MAX_URL_LENGTH",
    "TRACKING_PARAMS",
    "TRACKING_PREFIXES",
    "InvalidUrl",
    "UrlFilter",
    "fetch_url",
    "normalize_url",
    "parse_domain_list",
    "parse_extension_list",
    "unescape_reddit",
    "url_domain",
    "url_host",
]

MAX_URL_LENGTH = 2048

# Query parameters that only say where a click came from; dropped from the identity key.
# Matched case-insensitively on the decoded parameter name.
TRACKING_PREFIXES: tuple[str, ...] = ("utm_", "pk_", "mtm_")  # Google Analytics, Piwik, Matomo
TRACKING_PARAMS: frozenset[str] = frozenset({
    "fbclid",  # Facebook
    "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "_ga", "_gl",  # Google Ads / Analytics
    "msclkid",  # Microsoft Ads
    "yclid",  # Yandex
    "twclid", "ref_src", "ref_url",  # Twitter
    "igshid", "igsh",  # Instagram
    "mc_cid", "mc_eid",  # Mailchimp
    "_hsenc", "_hsmi", "__hssc", "__hstc", "__hsfp", "hsctatracking",  # HubSpot
    "mkt_tok",  # Marketo
    "oly_anon_id", "oly_enc_id",  # Omeda
    "vero_id", "vero_conv",  # Vero
    "wickedid", "rb_clickid", "s_kwcid", "ttclid", "li_fat_id", "epik",
})

# Reddit (and so Pushshift) HTML-escapes these in URLs and titles; nothing else is escaped.
_REDDIT_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&#x27;": "'"}
_REDDIT_ENTITY_RE = re.compile("|".join(re.escape(e) for e in _REDDIT_ENTITIES))

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_STRAY_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters that may stay literal in a path or a query component (RFC 3986 pchar plus "/" and "?").
_PATH_SAFE = "-._~!$&'()*+,;=:@/%"
_QUERY_SAFE = "-._~!$'()*+,;:@/?%"
_CLEAN_PATH_RE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
_CLEAN_QUERY_PART_RE = re.compile(r"[A-Za-z0-9\-._~!$'()*+,;:@/?]*")
_HOST_RE = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


class InvalidUrl(ValueError):
    """A URL that cannot be a link to fetch; `why` is a short machine-readable cause."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(f"{why}: {url[:200]!r}")
        self.url = url
        self.why = why

    def __reduce__(self):  # keep both arguments when pickled across Beam workers
        return (InvalidUrl, (self.url, self.why))


def unescape_reddit(text: str) -> str:
    """Undo Reddit's HTML escaping (`&amp;`, `&lt;`, `&gt;`, quotes) and nothing more.

    `html.unescape` would also turn `&para=1` into `¶=1`, which breaks real query strings."""
    if "&" not in text:
        return text
    return _REDDIT_ENTITY_RE.sub(lambda m: _REDDIT_ENTITIES[m.group(0)], text)


def fetch_url(url: str) -> str:
    """The URL to fetch: Reddit-unescaped and stripped, otherwise exactly what was posted."""
    return unescape_reddit(url).strip()


def normalize_url(url: str) -> str:
    """The identity key of a link (`url_key`); raises `InvalidUrl` for links that cannot be fetched.

    Unescapes `&amp;`, strips whitespace, lower-cases scheme and host, IDNA-encodes the host, drops
    default ports, the fragment (except `#!` routes) and tracking parameters, sorts the query,
    normalises percent-encoding and dot segments, and writes an empty path as "/"."""
    text = fetch_url(url)
    _check_text(url, text)
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS:
        raise InvalidUrl(url, "not-http")
    rest, _, fragment = rest.partition("#")
    rest, has_query, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    host, port = _split_netloc(url, netloc, scheme)
    path = _normalize_path(slash + path)
    query = _normalize_query(query) if has_query else ""
    key = f"{scheme}://{host}{':' + port if port else ''}{path}"
    if query:
        key += "?" + query
    if fragment.startswith("!"):  # hashbang routes (old Twitter, Google's AJAX scheme) name the page
        key += "#" + _normalize_component(fragment, _QUERY_SAFE + "=&#")
    return key


def _check_text(url: str, text: str) -> None:
    if not text:
        raise InvalidUrl(url, "empty")
    if len(text) > MAX_URL_LENGTH:
        raise InvalidUrl(url, "too-long")
    if _CONTROL_RE.search(text):
        raise InvalidUrl(url, "control-char")


def _split_netloc(url: str, netloc: str, scheme: str) -> tuple[str, str]:
    """Validated (host, port) of a netloc; the port is "" when it is the scheme's default."""
    if "@" in netloc:
        raise InvalidUrl(url, "userinfo")
    if netloc.startswith("["):
        literal, bracket, port_part = netloc[1:].partition("]")
        if not bracket or (port_part and not port_part.startswith(":")):
            raise InvalidUrl(url, "bad-host")
        try:
            host = "[" + ipaddress.IPv6Address(literal).compressed + "]"
        except ValueError:
            raise InvalidUrl(url, "bad-host") from None
        port = port_part[1:]
    else:
        host, _, port = netloc.partition(":")
        host = _normalize_hostname(url, host)
    return host, _normalize_port(url, port, scheme)


def _normalize_hostname(url: str, host: str) -> str:
    host = host.rstrip(".")
    if not host:
        raise InvalidUrl(url, "no-host")
    if host.isascii():
        host = host.lower()
    else:
        host = _idna(url, host)
    if len(host) > 253 or not _HOST_RE.fullmatch(host):
        raise InvalidUrl(url, "bad-host")
    return host


def _idna(url: str, host: str) -> str:
    import idna  # a dependency of requests; only needed for the rare non-ASCII host

    try:
        return idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    try:  # IDNA 2003 accepts some names (e.g. emoji) that IDNA 2008 refuses
        return host.lower().encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidUrl(url, "bad-host") from None


def _normalize_port(url: str, port: str, scheme: str) -> str:
    if not port:
        return ""
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidUrl(url, "bad-port")
    port = str(int(port))
    return "" if port == _DEFAULT_PORTS[scheme] else port


def _normalize_path(path: str) -> str:
    if not path:
        return "/"
    if not _CLEAN_PATH_RE.fullmatch(path) or "%" in path:
        path = _normalize_component(path, _PATH_SAFE)
    if "/." in path:
        path = _remove_dot_segments(path)
    return path


def _normalize_query(query: str) -> str:
    params = []
    for part in query.split("&"):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = _normalize_query_part(name)
        if _is_tracking(name):
            continue
        params.append(name + eq + _normalize_query_part(value))
    params.sort()
    return "&".join(params)


def _normalize_query_part(text: str) -> str:
    if "%" in text or not _CLEAN_QUERY_PART_RE.fullmatch(text):
        return _normalize_component(text, _QUERY_SAFE)
    return text


def _is_tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered in TRACKING_PARAMS or lowered.startswith(TRACKING_PREFIXES)


def _normalize_component(text: str, safe: str) -> str:
    """Percent-encode what must be, decode escapes of unreserved characters, upper-case the rest."""
    text = _STRAY_PERCENT_RE.sub("%25", text)
    text = quote(text, safe=safe)
    return _ESCAPE_RE.sub(_normalize_escape, text)


def _normalize_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, on an absolute path."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        elif segment == ".":
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


def url_host(url_key: str) -> str:
    """The host of a normalised URL, without the port."""
    rest = url_key.partition("://")[2]
    end = len(rest)
    for stop in "/?#":
        position = rest.find(stop)
        if position != -1 and position < end:
            end = position
    netloc = rest[:end]
    if netloc.startswith("["):
        return netloc[: netloc.find("]") + 1]
    return netloc.partition(":")[0]


def url_domain(url_key: str) -> str:
    """The host of a normalised URL without its port and without a leading "www."."""
    host = url_host(url_key)
    return host[4:] if host.startswith("www.") else host


def _url_path(url_key: str) -> str:
    rest = url_key.partition("://")[2]
    start = rest.find("/")
    if start == -1:
        return "/"
    path = rest[start:]
    for stop in "?#":
        path = path.partition(stop)[0]
    return path


# Domain categories in the order `UrlFilter.reject` checks them; each is its own reject reason.
DOMAIN_CATEGORIES: tuple[str, ...] = ("wikipedia", "reddit-host", "media-host", "blocked-domain")


def _read_list(path: str | Path | None, default_name: str) -> list[str]:
    """Entries of a list file: one per line, `#` starts a comment, blank lines ignored."""
    if path is None:
        text = resources.files(__package__).joinpath("data", default_name).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    entries = []
    for line in text.splitlines():
        line = line.partition("#")[0].strip()
        if line:
            entries.append(line)
    return entries


def parse_domain_list(lines: list[str]) -> dict[str, set[str]]:
    """Domains by category from lines `domain [category]`; the category defaults to blocked-domain."""
    categories: dict[str, set[str]] = {name: set() for name in DOMAIN_CATEGORIES}
    for line in lines:
        parts = line.split()
        if len(parts) > 2 or (len(parts) == 2 and parts[1] not in categories):
            raise ValueError(f"bad domain list entry {line!r}: expected 'domain [{'|'.join(DOMAIN_CATEGORIES)}]'")
        category = parts[1] if len(parts) == 2 else "blocked-domain"
        categories[category].add(parts[0].lower().strip(".").removeprefix("*."))
    return categories


def parse_extension_list(lines: list[str]) -> set[str]:
    """Extensions as ".ext", lower case, from lines written with or without the dot."""
    return {"." + line.split()[0].lower().lstrip(".") for line in lines}


@dataclass(frozen=True)
class UrlFilter:
    """Domain and extension blocklists applied to normalised URLs (a domain also covers its subdomains)."""

    blocked_domains: frozenset[str] = frozenset()
    media_domains: frozenset[str] = frozenset()
    reddit_domains: frozenset[str] = frozenset()
    blocked_extensions: frozenset[str] = frozenset()
    wikipedia_domains: frozenset[str] = frozenset({"wikipedia.org"})
    _domain_rank: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rank: dict[str, int] = {}
        for index, domains in enumerate(self._category_sets()):
            for domain in domains:
                rank.setdefault(domain, index)
        object.__setattr__(self, "_domain_rank", rank)

    def _category_sets(self) -> tuple[frozenset[str], ...]:
        return (self.wikipedia_domains, self.reddit_domains, self.media_domains, self.blocked_domains)

    @classmethod
    def default(cls) -> UrlFilter:
        """The lists shipped in webtext/crawl/data (read once per process; the filter is immutable)."""
        return _shipped_filter()

    @classmethod
    def from_files(cls, domains_path: str | Path | None = None, extensions_path: str | Path | None = None) -> UrlFilter:
        """Lists from files in the shipped format; a path left out uses the shipped file."""
        categories = parse_domain_list(_read_list(domains_path, "blocked_domains.txt"))
        extensions = parse_extension_list(_read_list(extensions_path, "blocked_extensions.txt"))
        return cls(
            blocked_domains=frozenset(categories["blocked-domain"]),
            media_domains=frozenset(categories["media-host"]),
            reddit_domains=frozenset(categories["reddit-host"]),
            wikipedia_domains=frozenset(categories["wikipedia"]),
            blocked_extensions=frozenset(extensions),
        )

    def domain_reason(self, host: str) -> tuple[str, str] | None:
        """(reason, matched domain) for a host in one of the domain lists, else None."""
        rank = self._domain_rank
        best: tuple[int, str] | None = None
        suffix = host
        while True:
            index = rank.get(suffix)
            if index is not None and (best is None or index < best[0]):
                best = (index, suffix)
            dot = suffix.find(".")
            if dot == -1:
                break
            suffix = suffix[dot + 1:]
        if best is None:
            return None
        return DOMAIN_CATEGORIES[best[0]], best[1]

    def extension_of(self, url_key: str) -> str:
        """The lower-cased extension (".pdf") of the URL's last path segment, or ""."""
        segment = _url_path(url_key).rpartition("/")[2]
        dot = segment.rfind(".")
        return segment[dot:].lower() if dot > 0 else ""

    def reject(self, url_key: str) -> tuple[str, str] | None:
        """(reason, detail) when the link is not to be fetched, else None.

        Reasons, checked in this order: wikipedia, reddit-host, media-host, blocked-domain, blocked-extension."""
        found = self.domain_reason(url_host(url_key))
        if found is not None:
            return found
        extension = self.extension_of(url_key)
        if extension and extension in self.blocked_extensions:
            return "blocked-extension", extension
        return None


@functools.lru_cache(maxsize=1)
def _shipped_filter() -> UrlFilter:
    return UrlFilter.from_files()
