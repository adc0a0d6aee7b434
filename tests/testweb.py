"""The loopback test web: hosts on 127.0.0.1 serving good pages and a zoo of faults, each with the reason the crawl
must give it, plus helpers to write a links table for them. The servers log every request to check politeness."""
from __future__ import annotations

import functools
import gzip
import io
import socket
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from webtext.pipeline.demo_web import Article, RequestContext, Response, Site, render_article, sample_articles

# Options that keep the zoo fast; the politeness delay stays on, smaller.
ZOO_OPTIONS = [
    "--host-delay", "0.05", "--connect-timeout", "1", "--read-timeout", "1", "--page-deadline", "1.5",
    "--max-bytes", "1000000", "--max-decompressed-bytes", "5000000", "--retries", "1", "--backoff-base", "0.05",
    "--retry-after-max", "5", "--allowed-networks", "127.0.0.0/8", "--max-host-failures", "0",
    "--extract-timeout", "20", "--hosts-in-flight", "16",
]
HOST_DELAY = 0.05
CRAWL_DELAY = 0.2
RETRY_AFTER = 1


def write_links(run_dir: Path, urls: list[str], shards: int = 2) -> list[dict]:
    """RUN/links/links-*.parquet for these URLs and links/_SUCCESS, as a finished links stage leaves them (one row per URL)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from webtext.crawl.reddit.urls import normalize_url, url_domain
    from webtext.pipeline import layout, sinks

    rows = []
    for index, url in enumerate(urls):
        key = normalize_url(url)
        rows.append({"url": url, "url_key": key, "domain": url_domain(key), "score": 3 + index % 50,
                     "score_sum": 3 + index % 50, "num_submissions": 1, "created_utc": 1_500_000_000 + index,
                     "subreddits": ["test"], "submission_ids": [f"t{index}"], "title": f"Link {index}"})
    folder = Path(run_dir, layout.LINKS)
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        table = pa.Table.from_pylist(rows[shard::shards], schema=layout.LINKS_SCHEMA)
        pq.write_table(table, folder / sinks.shard_name("links", shard, shards))
    layout.RunDir(str(run_dir)).write_success("links", "links-made-by-the-test", [layout.LINKS])  # a finished run's
    return rows


# -- page bodies ---------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _articles() -> list[Article]:
    return sample_articles(40)


def article_page(index: int, site: str = "Zoo") -> bytes:
    """A good article page (it passes every filter), different for each index."""
    return render_article(_articles()[index], f"The {site} Post").encode("utf-8")


ACCENTED = ("The café on the corner served a naïve crème brûlée, and the résumé of its chef mentioned a façade "
            "restored in Zürich. Visitors said the place had a certain je ne sais quoi that made them come back. "
            "The owner, who had moved from a small village near the coast, said that the secret was patience and "
            "good butter. Every morning the bakers start before dawn, and by eight the shelves are full of bread. ")
SMART = ("He said \u201cit\u2019s fine\u201d \u2014 and paid \u20ac5 for the coffee, which was more than he had "
         "expected. The waiter smiled and said that prices had gone up everywhere since the summer. Still, the "
         "terrace was full of people reading newspapers and talking about the weather and the match last night. ")
JAPANESE = ("日本語の文章です。東京は日本の首都であり、多くの人々が住んでいます。今日は天気が良いので、公園を散歩しました。"
            "桜の花がきれいに咲いていて、たくさんの家族が写真を撮っていました。駅の近くには新しい本屋ができて、"
            "週末にはいつも混雑しています。私は毎朝コーヒーを飲みながら新聞を読むのが好きです。")


def legacy_page(text: str, encoding: str, title: str, lang: str = "en") -> bytes:
    """A page in a legacy charset that declares it nowhere (no header parameter, no meta tag)."""
    article = Article("legacy", title, [text] * 3, "Staff", "2017-03-01")
    markup = render_article(article, "The Legacy Times").replace('<meta charset="utf-8">', "")
    return markup.replace('lang="en"', f'lang="{lang}"').encode(encoding)


MALFORMED = (b"<html><head><title>Broken markup</title><body><div><p>" + ACCENTED.encode() +
             b"<p>Unclosed paragraphs everywhere <b>and <i>mis-nested</b> tags</i> " + SMART.encode() +
             b"<div><span>" + ACCENTED.encode() + b"</div></td></tr></html>")


# -- routes that misbehave -----------------------------------------------------------------------------------------

def sleep_then(seconds: float, response: Response):
    """Answers after `seconds`, or gives up quietly when the client leaves first."""
    def route(ctx: RequestContext) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if ctx.client_gone():
                ctx.handler.close_connection = True
                return
            time.sleep(0.005)
        ctx.send(response)
    return route


def dripping(content_type: str, first: bytes, filler: bytes, seconds: float):
    """Headers and `first`, then `filler` every 10 ms for `seconds` or as long as the client listens."""
    def route(ctx: RequestContext) -> None:
        ctx.send_head(200, {"Content-Type": content_type})
        ctx.write(first)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not ctx.client_gone() and ctx.write(filler):
            time.sleep(0.01)
    return route


drip = dripping("text/html; charset=utf-8", b"<html><body><p>", b"a", 60)  # a page one byte at a time


def huge(ctx: RequestContext) -> None:
    """An endless-looking body without a Content-Length."""
    ctx.send_head(200, {"Content-Type": "text/html"})
    block = b"<p>" + b"filler text " * 5000 + b"</p>\n"
    for _ in range(400):
        if not ctx.write(block):
            return


def gzip_bomb() -> Response:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (1 << 20)
    body = compressor.compress(b"<html><body>") + b"".join(compressor.compress(zeros) for _ in range(20))
    body += compressor.flush()
    return Response(body, "text/html", headers={"Content-Encoding": "gzip"})


def gzipped(page: bytes) -> Response:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        handle.write(page)
    return Response(buffer.getvalue(), "text/html; charset=utf-8", headers={"Content-Encoding": "gzip"})


def reset(ctx: RequestContext) -> None:
    ctx.reset()


@dataclass
class FailingFirst:
    """Fails the first `failures` requests (with a reset or a status), then serves the page; remembers when."""

    response: Response
    failures: int = 1
    status: int | None = None  # None: connection reset
    retry_after: int | None = None
    times: list[float] = field(default_factory=list)

    def __call__(self, ctx: RequestContext) -> None:
        self.times.append(time.monotonic())
        if len(self.times) > self.failures:
            ctx.send(self.response)
        elif self.status is None:
            ctx.reset()
        else:
            headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
            ctx.send(Response(b"<html><body>busy</body></html>", status=self.status, headers=headers))


def redirect(location: str, status: int = 302) -> Response:
    return Response(b"", "text/html", status, {"Location": location})


# -- the zoo -------------------------------------------------------------------------------------------------------

@dataclass
class Zoo:
    """The sites of the zoo and, per URL, what the crawl must make of it ("doc" or a reject reason)."""

    sites: list[Site]
    expected: dict[str, str]
    busy: FailingFirst
    busy_once: FailingFirst
    dead_port: int

    def delays(self) -> dict[str, float]:
        return {site.name: CRAWL_DELAY if site.name == "slowhost" else HOST_DELAY for site in self.sites}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_zoo() -> Zoo:
    """Sites with every fault of the issue. Call `bind_zoo` once the LoopbackWeb has given them ports."""
    slow = Site("slowhost", robots=f"User-agent: *\nDisallow: /private/\nCrawl-delay: {CRAWL_DELAY}\n"
                                   "\nUser-agent: webtext-crawler\nDisallow: /private/\nDisallow: /members-only$\n"
                                   f"Allow: /private/open.html\nCrawl-delay: {CRAWL_DELAY}\n")
    slow.routes.update({
        "/article.html": Response(article_page(0)),
        "/private/secret.html": Response(article_page(1)),
        "/private/open.html": Response(article_page(2)),
        "/members-only": Response(article_page(1)),
        "/slow.html": sleep_then(0.3, Response(article_page(3))),
        "/too-slow.html": sleep_then(5.0, Response(article_page(4))),
        "/drip.html": drip,
        "/huge.html": huge,
        "/huge-declared.html": Response(b"", "text/html", headers={"Content-Length": "50000000"}),
    })
    busy = FailingFirst(Response(article_page(5)), failures=5, status=503, retry_after=RETRY_AFTER)
    busy_once = FailingFirst(Response(article_page(6)), failures=1, status=503, retry_after=RETRY_AFTER)
    faults = Site("faults")
    faults.routes.update({
        "/bomb.html": gzip_bomb(),
        "/gzipped.html": gzipped(article_page(7)),
        "/loop-a": redirect("/loop-b"),
        "/loop-b": redirect("/loop-a", 301),
        "/gone.html": Response(b"<html><body>gone</body></html>", status=410),
        "/error.html": Response(b"<html><body>oops</body></html>", status=500),
        "/busy.html": busy,
        "/busy-once.html": busy_once,
        "/reset.html": reset,
        "/reset-once.html": FailingFirst(Response(article_page(8)), failures=1),
        "/to-metadata": redirect("http://169.254.169.254/latest/meta-data/"),
        "/to-ipv6-loopback": redirect("http://[::1]/"),
        "/to-ftp": redirect("ftp://example.org/file"),
        "/no-location": Response(b"", "text/html", 302),
    })
    faults.routes.update({f"/chain/{i}": redirect(f"/chain/{i + 1}") for i in range(10)})
    charsets = Site("charsets")
    charsets.routes.update({
        "/latin1.html": Response(legacy_page(ACCENTED, "latin-1", "Latin-1 page"), "text/html"),
        "/cp1252.html": Response(legacy_page(SMART + ACCENTED, "cp1252", "Windows page"), "text/html"),
        "/sjis.html": Response(legacy_page(JAPANESE * 2, "shift_jis", "日本語のページ", "ja"), "text/html"),
        "/malformed.html": Response(MALFORMED, "text/html"),
        "/binary.html": Response(b"\x00\x01\x02\x03" + bytes(range(256)) * 40, "text/html"),
        "/report.pdf": Response(b"%PDF-1.4\n" + b"\x00" * 3000, "application/pdf"),
        "/empty.html": Response(b"<html><head><title>Nothing</title></head><body></body></html>"),
        "/short.html": Response(render_article(Article("short", "A short note", [
            "We are taking a short break and will be back next week with more stories about the town."],
            "Staff", "2017-01-01"), "The Short Times").encode()),
        "/page.xhtml": Response(article_page(9), "application/xhtml+xml"),
        "/redirected.html": Response(article_page(10)),
    })
    robots_down = Site("robotsdown")
    robots_down.routes.update({"/robots.txt": Response(b"down", "text/plain", 503),
                               "/a.html": Response(article_page(11)), "/b.html": Response(article_page(12))})
    no_robots = Site("norobots", robots=None)
    no_robots.routes["/article.html"] = Response(article_page(13))
    return Zoo([slow, faults, charsets, robots_down, no_robots], {}, busy, busy_once, _free_port())


def bind_zoo(zoo: Zoo) -> Zoo:
    """Fills in the cross-host routes and the expected outcome of every URL, now that the ports are known."""
    slow, faults, charsets, robots_down, no_robots = zoo.sites
    faults.routes["/to-other-host"] = redirect(charsets.url("/redirected.html"), 301)
    expected = {
        slow.url("/article.html"): "doc",
        slow.url("/private/secret.html"): "robots-disallowed",
        slow.url("/private/open.html"): "doc",
        slow.url("/members-only"): "robots-disallowed",
        slow.url("/slow.html"): "doc",
        slow.url("/too-slow.html"): "timeout",
        slow.url("/drip.html"): "timeout",
        slow.url("/huge.html"): "too-large",
        slow.url("/huge-declared.html"): "too-large",
        faults.url("/bomb.html"): "decompression-bomb",
        faults.url("/gzipped.html"): "doc",
        faults.url("/loop-a"): "redirect-loop",
        faults.url("/chain/0"): "too-many-redirects",
        faults.url("/gone.html"): "http-410",
        faults.url("/missing.html"): "http-404",
        faults.url("/error.html"): "http-500",
        faults.url("/busy.html"): "http-503",
        faults.url("/busy-once.html"): "doc",
        faults.url("/reset.html"): "connection-error",
        faults.url("/reset-once.html"): "doc",
        faults.url("/to-metadata"): "address-blocked",
        faults.url("/to-ipv6-loopback"): "address-blocked",
        faults.url("/to-ftp"): "bad-redirect",
        faults.url("/no-location"): "bad-redirect",
        faults.url("/to-other-host"): "doc",
        charsets.url("/latin1.html"): "doc",
        charsets.url("/cp1252.html"): "doc",
        charsets.url("/sjis.html"): "language",
        charsets.url("/malformed.html"): "doc",
        charsets.url("/binary.html"): "binary-body",
        charsets.url("/report.pdf"): "not-html",
        charsets.url("/empty.html"): "no-text",
        charsets.url("/short.html"): "too-few-words",
        charsets.url("/page.xhtml"): "doc",
        robots_down.url("/a.html"): "robots-unreachable",
        robots_down.url("/b.html"): "robots-unreachable",
        no_robots.url("/article.html"): "doc",
        f"http://127.0.0.1:{zoo.dead_port}/page.html": "robots-unreachable",
    }
    zoo.expected = expected
    return zoo
