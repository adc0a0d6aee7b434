"""Synthetic Pushshift-style submission dumps, messy like the real ones, for the demo, the
end-to-end tests and the links benchmark; the function reports what it planted."""
from __future__ import annotations

import bisect
import bz2
import filecmp
import gzip
import itertools
import json
import lzma
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

__all__ = ["ZSTD_WINDOW_LOG", "make_sample_dump", "open_compressed_writer"]

ZSTD_WINDOW_LOG = 31  # the real monthly dumps use a 2 GiB window
_WRITE_BATCH = 4096
_to_json = json.JSONEncoder(ensure_ascii=False).encode  # raw UTF-8 like the dumps; one encoder, not one per line

_WORDS = (
    "the new study finds city council vote plan after years report shows water energy market court "
    "police school health climate data election budget space mission science museum bridge river "
    "company workers strike price rise fall record summer winter government law bill senate house "
    "open source software release security flaw update phone internet privacy archive library "
    "history war peace treaty music film review book author interview scientists discover ancient "
    "fossil species ocean forest fire storm coast village farmers food trade deal tax reform "
    "café naïve über façade smörgåsbord 東京 ünïcödé"
).split()
_NEWS_HOSTS = (
    "www.nytimes.com", "www.bbc.co.uk", "news.bbc.co.uk", "www.theguardian.com", "www.washingtonpost.com",
    "www.reuters.com", "www.npr.org", "www.latimes.com", "arstechnica.com", "www.wired.com",
    "www.theatlantic.com", "www.economist.com", "www.nature.com", "www.sciencedaily.com",
    "www.independent.co.uk", "www.cbc.ca", "www.abc.net.au", "www.aljazeera.com", "www.vox.com",
    "www.newyorker.com", "techcrunch.com", "www.theverge.com", "medium.com", "github.com",
    "www.smithsonianmag.com", "www.scientificamerican.com", "www.bloomberg.com", "www.politico.com",
    "blog.example.org", "longreads.example.net",
)
_NEWS_DOMAINS = tuple(host.removeprefix("www.") for host in _NEWS_HOSTS)
_SUBREDDITS = (
    "news", "worldnews", "science", "technology", "politics", "programming", "history", "books",
    "space", "environment", "economics", "TrueReddit", "Foodforthought", "DepthHub", "todayilearned",
)
_MEDIA_URLS = (
    "https://i.imgur.com/{token}.jpg", "https://imgur.com/gallery/{token}", "https://www.youtube.com/watch?v={token}&amp;t=42",
    "https://youtu.be/{token}", "https://gfycat.com/{token}", "https://vimeo.com/{number}",
)
_REDDIT_URLS = (
    "https://i.redd.it/{token}.jpg", "https://v.redd.it/{token}", "https://www.reddit.com/r/{subreddit}/comments/{other}/crosspost/",
)
_WIKIPEDIA_URLS = ("https://en.wikipedia.org/wiki/{word}_{number}", "https://en.m.wikipedia.org/wiki/{word}_{number}")
_EXTENSION_URLS = ("https://{host}/files/{word}-{number}.pdf", "http://{host}/img/{word}{number}.JPG", "https://{host}/media/{number}.mp4")
_INVALID_URLS = (
    "ftp://files.example.com/{number}.txt", "javascript:void({number})", "http://", "http://exa mple.com/{number}",
    "http://www.example.com:99999/{number}", "mailto:someone{number}@example.com", "www.example.com/no-scheme/{number}",
)
_CREATED_COUNTER = {int: "created_int", str: "created_str", float: "created_float"}
_START_UTC = 1262304000  # 2010-01-01
_END_UTC = 1577836800  # 2020-01-01

# Share of each kind of line; the rest are ordinary link posts.
_MIX = (
    ("bad-json", 0.0005),
    ("missing-id", 0.001),
    ("missing-field", 0.001),
    ("self-post", 0.20),
    ("nsfw", 0.04),
    ("wikipedia", 0.02),
    ("reddit-host", 0.03),
    ("media-host", 0.05),
    ("blocked-extension", 0.015),
    ("invalid-url", 0.005),
    ("duplicate-submission", 0.02),
)


@dataclass
class _UrlStats:
    """Per canonical URL: distinct eligible submissions, max score and score sum (kept copies)."""

    count: list[int] = field(default_factory=list)
    best: list[int] = field(default_factory=list)
    total: list[int] = field(default_factory=list)

    def new(self) -> int:
        self.count.append(0)
        self.best.append(-1)
        self.total.append(0)
        return len(self.count) - 1

    def add(self, index: int, score: int) -> None:
        self.count[index] += 1
        self.total[index] += score
        if score > self.best[index]:
            self.best[index] = score

    def raise_score(self, index: int, old: int, new: int) -> None:
        self.total[index] += new - old
        if new > self.best[index]:
            self.best[index] = new


class _Planter:
    """Generates the records of one dump and keeps count of what it planted."""

    def __init__(self, n: int, seed: int, urls: list[str] | None) -> None:
        self.n = n
        self.rng = random.Random(seed)
        self.urls = list(urls) if urls else None
        self.url_domains = [_domain_of(url) for url in self.urls or ()]
        self.stats = _UrlStats()
        self.counts: dict[str, int] = {name: 0 for name, _ in _MIX}
        self.counts.update(link_posts=0, amp_urls=0, tracking_params=0, url_variants=0, missing_score=0,
                           created_int=0, created_str=0, created_float=0)
        self.recent: list[list] = []  # [record, kept score, url index] of recent link posts, for repeats
        self.titles = self._make_titles(4096)
        self.kinds = [name for name, _ in _MIX] + ["link"]
        self.thresholds = list(itertools.accumulate(share for _, share in _MIX))

    def _below(self, k: int) -> int:
        """A random int in [0, k); `random.randrange` costs ten times more and speed matters here."""
        return int(self.rng.random() * k)

    # ---- the record skeleton ----------------------------------------------------------------
    def _base(self, i: int) -> dict:
        rand = self.rng.random  # int(rand() * k) inline: this runs for every line
        created = _START_UTC + (_END_UTC - _START_UTC) * i // max(self.n, 1) + int(rand() * 60)
        submission_id = _submission_id(i)
        subreddit_index = int(rand() * len(_SUBREDDITS))
        subreddit = _SUBREDDITS[subreddit_index]
        title, slug = self.titles[int(rand() * len(self.titles))]
        return {
            "author": f"user{int(rand() * 50_000)}",
            "created_utc": self._created(created),
            "domain": "",
            "id": submission_id,
            "is_self": False,
            "num_comments": int(rand() * 200),
            "over_18": False,
            "permalink": f"/r/{subreddit}/comments/{submission_id}/{slug}/",
            "retrieved_on": created + 86_400 * (1 + int(rand() * 30)),
            "score": 1,
            "selftext": "",
            "subreddit": subreddit,
            "subreddit_id": f"t5_2qh{subreddit_index:02d}",
            "title": title,
            "url": "",
        }

    def _created(self, created: int) -> int | str | float:
        year = 1970 + created // 31_556_952
        if 2014 <= year <= 2016:  # the era whose dumps carry created_utc as a string
            return str(created)
        if year >= 2018:  # as in Arctic Shift's dumps
            return float(created)
        return created

    def _title(self) -> str:
        return self.titles[self._below(len(self.titles))][0]

    def _make_titles(self, count: int) -> list[tuple[str, str]]:
        """A pool of (title, permalink slug) pairs; drawing from it is much cheaper than composing."""
        rng = self.rng
        titles = []
        for _ in range(count):
            words = rng.choices(_WORDS, k=3 + self._below(9))
            if rng.random() < 0.05:
                words.insert(1, "&amp;")  # Pushshift escapes titles too
            title = " ".join(words).capitalize()
            titles.append((title, title[:30].lower().replace(" ", "_").replace("&amp;", "and")))
        return titles

    def _score(self) -> int:
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            return 1
        if r < 0.5:
            return 0
        if r < 0.6:
            return 2
        return min(int(3 / (1.0 - rng.random()) ** 1.3), 100_000)

    def _token(self) -> str:
        return f"{self.rng.getrandbits(40):x}"

    # ---- canonical link URLs ----------------------------------------------------------------
    def _pick_url_index(self) -> int:
        stats = self.stats
        size = len(stats.count)
        if self.urls is not None:
            if size < len(self.urls):
                return stats.new()
            return self._below(size)
        if size == 0 or self.rng.random() < 0.75:
            return stats.new()
        return self._below(size)

    def _canonical_domain(self, index: int) -> str:
        if self.urls is not None:
            return self.url_domains[index]
        return _NEWS_DOMAINS[index % len(_NEWS_HOSTS)]

    def _canonical_url(self, index: int) -> str:
        if self.urls is not None:
            return self.urls[index]
        host = _NEWS_HOSTS[index % len(_NEWS_HOSTS)]
        shape = (index // len(_NEWS_HOSTS)) % 4
        if shape == 0:
            year = 2010 + index % 10
            return f"https://{host}/{year}/{1 + index % 12:02d}/{_word(index)}-{_word(index // 7)}-{index}.html"
        if shape == 1:
            return f"http://{host}/article.php?id={index}&page=1&section={_word(index // 3)}"
        if shape == 2:
            return f"https://{host}/news/{_word(index // 5)}/{index}/"
        return f"https://{host}/story?id={index}"

    def _posted_form(self, url: str) -> str:
        """How a submission carries the canonical URL: Pushshift-escaped, sometimes with noise that
        normalisation removes (tracking parameters, fragment, host case, default port)."""
        if self.urls is None:
            r = self.rng.random()
            if r < 0.04:
                url += ("&" if "?" in url else "?") + f"utm_source=reddit&utm_medium=social&fbclid={self._token()}"
                self.counts["tracking_params"] += 1
            elif r < 0.06:
                url += "#comments"
                self.counts["url_variants"] += 1
            elif r < 0.08:
                scheme, _, rest = url.partition("://")
                host, _, path = rest.partition("/")
                port = ":443" if scheme == "https" else ":80"
                url = f"{scheme.upper()}://{host.upper()}{port}/{path}"
                self.counts["url_variants"] += 1
        if "&" in url:
            self.counts["amp_urls"] += 1
            url = url.replace("&", "&amp;")
        return url

    # ---- one line per kind ------------------------------------------------------------------
    def line(self, i: int) -> bytes:
        kind = self.kinds[bisect.bisect_right(self.thresholds, self.rng.random())]
        if kind == "duplicate-submission" and not self.recent:
            kind = "link"
        if kind != "link":
            self.counts[kind] += 1
        if kind == "duplicate-submission":
            record = self._repeat()
        else:
            record = self._base(i)
            if kind == "link":
                self._fill_link(record)
            else:
                _FILLERS[kind](self, record)
        text = self._encode(record)
        if kind == "bad-json":
            return text[: len(text) // 2] + b"\n"
        created = record.get("created_utc")
        if created is not None:
            self.counts[_CREATED_COUNTER[type(created)]] += 1
        return text

    def _encode(self, record: dict) -> bytes:
        text = _to_json(record)
        created = record.get("created_utc")
        if type(created) is int and created < 1388534400:
            text = text.replace("/", "\\/")  # the pre-2014 dumps escape slashes
        return (text + "\n").encode("utf-8")

    def _fill_link(self, record: dict) -> None:
        rng = self.rng
        index = self._pick_url_index()
        score = self._score()
        first_of_given_url = self.urls is not None and self.stats.count[index] == 0
        if first_of_given_url:
            score = max(score, 3 + self._below(50))  # every given URL qualifies once
        canonical = self._canonical_url(index)
        record["url"] = self._posted_form(canonical)
        record["domain"] = self._canonical_domain(index)
        record["score"] = score
        self.counts["link_posts"] += 1
        if not first_of_given_url and rng.random() < 0.01:
            del record["score"]  # parsed as 0
            self.counts["missing_score"] += 1
            score = 0
        self.stats.add(index, score)
        entry = [record, score, index]
        if len(self.recent) < 256:
            self.recent.append(entry)
        else:
            self.recent[self._below(256)] = entry

    def _repeat(self) -> dict:
        """The same submission again, as a later crawl saw it (the score may have moved)."""
        entry = self.recent[self._below(len(self.recent))]
        record, kept, index = entry
        copy = dict(record)
        score = max(0, kept - 1 + self._below(5))
        copy["score"] = score
        copy["retrieved_on"] = record["retrieved_on"] + 86_400 * 30
        if score > kept:
            self.stats.raise_score(index, kept, score)
            entry[1] = score
        return copy

    def _fill_self(self, record: dict) -> None:
        record["url"] = f"https://www.reddit.com{record['permalink']}"
        record["domain"] = "self." + record["subreddit"]
        record["is_self"] = True
        record["selftext"] = self._title() + " " + self._title()
        record["score"] = self._score()
        if self.rng.random() < 0.1:
            del record["is_self"]  # recognised by its URL pointing at itself

    def _fill_nsfw(self, record: dict) -> None:
        record["url"] = f"https://www.example-adult.com/gallery/{self._token()}"
        record["domain"] = "example-adult.com"
        record["over_18"] = True
        record["score"] = self._score()

    def _fill_template(self, record: dict, templates: tuple[str, ...]) -> None:
        below = self._below
        template = templates[below(len(templates))]
        url = template.format(
            token=self._token(), number=below(1_000_000), word=_WORDS[below(40)].capitalize(),
            host=_NEWS_HOSTS[below(len(_NEWS_HOSTS))], subreddit=record["subreddit"],
            other=_base36(1_000_000 + below(1_000_000)),
        )
        record["url"] = url
        record["domain"] = _domain_of(url)
        record["score"] = self._score()

    def _fill_missing_id(self, record: dict) -> None:
        self._fill_link_like(record)
        del record["id"]

    def _fill_missing_created(self, record: dict) -> None:
        self._fill_link_like(record)
        del record["created_utc"]

    def _fill_link_like(self, record: dict) -> None:
        record["url"] = f"https://www.example.org/orphan/{self._token()}"
        record["domain"] = "example.org"
        record["score"] = self._score()

    def expected(self) -> dict:
        """What the links stage must find under the default rules (WebText's max rule, min karma 3)
        and under the sum rule, from the planted URL statistics."""
        stats = self.stats
        used = [i for i, count in enumerate(stats.count) if count]
        links = [i for i in used if stats.best[i] >= 3]
        links_sum = [i for i in used if stats.total[i] >= 3]
        rejects = {name: self.counts[name] for name, _ in _MIX if self.counts[name]}
        rejects["low-karma"] = sum(stats.count[i] for i in used) - sum(stats.count[i] for i in links)
        return {
            "links": len(links),
            "links_sum_rule": len(links_sum),
            "low_karma_sum_rule": sum(stats.count[i] for i in used) - sum(stats.count[i] for i in links_sum),
            "merged_submissions": sum(stats.count[i] for i in links),
            "expected_rejects": {name: count for name, count in sorted(rejects.items()) if count},
            "distinct_urls": len(used),
        }


_FILLERS: dict[str, Callable[[_Planter, dict], None]] = {
    "bad-json": _Planter._fill_link_like,
    "missing-id": _Planter._fill_missing_id,
    "missing-field": _Planter._fill_missing_created,
    "self-post": _Planter._fill_self,
    "nsfw": _Planter._fill_nsfw,
    "wikipedia": lambda planter, record: planter._fill_template(record, _WIKIPEDIA_URLS),
    "reddit-host": lambda planter, record: planter._fill_template(record, _REDDIT_URLS),
    "media-host": lambda planter, record: planter._fill_template(record, _MEDIA_URLS),
    "blocked-extension": lambda planter, record: planter._fill_template(record, _EXTENSION_URLS),
    "invalid-url": lambda planter, record: planter._fill_template(record, _INVALID_URLS),
}


def _word(number: int) -> str:
    return _WORDS[number % len(_WORDS)]


_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_ID_OFFSET = 36**5  # ids of six base-36 digits, like Reddit's around 2012
_ID_LOW: list[str] = []


def _submission_id(i: int) -> str:
    """The base-36 id of the i-th submission (two table lookups instead of a loop)."""
    if not _ID_LOW:
        _ID_LOW.extend(a + b + c for a in _BASE36 for b in _BASE36 for c in _BASE36)
    high, low = divmod(_ID_OFFSET + i, 36**3)
    return (_base36(high) if high >= 36**3 else _ID_LOW[high].lstrip("0")) + _ID_LOW[low]


def _base36(number: int) -> str:
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = _BASE36[rest] + text
        if not number:
            return text


def _domain_of(url: str) -> str:
    host = url.partition("://")[2].partition("/")[0].partition("?")[0].partition(":")[0].lower()
    return host[4:] if host.startswith("www.") else host


@contextmanager
def open_compressed_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary writer that compresses by the file's extension: .zst (2 GiB window, as the real
    dumps), .xz, .gz, .bz2, anything else plain."""
    path = Path(path)
    suffix = path.suffix.lower()
    with open(path, "wb") as raw:
        if suffix in (".zst", ".zstd"):
            params = zstandard.ZstdCompressionParameters.from_level(1, window_log=ZSTD_WINDOW_LOG)
            # streamed without a declared size, so zstd keeps the full window in the frame header
            with zstandard.ZstdCompressor(compression_params=params).stream_writer(raw, closefd=False) as writer:
                yield writer
        elif suffix == ".xz":
            with lzma.open(raw, "wb", preset=1) as writer:
                yield writer
        elif suffix == ".gz":
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3, mtime=0) as writer:
                yield writer
        elif suffix == ".bz2":
            with bz2.BZ2File(raw, "wb", compresslevel=5) as writer:
                yield writer
        else:
            yield raw


def make_sample_dump(path: str | Path, n: int, seed: int, urls: list[str] | None = None) -> dict:
    """Write `n` lines of a synthetic Pushshift-style submission dump to `path` and return the counts
    of what was planted.

    The lines are messy like real dumps: created_utc as int/str/float by era, `&amp;` in URLs and
    titles, escaped slashes in old lines, self posts (some without is_self), NSFW posts, low karma,
    repeated submissions with updated scores, Wikipedia / Reddit / media-host links, blocked file
    extensions, invalid URLs, missing fields and an occasional line that is not JSON. With `urls`,
    the ordinary link posts point at exactly those URLs and each of them qualifies at least once
    (when `n` allows). Same (n, seed, urls), same bytes: a file at `path` that already holds them is left as it is
    (its mtime too, which the links stage's fingerprint reads, so a rerun of that stage is skipped).

    The result has `lines`, per-kind counts, and the figures the links stage must reproduce under
    the default rules: `links`, `expected_rejects` (by reject reason) and `merged_submissions`, plus
    `links_sum_rule` and `low_karma_sum_rule` for `karma_rule="sum"`."""
    if n < 0:
        raise ValueError("n must be >= 0")
    planter = _Planter(n, seed, urls)
    path = Path(path)
    target = path.with_name(path.name + ".new" + path.suffix) if path.is_file() else path
    try:
        with open_compressed_writer(target) as writer:
            batch: list[bytes] = []
            for i in range(n):
                batch.append(planter.line(i))
                if len(batch) >= _WRITE_BATCH:
                    writer.write(b"".join(batch))
                    batch.clear()
            if batch:
                writer.write(b"".join(batch))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    unchanged = target != path and filecmp.cmp(target, path, shallow=False)
    if unchanged:
        target.unlink()
    elif target != path:
        os.replace(target, path)
    result: dict = {"path": str(path), "lines": n, "seed": seed, "unchanged": unchanged}
    result.update({key: value for key, value in planter.counts.items()})
    result["submissions"] = n - planter.counts["bad-json"]
    result.update(planter.expected())
    if urls:
        result["urls_covered"] = min(len(planter.stats.count), len(urls))
    return result
