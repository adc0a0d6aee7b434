"""URL identity (normalize_url), fetch URLs, domains and the shipped blocklists, on hand-made and real Reddit URLs."""
from __future__ import annotations

import json
import lzma
import pickle
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webtext.crawl.reddit.urls import (
    TRACKING_PARAMS,
    InvalidUrl,
    UrlFilter,
    fetch_url,
    normalize_url,
    unescape_reddit,
    url_domain,
    url_host,
)


@pytest.mark.parametrize(("url", "key"), [
    ("http://www.downingstreetmemo.com", "http://www.downingstreetmemo.com/"),
    ("HTTP://WWW.Example.COM:80/a", "http://www.example.com/a"),
    ("https://example.com:443/", "https://example.com/"),
    ("https://example.com:8443/", "https://example.com:8443/"),
    ("http://example.com:080/x", "http://example.com/x"),
    ("  http://example.com/x \n", "http://example.com/x"),
    ("http://example.com/x#section-2", "http://example.com/x"),
    ("http://twitter.com/#!/user/status/1", "http://twitter.com/#!/user/status/1"),
    ("http://example.com/p?b=2&a=1", "http://example.com/p?a=1&b=2"),
    ("http://example.com/p?b=2&amp;a=1", "http://example.com/p?a=1&b=2"),
    ("http://example.com/p?utm_source=rss&UTM_Medium=x&id=3&fbclid=abc&gclid=z&ref_src=twsrc", "http://example.com/p?id=3"),
    ("http://example.com/p?utm_source=rss", "http://example.com/p"),
    ("http://example.com/p?", "http://example.com/p"),
    ("http://example.com/p?&&a=1&", "http://example.com/p?a=1"),
    ("http://example.com/p?flag&a=", "http://example.com/p?a=&flag"),
    ("http://example.com/a/./b/../c", "http://example.com/a/c"),
    ("http://example.com/a/b/..", "http://example.com/a/"),
    ("http://example.com/%7Euser/%41b%2f%2Fc", "http://example.com/~user/Ab%2F%2Fc"),
    ("http://example.com/a b/ä", "http://example.com/a%20b/%C3%A4"),
    ("http://example.com/100%/x", "http://example.com/100%25/x"),
    ("http://example.com/?q=caf%c3%a9+bar&x=a%26b", "http://example.com/?q=caf%C3%A9+bar&x=a%26b"),
    ("http://Bücher.Example/", "http://xn--bcher-kva.example/"),
    ("http://example.com./x", "http://example.com/x"),
    ("http://[2001:DB8:0::1]:8080/x", "http://[2001:db8::1]:8080/x"),
    ("http://127.0.0.1:8000/page.html", "http://127.0.0.1:8000/page.html"),
    ("http://example.com?a=1", "http://example.com/?a=1"),
])
def test_normalize_url(url: str, key: str) -> None:
    assert normalize_url(url) == key


@pytest.mark.parametrize(("url", "why"), [
    ("", "empty"),
    ("   ", "empty"),
    ("ftp://example.com/file", "not-http"),
    ("javascript:alert(1)", "not-http"),
    ("mailto:someone@example.com", "not-http"),
    ("www.example.com/no-scheme", "not-http"),
    ("/r/news/comments/abc/title/", "not-http"),
    ("http://", "no-host"),
    ("http:///path", "no-host"),
    ("http://example.com:99999/", "bad-port"),
    ("http://example.com:0/", "bad-port"),
    ("http://example.com:http/", "bad-port"),
    ("http://user:secret@example.com/", "userinfo"),
    ("http://exa mple.com/", "bad-host"),
    ("http://exa<mple.com/", "bad-host"),
    ("http://a..b.com/", "bad-host"),
    ("http://[::1/", "bad-host"),
    ("http://[not-an-ip]/", "bad-host"),
    ("http://example.com/a\tb", "control-char"),
    ("http://example.com/\x00", "control-char"),
    ("http://example.com/" + "a" * 2100, "too-long"),
])
def test_invalid_urls_name_their_cause(url: str, why: str) -> None:
    with pytest.raises(InvalidUrl) as caught:
        normalize_url(url)
    assert caught.value.why == why
    assert caught.value.url == url


def test_invalid_url_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(InvalidUrl("ftp://x", "not-http")))
    assert (error.url, error.why) == ("ftp://x", "not-http")


def test_unescape_undoes_only_reddit_escaping() -> None:
    assert unescape_reddit("a?x=1&amp;y=2&amp;z=&lt;3&gt;") == "a?x=1&y=2&z=<3>"
    assert unescape_reddit("?a=1&para=2&copy=3") == "?a=1&para=2&copy=3"  # html.unescape would make ¶ and ©
    assert unescape_reddit("Tom &amp;amp; Jerry") == "Tom &amp; Jerry"  # one level, as Reddit escapes once


def test_fetch_url_keeps_the_original_except_escaping_and_whitespace() -> None:
    url = " HTTP://Example.COM:80/A?utm_source=x&amp;b=1#frag\n"
    assert fetch_url(url) == "HTTP://Example.COM:80/A?utm_source=x&b=1#frag"


def test_url_domain_and_host() -> None:
    assert url_domain("https://www.bbc.co.uk/news") == "bbc.co.uk"
    assert url_domain("https://news.bbc.co.uk/") == "news.bbc.co.uk"
    assert url_domain("https://www2.example.com:8080/x") == "www2.example.com"
    assert url_domain("http://www.example.com?x=1") == "example.com"
    assert url_host("http://[2001:db8::1]:8080/x") == "[2001:db8::1]"
    assert url_domain("http://wwwexample.com/") == "wwwexample.com"


def test_tracking_list_is_documented_and_lower_case() -> None:
    assert {"fbclid", "gclid", "ref_src"} <= TRACKING_PARAMS
    assert all(name == name.lower() for name in TRACKING_PARAMS)


# ---- property: normalisation is idempotent and stable under the noise it removes --------------

_host = st.from_regex(r"[a-z][a-z0-9-]{0,12}(\.[a-z][a-z0-9-]{0,8}){1,3}", fullmatch=True)
_segment = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="?#%/\x1c\x1d\x1e\x1f\x85"), max_size=8)
_param = st.tuples(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), st.from_regex(r"[A-Za-z0-9%._~-]{0,6}", fullmatch=True))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(scheme=st.sampled_from(["http", "https"]), host=_host, segments=st.lists(_segment, max_size=4),
       params=st.lists(_param, max_size=4), fragment=st.from_regex(r"[a-z0-9]{0,6}", fullmatch=True))
def test_normalize_is_idempotent_and_ignores_noise(scheme, host, segments, params, fragment) -> None:
    path = "/" + "/".join(segments)
    query = "&".join(f"{k}={v}" for k, v in params)
    url = f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
    key = normalize_url(url)
    assert normalize_url(key) == key
    noisy = f"{scheme.upper()}://{host.upper()}:{80 if scheme == 'http' else 443}{path}?utm_source=x&{query.replace('&', '&amp;')}#{fragment}"
    assert normalize_url(noisy) == key
    reordered = f"{scheme}://{host}{path}?" + "&".join(f"{k}={v}" for k, v in reversed(params))
    assert normalize_url(reordered) == key


# ---- the shipped blocklists --------------------------------------------------------------------

@pytest.fixture(scope="module")
def url_filter() -> UrlFilter:
    return UrlFilter.default()


@pytest.mark.parametrize(("url", "reason", "detail"), [
    ("https://en.wikipedia.org/wiki/GPT-2", "wikipedia", "wikipedia.org"),
    ("https://en.m.wikipedia.org/wiki/GPT-2", "wikipedia", "wikipedia.org"),
    ("https://wikipedia.org/", "wikipedia", "wikipedia.org"),
    ("https://www.reddit.com/r/news/comments/abc/x/", "reddit-host", "reddit.com"),
    ("https://np.reddit.com/r/news/", "reddit-host", "reddit.com"),
    ("https://v.redd.it/74ah6jubbvec1", "reddit-host", "redd.it"),
    ("https://i.redd.it/lkx6ajtx6vfc1.jpeg", "reddit-host", "redd.it"),  # the domain decides before the extension
    ("https://i.imgur.com/abc.jpg", "media-host", "imgur.com"),
    ("https://www.youtube.com/watch?v=x", "media-host", "youtube.com"),
    ("https://youtu.be/x", "media-host", "youtu.be"),
    ("https://www.redgifs.com/watch/x", "media-host", "redgifs.com"),
    ("https://twitter.com/user/status/1", "blocked-domain", "twitter.com"),
    ("https://drive.google.com/file/d/x", "blocked-domain", "drive.google.com"),
    ("http://people.apache.org/~x/hate_apache.pdf", "blocked-extension", ".pdf"),
    ("http://example.com/IMG_1.JPG?size=large", "blocked-extension", ".jpg"),
    ("http://cm.bell-labs.com/cm/cs/who/dmr/rocrypt.ps", "blocked-extension", ".ps"),
    ("https://example.com/video.mp4", "blocked-extension", ".mp4"),
])
def test_default_filter_rejects(url_filter: UrlFilter, url: str, reason: str, detail: str) -> None:
    assert url_filter.reject(normalize_url(url)) == (reason, detail)


@pytest.mark.parametrize("url", [
    "http://www.nytimes.com/2005/07/01/politics/01leak.html?ex=1&en=2",
    "https://docs.google.com/document/d/x",  # only drive.google.com is listed
    "https://notwikipedia.org/wiki/x",  # a suffix match is by whole labels
    "https://example.com/download.php?file=x.pdf",  # the query is not the path
    "https://example.com/archive.tar.gz/",  # a directory, not a file
    "https://example.com/.jpg",
    "https://github.com/openai/gpt-2",
    "https://www.redditgifts.com/exchanges/",  # in WebText's own top domains
])
def test_default_filter_keeps_pages(url_filter: UrlFilter, url: str) -> None:
    assert url_filter.reject(normalize_url(url)) is None


def test_shipped_lists_load(url_filter: UrlFilter) -> None:
    assert {"reddit.com", "redd.it"} <= url_filter.reddit_domains
    assert {"imgur.com", "youtube.com", "gfycat.com"} <= url_filter.media_domains
    assert {".jpg", ".png", ".gif", ".mp4", ".pdf", ".zip", ".mp3"} <= url_filter.blocked_extensions
    assert "wikipedia.org" in url_filter.wikipedia_domains
    categories = (url_filter.wikipedia_domains, url_filter.reddit_domains, url_filter.media_domains, url_filter.blocked_domains)
    assert sum(len(c) for c in categories) == len(set().union(*categories)), "a domain is listed in two categories"


def test_user_lists_replace_the_shipped_ones(tmp_path: Path) -> None:
    domains = tmp_path / "domains.txt"
    domains.write_text("# mine\nexample.org\nvideos.example.net media-host\n*.wiki.example  wikipedia\n\nreddit.com reddit-host # trailing\n")
    extensions = tmp_path / "extensions.txt"
    extensions.write_text("txt\n.CSV  # spreadsheets\n")
    custom = UrlFilter.from_files(domains, extensions)
    assert custom.reject("https://sub.example.org/") == ("blocked-domain", "example.org")
    assert custom.reject("https://videos.example.net/v/1") == ("media-host", "videos.example.net")
    assert custom.reject("https://en.wiki.example/x") == ("wikipedia", "wiki.example")
    assert custom.reject("https://en.wikipedia.org/wiki/x") is None
    assert custom.reject("https://example.com/data.csv") == ("blocked-extension", ".csv")
    assert custom.reject("https://example.com/a.jpg") is None
    only_domains = UrlFilter.from_files(domains_path=domains)
    assert only_domains.reject("https://example.com/a.jpg") == ("blocked-extension", ".jpg")


def test_bad_domain_list_line_is_an_error(tmp_path: Path) -> None:
    domains = tmp_path / "domains.txt"
    domains.write_text("example.org video-host\n")
    with pytest.raises(ValueError, match="video-host"):
        UrlFilter.from_files(domains)


def test_reason_order_when_a_host_is_in_two_lists() -> None:
    both = UrlFilter(blocked_domains=frozenset({"example.com"}), media_domains=frozenset({"cdn.example.com"}),
                     blocked_extensions=frozenset({".jpg"}))
    assert both.reject("https://img.cdn.example.com/a.jpg") == ("media-host", "cdn.example.com")
    assert both.reject("https://www.example.com/a.jpg") == ("blocked-domain", "example.com")


# ---- real URLs -----------------------------------------------------------------------------------

def _real_urls(shared_data: Path) -> dict[str, list[str]]:
    dumps = shared_data / "reddit-dumps"
    urls = {name: [json.loads(line)["url"] for line in lzma.open(dumps / name)]
            for name in ("RS_v2_2005-06.xz", "RS_v2_2005-07.xz")}
    urls["mixed"] = [json.loads(line)["url"] for line in (dumps / "mixed-eras_submissions.ndjson").read_text().splitlines()]
    api: list[str] = []
    for path in sorted((shared_data / "reddit-api").glob("*_20*.json")):
        api += [child["data"]["url"] for child in json.loads(path.read_text())["data"]["children"]]
    urls["api"] = api
    return urls


@pytest.mark.realdata
def test_real_urls_normalise_to_stable_keys(shared_data: Path) -> None:
    urls = _real_urls(shared_data)
    # MANIFEST.md: 12 of 103 (June) and 123 of 1079 (July) dump URLs carry &amp;
    assert sum("&amp;" in u for u in urls["RS_v2_2005-06.xz"]) == 12
    assert sum("&amp;" in u for u in urls["RS_v2_2005-07.xz"]) == 123
    everything = [u for group in urls.values() for u in group]
    assert len(everything) == 103 + 1079 + 31 + sum(len(json.loads(p.read_text())["data"]["children"])
                                                      for p in (shared_data / "reddit-api").glob("*_20*.json"))
    for url in everything:
        key = normalize_url(url)  # every real URL here is a valid http(s) URL
        assert normalize_url(key) == key
        assert "&amp;" not in key and "#" not in key.replace("#!", "")
        assert key.split("://")[0] in ("http", "https")
        # independent check with the standard library: same host, same query parameters minus trackers
        original = urlsplit(fetch_url(url))
        normalised = urlsplit(key)
        assert normalised.hostname == original.hostname
        expected_params = sorted((k, v) for k, v in parse_qsl(original.query, keep_blank_values=True)
                                 if not k.lower().startswith("utm_") and k.lower() not in TRACKING_PARAMS)
        assert sorted(parse_qsl(normalised.query, keep_blank_values=True)) == expected_params


@pytest.mark.realdata
def test_real_api_media_listings_are_filtered(shared_data: Path, url_filter: UrlFilter) -> None:
    """domain/youtube.com listings: every link post is rejected as a media host (independent figure: the domain field)."""
    for name in ("domain_youtube.com_hot_2016-11-16.json", "domain_youtube.com_top_all_2016-11-16.json"):
        children = [c["data"] for c in json.loads((shared_data / "reddit-api" / name).read_text())["data"]["children"]]
        youtube = [c for c in children if c["domain"] in ("youtube.com", "youtu.be", "m.youtube.com")]
        assert len(youtube) == len(children) == 100
        assert all(url_filter.reject(normalize_url(c["url"]))[0] == "media-host" for c in youtube)
