"""An offline sample web: realistic article pages written from the Python standard library's own documentation,
a few bad pages, and `LoopbackWeb`, which serves sites on 127.0.0.1 (one port per host) and checks politeness.

The demo and the tests use it: `sample_site_pages(n)` makes the pages, `serve_sample_web(n)` serves them with
robots.txt over several hosts and returns their URLs.
"""
from __future__ import annotations

import datetime as dt
import errno
import html
import json
import importlib
import inspect
import logging
import random
import re
import socket
import ssl
import struct
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator, Union

log = logging.getLogger(__name__)

# Modules whose docstrings are read; importing them has no side effects.
DOC_MODULES = (
    "abc argparse ast asyncio base64 bisect calendar cmd codecs collections configparser contextlib copy csv "
    "dataclasses datetime decimal difflib doctest email enum filecmp fnmatch fractions ftplib functools getopt "
    "gettext glob gzip hashlib heapq hmac html.parser http.client http.cookiejar http.server imaplib inspect io "
    "ipaddress itertools json logging mailbox mimetypes numbers operator optparse os pathlib pickle pkgutil platform "
    "poplib pprint queue random re sched secrets selectors shelve shlex shutil smtplib socket socketserver sqlite3 "
    "statistics string struct subprocess tarfile tempfile textwrap threading timeit tokenize traceback types typing "
    "unittest urllib.parse urllib.request uuid warnings weakref wave xml.dom.minidom xml.etree.ElementTree zipfile"
).split()
MIN_ARTICLE_WORDS = 180
MAX_ARTICLE_WORDS = 420
_NOT_PROSE = re.compile(r"[{}\[\]<>=`@#\\|]|::|\.\.\.|\bhttps?:")


# -- text from the standard library --------------------------------------------------------------------------------

def _prose_paragraphs(text: str) -> list[str]:
    """The plain-prose paragraphs of a docstring or documentation topic (no code, lists, tables or markup)."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.split("\n") if line.strip()]
        if not lines or any(line.startswith(("  ", ">>>", "..", "*", "-", "|", "=", ":", "+")) for line in lines):
            continue
        prose = " ".join(line.strip() for line in lines).replace("*", "").replace('"', "")
        prose = re.sub(r"\s+", " ", prose).strip()
        if len(prose.split()) < 15 or not prose.endswith(".") or _NOT_PROSE.search(prose):
            continue
        paragraphs.append(prose)
    return paragraphs


def _docstrings(module_name: str) -> list[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(module_name)
    except Exception:  # a module missing from this Python build
        return []
    objects = [module]
    for name, value in sorted(vars(module).items()):
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(value):
            objects.append(value)
            objects += [f for n, f in sorted(vars(value).items()) if not n.startswith("_") and inspect.isfunction(f)]
        elif inspect.isfunction(value):
            objects.append(value)
    with warnings.catch_warnings():  # some modules warn when their deprecated aliases are touched
        warnings.simplefilter("ignore")
        return [inspect.getdoc(o) or "" for o in objects]


def stdlib_sources() -> list[tuple[str, list[str]]]:
    """(topic, prose paragraphs) from module docstrings and the language reference topics, in a stable order."""
    sources: list[tuple[str, list[str]]] = []
    seen: set[str] = set()

    def add(topic: str, texts: list[str]) -> None:
        paragraphs = []
        for text in texts:
            for paragraph in _prose_paragraphs(text):
                if paragraph not in seen:
                    seen.add(paragraph)
                    paragraphs.append(paragraph)
        if paragraphs:
            sources.append((topic, paragraphs))

    for name in DOC_MODULES:
        add(f"the {name} module", _docstrings(name))
    try:
        from pydoc_data.topics import topics
    except ImportError:
        topics = {}
    for key in sorted(topics):
        add(key.replace("-", " "), [topics[key]])
    return sources


# -- articles ------------------------------------------------------------------------------------------------------

@dataclass
class Article:
    slug: str
    title: str
    paragraphs: list[str]
    author: str
    published: str  # YYYY-MM-DD
    comments: list[str] = field(default_factory=list)


_AUTHORS = ["Ada Fernsby", "Tomas Reyes", "Mira Okafor", "Jun Takeda", "Lena Whitcombe", "Omar Haddad",
            "Priya Raman", "Colm Byrne", "Sofia Lindqvist", "Kwame Mensah"]
_TITLE_FORMS = ["Notes on {}", "A closer look at {}", "What to know about {}", "Understanding {}",
                "A field guide to {}", "How {} works", "Getting started with {}", "Revisiting {}"]
_COMMENTS = ["Great write-up, thanks for sharing!", "This cleared up a lot for me.", "First!",
             "I disagree with the second point, but nice post.", "Bookmarked for later.",
             "Could you do a follow-up on error handling?", "Thanks, this saved me an afternoon."]


def sample_articles(n: int, seed: int = 0) -> list[Article]:
    """Up to `n` articles of 180-420 words of real English prose, each paragraph used once (pages are distinct).

    A paragraph that repeats word 5-grams of its article is skipped: docstrings of sibling functions often share
    whole phrases, and the crawl's repetition rules would rightly reject such an article."""
    rng = random.Random(seed)
    articles: list[Article] = []
    pending: list[str] = []
    grams: set[tuple[str, ...]] = set()
    topic = ""
    target = rng.randint(MIN_ARTICLE_WORDS, MAX_ARTICLE_WORDS)
    for source_topic, paragraphs in stdlib_sources():
        for paragraph in paragraphs:
            words = paragraph.split()
            paragraph_grams = [tuple(words[i:i + 5]) for i in range(len(words) - 4)]
            if len(set(paragraph_grams) | grams) < len(paragraph_grams) + len(grams):
                continue
            if not pending:
                topic = source_topic
            pending.append(paragraph)
            grams.update(paragraph_grams)
            if sum(len(p.split()) for p in pending) >= target:
                articles.append(_article(len(articles), topic, pending, rng))
                if len(articles) == n:
                    return articles
                pending, grams, target = [], set(), rng.randint(MIN_ARTICLE_WORDS, MAX_ARTICLE_WORDS)
    return articles


def _article(index: int, topic: str, paragraphs: list[str], rng: random.Random) -> Article:
    title = rng.choice(_TITLE_FORMS).format(topic)
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") + f"-{index}"
    published = (dt.date(2016, 1, 1) + dt.timedelta(days=rng.randrange(700))).isoformat()
    comments = rng.sample(_COMMENTS, rng.randint(1, 4))
    return Article(slug, title[0].upper() + title[1:], list(paragraphs), rng.choice(_AUTHORS), published, comments)


def render_article(article: Article, site: str, related: list[tuple[str, str]] = ()) -> str:
    """A full HTML page: head metadata, navigation, the article, a related-posts box, comments and a footer."""
    esc = html.escape
    body = "\n".join(f"      <p>{esc(p)}</p>" for p in article.paragraphs)
    related_items = "\n".join(f'        <li><a href="{esc(href)}">{esc(title)}</a></li>' for href, title in related)
    comments = "\n".join(
        f'      <div class="comment"><span class="user">reader{i + 1}</span><p>{esc(c)}</p></div>'
        for i, c in enumerate(article.comments))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{esc(article.title)} | {esc(site)}</title>
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta property="og:title" content="{esc(article.title)}">
  <meta property="article:published_time" content="{article.published}T09:00:00Z">
  <meta name="author" content="{esc(article.author)}">
  <link rel="stylesheet" href="/static/site.css">
</head>
<body>
  <header class="site-header">
    <a class="logo" href="/">{esc(site)}</a>
    <nav><ul><li><a href="/">Home</a></li><li><a href="/archive/">Archive</a></li>
      <li><a href="/about/">About</a></li><li><a href="/subscribe/">Subscribe</a></li></ul></nav>
  </header>
  <div class="breadcrumbs"><a href="/">Home</a> &rsaquo; <a href="/archive/">Articles</a></div>
  <main>
    <article>
      <h1>{esc(article.title)}</h1>
      <p class="byline">By {esc(article.author)} &middot; <time datetime="{article.published}">{article.published}</time></p>
{body}
    </article>
    <aside class="related">
      <h2>Related posts</h2>
      <ul>
{related_items}
      </ul>
    </aside>
    <section class="comments" id="comments">
      <h2>{len(article.comments)} comments</h2>
{comments}
    </section>
  </main>
  <footer class="site-footer">
    <p>&copy; 2017 {esc(site)}. All rights reserved. <a href="/privacy/">Privacy policy</a> &middot;
    <a href="/terms/">Terms of use</a></p>
  </footer>
</body>
</html>
"""


# -- serving: one ThreadingHTTPServer per host on 127.0.0.1, with a politeness log ---------------------------------

@dataclass
class Response:
    """A canned response: status, headers and body."""

    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Route = Union[Response, Callable[["RequestContext"], None]]


@dataclass
class Visit:
    path: str
    started: float  # time.monotonic()
    ended: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class HostLog:
    """Every request a host saw, to check that none arrived while another was in flight or sooner than a delay.

    A visit's end is taken just before the server starts sending its last part (or when it last saw the client, if
    the client left first): never later than the client finished, so a busy machine's thread scheduling cannot make
    a polite client look rude; a rude one is still caught unless its gap is short by a few milliseconds only."""

    def __init__(self) -> None:
        self.visits: list[Visit] = []
        self._lock = threading.Lock()

    def begin(self, path: str, headers: dict[str, str] | None = None) -> Visit:
        visit = Visit(path, time.monotonic(), headers=dict(headers or {}))
        with self._lock:
            self.visits.append(visit)
        return visit

    def end(self, visit: Visit, at: float) -> None:
        with self._lock:
            visit.ended = at

    def _in_order(self) -> list[Visit]:
        with self._lock:
            return sorted(self.visits, key=lambda v: v.started)

    @property
    def overlaps(self) -> list[str]:
        """Paths of requests that arrived before an earlier one had ended."""
        found, latest_end = [], float("-inf")
        for visit in self._in_order():
            if visit.started < latest_end:
                found.append(visit.path)
            latest_end = max(latest_end, visit.ended or float("inf"))  # one still running blocks all later ones
        return found

    def gaps(self) -> list[tuple[str, float]]:
        """(path, seconds since the previous request to this host ended) for every request but the first."""
        visits = self._in_order()
        return [(b.path, b.started - a.ended) for a, b in zip(visits, visits[1:])]

    def too_soon(self, delay: float, tolerance: float = 0.001) -> list[tuple[str, float]]:
        return [(path, gap) for path, gap in self.gaps() if gap < delay - tolerance]

    def paths(self) -> list[str]:
        return [v.path for v in self._in_order()]


class RequestContext:
    """What a route callable gets: the request, the host it came to, and ways to answer."""

    def __init__(self, handler: BaseHTTPRequestHandler, site: "Site"):
        self.handler, self.site = handler, site
        self.path = handler.path
        self.headers = handler.headers
        self.client_left_at = time.monotonic()  # until the route knows better: the client was here when it asked

    def left_at(self, moment: float) -> None:
        """Records when the exchange ended for the server: it began sending its last part, or last saw the client."""
        self.client_left_at = moment

    def send(self, response: Response) -> None:
        handler = self.handler
        handler.send_response(response.status)
        if response.content_type:
            handler.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            handler.send_header(name, value)
        if "Content-Length" not in response.headers:
            handler.send_header("Content-Length", str(len(response.body)))
        self.left_at(time.monotonic())  # the client cannot be done before we start sending
        handler.end_headers()
        handler.wfile.write(response.body)
        handler.wfile.flush()

    def send_head(self, status: int, headers: dict[str, str]) -> None:
        """Status and headers only, for routes that write their body themselves (the connection then closes)."""
        self.handler.send_response(status)
        for name, value in headers.items():
            self.handler.send_header(name, value)
        self.handler.send_header("Connection", "close")
        self.handler.close_connection = True
        self.left_at(time.monotonic())
        self.handler.end_headers()
        self.handler.wfile.flush()

    def write(self, data: bytes) -> bool:
        """Writes part of a body; False once the client has gone."""
        started = time.monotonic()
        try:
            self.handler.wfile.write(data)
            self.handler.wfile.flush()
        except OSError:
            return False
        self.left_at(started)  # a write that went through began while the client was there
        return True

    def client_gone(self) -> bool:
        """Whether the client closed its side (readable with no data)."""
        import select

        checked = time.monotonic()
        sock = self.handler.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            gone = bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            gone = True
        if not gone:
            self.left_at(checked)
        return gone

    def reset(self) -> None:
        """Aborts the connection with a TCP reset."""
        self.left_at(time.monotonic())
        sock = self.handler.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.handler.close_connection = True
        sock.close()


@dataclass
class Site:
    """One host: its routes (path with query -> response or callable) and its robots.txt (None: 404)."""

    name: str
    routes: dict[str, Route] = field(default_factory=dict)
    robots: str | None = "User-agent: *\nDisallow: /private/\n"
    port: int = 0
    log: HostLog = field(default_factory=HostLog)
    host: str = "127.0.0.1"  # the name in URLs (tests may resolve another name to 127.0.0.1)
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server context

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "loopback/1.0"
    site: Site

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        visit = self.site.log.begin(self.path, dict(self.headers.items()))
        context = RequestContext(self, self.site)
        try:
            self._answer(context)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.site.log.end(visit, context.client_left_at)

    def _answer(self, context: RequestContext) -> None:
        if self.path == "/robots.txt" and "/robots.txt" not in self.site.routes:
            if self.site.robots is None:
                context.send(Response(b"not found", "text/plain", 404))
            else:
                context.send(Response(self.site.robots.encode(), "text/plain"))
            return
        route = self.site.routes.get(self.path)
        if route is None:
            context.send(Response(b"<html><body><h1>Not found</h1></body></html>", status=404))
        elif isinstance(route, Response):
            context.send(route)
        else:
            route(context)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("%s %s", self.site.name, format % args)


class LoopbackWeb:
    """Serves sites on 127.0.0.1, one port (so one host) per site, each in its own threads. A context manager.

    A site's port 0 means a fresh one; with `fresh_if_taken`, a site whose port is taken by another process gets a
    fresh port too, and `moved` says which (site name -> (asked port, port given))."""

    def __init__(self, sites: list[Site], fresh_if_taken: bool = False):
        self.sites = sites
        self.fresh_if_taken = fresh_if_taken
        self.moved: dict[str, tuple[int, int]] = {}
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []

    def _bind(self, site: Site, handler: type[_Handler]) -> ThreadingHTTPServer:
        try:
            return ThreadingHTTPServer(("127.0.0.1", site.port), handler)
        except OSError as error:
            if error.errno != errno.EADDRINUSE or not site.port:
                raise
            if not self.fresh_if_taken:
                raise OSError(error.errno, f"{site.name}: port {site.port} of 127.0.0.1 is taken") from None
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            self.moved[site.name] = (site.port, server.server_address[1])
            return server

    def __enter__(self) -> LoopbackWeb:
        for site in self.sites:
            handler = type(f"Handler_{site.name}", (_Handler,), {"site": site})
            try:
                server = self._bind(site, handler)
            except BaseException:
                self.__exit__()  # the sites already serving stop
                raise
            server.daemon_threads = True
            if site.tls is not None:
                server.socket = site.tls.wrap_socket(server.socket, server_side=True)
            site.port = server.server_address[1]
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"loopback-{site.name}", daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def site(self, name: str) -> Site:
        return next(s for s in self.sites if s.name == name)

    def overlaps(self) -> dict[str, list[str]]:
        return {s.name: s.log.overlaps for s in self.sites if s.log.overlaps}

    def too_soon(self, delays: dict[str, float] | float) -> dict[str, list[tuple[str, float]]]:
        """Requests that came sooner than the host's delay after the previous one ended, by host."""
        found = {}
        for site in self.sites:
            delay = delays if isinstance(delays, float) else delays.get(site.name, 0.0)
            bad = site.log.too_soon(delay)
            if bad:
                found[site.name] = bad
        return found


# -- many hosts on one server: every 127.x.y.z address reaches one socket bound to 0.0.0.0 (Linux) -----------------

TINY_PAGE = (b"<!DOCTYPE html><html><head><title>Page</title></head><body><article>"
             + b"<p>The quick brown fox jumps over the lazy dog while the band plays on.</p>" * 60
             + b"</article></body></html>")


def loopback_address(index: int) -> str:
    """The index-th of many distinct loopback addresses, from 127.1.0.1 on (never 127.0.0.1, which tests share)."""
    return f"127.{1 + index // 64000}.{index // 250 % 256}.{1 + index % 250}"


class ManyAddressServer:
    """One asyncio HTTP/1.1 server (keep-alive) on 0.0.0.0, so every loopback address is a host of its own on one
    port: robots.txt (`robots`) and a small page at every other path, each after `latency` seconds. Counts requests
    per (address, path) in `hits`. A context manager; serves from a thread of its own or, via `serve_forever`, here."""

    def __init__(self, latency: float = 0.0, robots: bytes = b"User-agent: *\nDisallow: /private/\n",
                 page: bytes = TINY_PAGE):
        self.latency, self.robots, self.page = latency, robots, page
        self.port = 0
        self.hits: dict[tuple[str, bytes], int] = {}  # only the server's event loop writes it
        self._ready = threading.Event()
        self._stop: threading.Event = threading.Event()
        self._thread: threading.Thread | None = None

    async def handle(self, reader, writer) -> None:
        import asyncio

        address = writer.get_extra_info("sockname")[0]
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                path = request.split(b" ", 2)[1]
                self.hits[address, path] = self.hits.get((address, path), 0) + 1
                if self.latency:
                    await asyncio.sleep(self.latency)
                body, kind = (self.robots, b"text/plain") if path == b"/robots.txt" else \
                    (self.page, b"text/html; charset=utf-8")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + kind + b"\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    def serve_forever(self, stop: threading.Event | None = None, on_port: Callable[[int], None] | None = None) -> None:
        """Serves until `stop` is set; `on_port` gets the port once it listens."""
        import asyncio

        stop = stop or self._stop

        async def main() -> None:
            server = await asyncio.start_server(self.handle, "0.0.0.0", self.port, backlog=1024)
            self.port = server.sockets[0].getsockname()[1]
            if on_port:
                on_port(self.port)
            self._ready.set()
            async with server:
                while not stop.is_set():
                    await asyncio.sleep(0.05)

        asyncio.run(main())

    def __enter__(self) -> ManyAddressServer:
        self._thread = threading.Thread(target=self.serve_forever, name="many-addresses", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the many-address server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def url(self, index: int, path: str = "/page.html") -> str:
        return f"http://{loopback_address(index)}:{self.port}{path}"


# -- the sample web ------------------------------------------------------------------------------------------------

@dataclass
class SamplePage:
    """One page of the sample web and what the crawl should make of it (`expect`: "doc" or a reject reason)."""

    site: str
    path: str
    title: str
    expect: str
    response: Response
    url: str = ""


def german_article_text() -> str:
    """A short German news text (for the language filter)."""
    return ("Die Stadtbibliothek hat am Montag ihre neuen Leseräume eröffnet. Nach zwei Jahren Umbau stehen den "
            "Besucherinnen und Besuchern nun mehr Arbeitsplätze, eine größere Kinderabteilung und ein ruhiger "
            "Lesesaal zur Verfügung. Die Leiterin der Bibliothek sagte, man habe vor allem auf das Licht und auf "
            "bequeme Stühle geachtet, weil viele Menschen dort den ganzen Tag lernen. Am Wochenende gibt es "
            "Führungen durch das Haus, und wer einen neuen Ausweis beantragt, bekommt ihn im ersten Jahr kostenlos. "
            "Die Stadt hat für den Umbau fast vier Millionen Euro ausgegeben, mehr als ursprünglich geplant war.")


def sample_site_pages(n: int = 60, sites: int = 4, seed: int = 0, bad_pages: bool = True) -> list[SamplePage]:
    """`n` good article pages spread over `sites` hosts (site0, site1, …), plus, with `bad_pages`, one page of each
    kind the crawl must reject and two copies of articles (an exact and a near duplicate, for the dedup stage)."""
    articles = sample_articles(n, seed)
    if len(articles) < n:
        log.warning("the standard library's documentation gave %d articles, not %d", len(articles), n)
    names = [f"site{i}" for i in range(sites)]
    pages: list[SamplePage] = []
    for index, article in enumerate(articles):
        site = names[index % sites]
        related = [(f"/posts/{a.slug}.html", a.title) for a in articles[index + 1:index + 4]]
        markup = render_article(article, f"The {site.title()} Journal", related).encode("utf-8")
        pages.append(SamplePage(site, f"/posts/{article.slug}.html", article.title, "doc", Response(markup)))
    if bad_pages and articles:
        pages += _bad_pages(articles, names, seed)
    return pages


def _bad_pages(articles: list[Article], names: list[str], seed: int) -> list[SamplePage]:
    rng = random.Random(seed + 1)
    first = articles[0]
    near = Article(first.slug + "-copy", first.title, first.paragraphs[:-1] + ["This story was updated."],
                   first.author, first.published)
    short = Article("short-note", "A short note", ["We will be back soon with more posts about the library."],
                    "Editor", "2017-01-01")
    lorem = Article("lorem", "Coming soon", articles[-1].paragraphs[:2] + [
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore."],
        "Editor", "2017-01-01")
    german = Article("bibliothek", "Neue Leseräume", [german_article_text()], "Redaktion", "2017-02-01")
    noisy = bytes(rng.randrange(256) for _ in range(4000))
    site = lambda i: names[i % len(names)]  # noqa: E731
    render = lambda a, i: render_article(a, f"The {site(i).title()} Journal").encode()  # noqa: E731
    return [
        SamplePage(site(1), f"/mirror/{first.slug}.html", first.title, "doc", Response(render(first, 1))),
        SamplePage(site(2), f"/posts/{near.slug}.html", near.title, "doc", Response(render(near, 2))),
        SamplePage(site(0), "/posts/short-note.html", short.title, "too-few-words", Response(render(short, 0))),
        SamplePage(site(1), "/posts/lorem.html", lorem.title, "lorem-ipsum", Response(render(lorem, 1))),
        SamplePage(site(2), "/posts/bibliothek.html", german.title, "language", Response(render(german, 2))),
        SamplePage(site(3), "/files/report.pdf", "Annual report (PDF)", "not-html",
                   Response(b"%PDF-1.4\n" + noisy, "application/pdf")),
        SamplePage(site(0), "/images/banner.html", "Banner", "binary-body", Response(b"\x89PNG\r\n\x1a\n" + noisy)),
        SamplePage(site(1), "/posts/removed.html", "Removed post", "http-404",
                   Response(b"<html><body>gone</body></html>", status=404)),
        SamplePage(site(2), "/private/drafts.html", "Drafts", "robots-disallowed", Response(render(first, 2))),
    ]


@dataclass
class SampleWeb:
    """A running sample web: its pages (with URLs) and the servers behind them."""

    pages: list[SamplePage]
    web: LoopbackWeb

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.pages]

    @property
    def ports(self) -> dict[str, int]:
        return {site.name: site.port for site in self.web.sites}

    @property
    def moved(self) -> dict[str, tuple[int, int]]:
        """Sites whose asked-for port was taken: name -> (that port, the fresh one)."""
        return self.web.moved


@contextmanager
def serve_sample_web(n: int = 60, sites: int = 4, seed: int = 0, bad_pages: bool = True,
                     robots: str = "User-agent: *\nDisallow: /private/\n",
                     ports: dict[str, int] | None = None) -> Iterator[SampleWeb]:
    """Serves `sample_site_pages(n, sites)` on 127.0.0.1 (one port per site) with robots.txt; yields the pages with
    their URLs filled in. Crawl it with --allow-private-addresses (the hosts are loopback addresses).

    `ports` (site name -> port) asks for those ports; a site whose port is taken gets a fresh one (`web.moved`)."""
    pages = sample_site_pages(n, sites, seed, bad_pages)
    web_sites = {name: Site(name, robots=robots, port=(ports or {}).get(name, 0))
                 for name in sorted({p.site for p in pages}, key=lambda s: int(s[4:]))}
    for page in pages:
        web_sites[page.site].routes[page.path] = page.response
    with LoopbackWeb(list(web_sites.values()), fresh_if_taken=True) as web:
        for page in pages:
            page.url = web_sites[page.site].url(page.path)
        yield SampleWeb(pages, web)


def recorded_ports(path: str | Path) -> dict[str, int]:
    """The ports (site name -> port) that an earlier run recorded in `path` (layout.SAMPLE_WEB); none if it has none.

    An unreadable record is not an error (the sample web gets fresh ports, so the build runs again): a warning names
    the file."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        ports = json.loads(path.read_text(encoding="utf-8"))["ports"]
        if not isinstance(ports, dict) or not all(isinstance(p, int) and 0 < p < 65536 for p in ports.values()):
            raise ValueError("'ports' must map site names to port numbers")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        log.warning("%s: not a record of the sample web's ports (%s); serving it on fresh ports", path, error)
        return {}
    return {str(name): port for name, port in ports.items()}


def record_ports(path: str | Path, ports: dict[str, int]) -> None:
    """Writes the sample web's ports to `path` for the next run to bind again (left as it is when unchanged)."""
    path = Path(path)
    text = json.dumps({"host": "127.0.0.1", "ports": ports}, indent=2, sort_keys=True) + "\n"
    if not path.exists() or path.read_text(encoding="utf-8", errors="replace") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
