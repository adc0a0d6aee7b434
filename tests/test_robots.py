"""robots.txt per RFC 9309: group selection, longest match, wildcards, status codes, Crawl-delay."""
from __future__ import annotations

import random
import re
import time

import pytest

from webtext.crawl.fetch.robots import MAX_PATTERN_CHARS, parse_robots, product_token, robots_url, rules_for_status

UA = "webtext-crawler/0.1 (+https://example.org/crawler)"


def allowed(robots: str, path: str, user_agent: str = UA) -> bool:
    return parse_robots(robots, user_agent).allowed("https://example.com" + path)


def test_product_token_is_the_first_word_before_the_slash():
    assert product_token(UA) == "webtext-crawler"
    assert product_token("Mozilla/5.0 (compatible)") == "mozilla"


def test_longest_match_wins_whatever_the_order():
    robots = "User-agent: *\nAllow: /p\nDisallow: /\n"
    assert allowed(robots, "/page")
    assert not allowed(robots, "/other")
    robots = "User-agent: *\nDisallow: /folder/\nAllow: /folder/page.html\n"
    assert allowed(robots, "/folder/page.html")
    assert not allowed(robots, "/folder/other.html")


def test_equal_length_allow_and_disallow_prefers_allow():
    assert allowed("User-agent: *\nDisallow: /page\nAllow: /page\n", "/page")
    assert allowed("User-agent: *\nAllow: /page\nDisallow: /page\n", "/page")


def test_wildcards_and_end_anchor():
    robots = "User-agent: *\nDisallow: /*.php$\nDisallow: /private*/data\nAllow: /*.php$\n"
    assert allowed(robots, "/index.php")  # equally long allow wins
    robots = "User-agent: *\nDisallow: /*.php$\nDisallow: /private*/data\n"
    assert not allowed(robots, "/index.php")
    assert allowed(robots, "/index.php?x=1")  # $ anchors the end of path and query
    assert allowed(robots, "/index.phpx")
    assert not allowed(robots, "/private-area/data/file")
    assert allowed(robots, "/public/data")


def test_pathological_wildcards_match_in_linear_time():
    """A regex with many `.*` backtracks for minutes on such a path; the matcher must not."""
    robots = "User-agent: *\nDisallow: /*a*a*a*a*a*a*aX\nDisallow: /*a*a*a*a*a*a*a$X\n"
    started = time.monotonic()
    assert allowed(robots, "/" + "a" * 2000)
    assert not allowed(robots, "/" + "a" * 2000 + "X")
    assert time.monotonic() - started < 0.5


def test_pattern_matcher_agrees_with_the_regex_definition():
    rng = random.Random(7)
    for _ in range(5000):
        pattern = "/" + "".join(rng.choice("ab*") for _ in range(rng.randint(0, 6))) + rng.choice(["", "$"])
        path = "/" + "".join(rng.choice("ab") for _ in range(rng.randint(0, 8)))
        anchored = pattern.endswith("$")
        regex = ".*".join(re.escape(p) for p in (pattern[:-1] if anchored else pattern).split("*"))
        expected = re.match(regex + ("$" if anchored else ""), path, re.DOTALL) is not None
        assert allowed(f"User-agent: *\nDisallow: {pattern}\n", path) == (not expected), (pattern, path)


def test_overlong_patterns_are_ignored():
    assert allowed(f"User-agent: *\nDisallow: /{'x' * MAX_PATTERN_CHARS}\n", "/" + "x" * (MAX_PATTERN_CHARS + 5))
    assert not allowed(f"User-agent: *\nDisallow: /{'x' * 100}\n", "/" + "x" * 105)


def test_query_strings_take_part_in_matching():
    robots = "User-agent: *\nDisallow: /search?q=\n"
    assert not allowed(robots, "/search?q=cats")
    assert allowed(robots, "/search")


def test_our_group_beats_the_star_group_and_same_agent_groups_merge():
    robots = ("User-agent: *\nDisallow: /\n\n"
              "User-agent: WEBTEXT-crawler\nDisallow: /a\n\n"
              "User-agent: otherbot\nDisallow: /b\n\n"
              "User-agent: webtext-crawler\nDisallow: /c\n")
    assert allowed(robots, "/b")
    assert not allowed(robots, "/a")
    assert not allowed(robots, "/c")
    assert not allowed(robots, "/b", user_agent="otherbot/2.0")
    assert not allowed(robots, "/x", user_agent="somebot")


def test_consecutive_user_agent_lines_share_one_group():
    robots = "User-agent: otherbot\nUser-agent: webtext-crawler\nDisallow: /shared\n"
    assert not allowed(robots, "/shared")


def test_no_matching_group_allows_everything_and_empty_disallow_allows():
    assert allowed("User-agent: otherbot\nDisallow: /\n", "/anything")
    assert allowed("User-agent: *\nDisallow:\n", "/anything")
    assert allowed("", "/anything")


def test_comments_case_and_garbage_lines_are_tolerated():
    robots = "# hello\nUSER-AGENT: *   # all of them\nDISALLOW: /secret # no\nthis line is junk\n"
    assert not allowed(robots, "/secret/file")
    assert allowed(robots, "/open")


def test_robots_txt_itself_is_always_allowed():
    assert allowed("User-agent: *\nDisallow: /\n", "/robots.txt")


def test_percent_encoding_is_compared_normalised():
    def same(a: str, b: str) -> bool:
        """A rule spelled one way matches a path spelled the other way, and the other way round."""
        return not allowed(f"User-agent: *\nDisallow: {a}\n", b) and not allowed(f"User-agent: *\nDisallow: {b}\n", a)

    assert same("/caf%c3%a9", "/caf%C3%A9")
    assert same("/café", "/caf%C3%A9")
    assert same("/%7Euser", "/~user")
    robots = "User-agent: *\nDisallow: /café\nDisallow: /%7Ejoe\n"
    assert not allowed(robots, "/caf%C3%A9/menu")
    assert not allowed(robots, "/~joe/home")


def test_crawl_delay_of_our_group():
    rules = parse_robots("User-agent: *\nCrawl-delay: 10\n\nUser-agent: webtext-crawler\nCrawl-delay: 2.5\n", UA)
    assert rules.crawl_delay == 2.5
    assert parse_robots("User-agent: *\nCrawl-delay: soon\n", UA).crawl_delay is None


@pytest.mark.parametrize("status, expected", [(200, False), (404, True), (410, True), (401, True),
                                              (429, False), (500, False), (503, False)])
def test_status_codes_per_rfc_9309(status, expected):
    rules = rules_for_status(status, b"User-agent: *\nDisallow: /\n", UA)
    assert rules.allowed("https://example.com/page") is expected


def test_robots_url_is_per_origin():
    assert robots_url("https://user:pw@Example.com:8443/a/b?c") == "https://Example.com:8443/robots.txt"
