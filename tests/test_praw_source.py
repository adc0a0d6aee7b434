"""The PRAW source against a fake Reddit API on 127.0.0.1: PRAW's own configuration, application-only
OAuth, `after` pagination, rate-limit headers, and clear errors that never show the secret."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from tests.fake_reddit import (
    FakeRedditSite,
    api_listing_children,
    fake_reddit,  # noqa: F401 - the fixture
    reset_praw_config_cache,
)
from webtext.crawl.reddit.api import (
    RedditAuthError,
    RedditListingError,
    check_reddit_auth,
    iter_praw_submissions,
    make_reddit,
)
from webtext.crawl.reddit.submissions import parse_submission


def listing_gets(site: FakeRedditSite) -> list:
    return [r for r in site.server.api_requests() if r.method == "GET"]


def token_posts(site: FakeRedditSite) -> list:
    return [r for r in site.requests if r.path == "/api/v1/access_token"]


def test_whole_listing_is_paginated_with_after(fake_reddit: FakeRedditSite) -> None:
    reddit = make_reddit(fake_reddit.site)
    assert reddit.read_only
    check_reddit_auth(reddit, fake_reddit.site)
    items = list(iter_praw_submissions(reddit, "news", "top", "all", None))
    expected = fake_reddit.server.listing("news", "top")
    assert len(items) == len(expected) == 250
    assert [item["id"] for item in items] == [e["id"] for e in expected]

    gets = listing_gets(fake_reddit)
    assert [g.path for g in gets] == ["/r/news/top"] * 3
    assert [g.query.get("after") for g in gets] == [None, "t3_" + expected[99]["id"], "t3_" + expected[199]["id"]]
    assert all(g.query["raw_json"] == "1" and g.query["t"] == "all" and g.authorized and g.status == 200 for g in gets)
    posts = token_posts(fake_reddit)
    assert len(posts) == 1 and posts[0].form["grant_type"] == "client_credentials" and posts[0].status == 200
    assert gets[0].user_agent.startswith("python:webtext-tests:0")


def test_items_are_plain_dicts_that_parse(fake_reddit: FakeRedditSite) -> None:
    reddit = make_reddit(fake_reddit.site)
    items = list(iter_praw_submissions(reddit, "science", "new", "all", 50))
    assert len(items) == 50
    served = {e["id"]: e for e in fake_reddit.server.listing("science", "new")}
    for item in items:
        assert all(isinstance(v, (str, int, float, bool, type(None))) for v in item.values())
        assert isinstance(item["subreddit"], str) and isinstance(item["author"], str)
        assert parse_submission(item) == parse_submission(served[item["id"]])
    assert [g.query["limit"] for g in listing_gets(fake_reddit)] == ["50"]


def test_limit_stops_reading(fake_reddit: FakeRedditSite) -> None:
    reddit = make_reddit(fake_reddit.site)
    items = list(iter_praw_submissions(reddit, "news", "hot", "all", 150))
    assert [i["id"] for i in items] == [e["id"] for e in fake_reddit.server.listing("news", "hot")[:150]]
    assert len(listing_gets(fake_reddit)) == 2


def test_listing_kinds_and_time_filter(fake_reddit: FakeRedditSite) -> None:
    server = fake_reddit.server
    newest = max(e["created_utc"] for e in server.subreddits["news"])
    server.now = newest + 60  # "week" then covers the newest 7 days of the generated posts
    reddit = make_reddit(fake_reddit.site)
    for listing, time_filter in (("new", "all"), ("controversial", "week"), ("top", "month")):
        items = list(iter_praw_submissions(reddit, "news", listing, time_filter, None))
        expected = server.listing("news", listing, time_filter)
        assert [i["id"] for i in items] == [e["id"] for e in expected]
        assert 0 < len(items) <= 250
    week = [g for g in listing_gets(fake_reddit) if g.path == "/r/news/controversial"]
    assert week and all(g.query["t"] == "week" for g in week)
    assert len(list(iter_praw_submissions(reddit, "news", "top", "week", None))) < 250


def test_bad_arguments_are_refused(fake_reddit: FakeRedditSite) -> None:
    reddit = make_reddit(fake_reddit.site)
    with pytest.raises(ValueError, match="listing"):
        next(iter_praw_submissions(reddit, "news", "rising", "all", 10))
    with pytest.raises(ValueError, match="time_filter"):
        next(iter_praw_submissions(reddit, "news", "top", "decade", 10))


@pytest.mark.realdata
def test_real_listings_served_through_praw(fake_reddit: FakeRedditSite, shared_data: Path) -> None:
    folder = shared_data / "reddit-api"
    served: dict[str, dict] = {}
    for path in sorted(folder.glob("*_20*.json")):
        for child in api_listing_children(path):
            served.setdefault(child["id"], child)
    children = list(served.values())
    assert len(children) > 1000  # more than one listing can hold: PRAW stops where Reddit stops
    fake_reddit.server.add_subreddit("cassettes", children)
    reddit = make_reddit(fake_reddit.site)
    items = list(iter_praw_submissions(reddit, "cassettes", "hot", "all", None))
    assert len(items) == 1000
    assert len(listing_gets(fake_reddit)) == 10
    for item, original in zip(items, children[:1000]):
        assert parse_submission(item) == parse_submission(original)
    assert sum(parse_submission(i).is_self for i in items) == sum(c["is_self"] for c in children[:1000])


def test_rate_limit_headers_make_praw_wait(fake_reddit: FakeRedditSite) -> None:
    server = fake_reddit.server
    server.ratelimit_budget, server.ratelimit_window_s = 2, 1.0  # two requests a second
    reddit = make_reddit(fake_reddit.site)
    items = list(iter_praw_submissions(reddit, "news", "top", "all", None))
    assert len(items) == 250
    gets = listing_gets(fake_reddit)
    assert [g.status for g in gets] == [200, 200, 200]  # never over the budget: no 429
    # after the second request the headers said remaining=0, reset=1: PRAW slept before the third
    assert gets[2].at - gets[1].at >= 0.9
    assert gets[1].at - gets[0].at < 0.9


def test_wrong_secret_names_the_site_and_hides_the_secret(fake_reddit: FakeRedditSite, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reddit = make_reddit(fake_reddit.bad_site)
    with pytest.raises(RedditAuthError) as caught:
        check_reddit_auth(reddit, fake_reddit.bad_site)
    message = str(caught.value)
    assert repr(fake_reddit.bad_site) in message and "HTTP 401" in message and "client_secret" in message
    assert fake_reddit.wrong_secret not in message and fake_reddit.client_secret not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert fake_reddit.wrong_secret not in logged and fake_reddit.client_secret not in logged
    assert [p.status for p in token_posts(fake_reddit)] == [401]
    assert listing_gets(fake_reddit) == []


def test_listing_with_wrong_secret_is_an_auth_error(fake_reddit: FakeRedditSite) -> None:
    reddit = make_reddit(fake_reddit.bad_site)
    with pytest.raises(RedditAuthError, match="r/news top") as caught:
        list(iter_praw_submissions(reddit, "news", "top", "all", 10))
    assert fake_reddit.wrong_secret not in str(caught.value)


def test_praw_environment_variables_are_honoured(fake_reddit: FakeRedditSite, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("praw_site", fake_reddit.site)
    reddit = make_reddit(None)
    check_reddit_auth(reddit, None)
    monkeypatch.setenv("praw_client_secret", fake_reddit.wrong_secret)
    with pytest.raises(RedditAuthError, match=repr(fake_reddit.site)):
        check_reddit_auth(make_reddit(None), None)


def test_unknown_subreddit_is_a_listing_error(fake_reddit: FakeRedditSite) -> None:
    reddit = make_reddit(fake_reddit.site)
    with pytest.raises(RedditListingError, match=r"r/nosuchsub new .*HTTP 404"):
        list(iter_praw_submissions(reddit, "nosuchsub", "new", "all", 10))


def _add_site(site: FakeRedditSite, name: str, body: str) -> None:
    ini = site.config_dir / "praw.ini"
    ini.write_text(ini.read_text() + f"\n[{name}]\n{body}")
    reset_praw_config_cache()


def test_configuration_problems_are_clear(fake_reddit: FakeRedditSite) -> None:
    with pytest.raises(RedditAuthError, match="'no-such-site' is not in any praw.ini"):
        make_reddit("no-such-site")
    _add_site(fake_reddit, "no-id", f"client_secret=x1234\noauth_url={fake_reddit.server.url}\n")
    with pytest.raises(RedditAuthError, match="'no-id' has no client_id"):
        make_reddit("no-id")


def test_the_default_user_agent_follows_reddits_rule(fake_reddit: FakeRedditSite, monkeypatch, caplog) -> None:
    """<platform>:<app ID>:<version> (by /u/<username>), the username from praw.ini or praw_username."""
    from importlib import metadata

    server = fake_reddit.server
    body = (f"client_id={server.client_id}\nclient_secret={server.client_secret}\noauth_url={server.url}\n"
            f"reddit_url={server.url}\nshort_url={server.url}\ncheck_for_updates=False\n")
    _add_site(fake_reddit, "no-agent", body + "username=corpus_builder\n")
    reddit = make_reddit("no-agent")
    assert len(list(iter_praw_submissions(reddit, "science", "top", "all", 5))) == 5
    agent = listing_gets(fake_reddit)[-1].user_agent
    rule = re.compile(r"^python:webtext:(?P<version>[^ :]+) \(by /u/corpus_builder\) PRAW/")  # PRAW appends its own
    assert rule.match(agent), agent
    assert rule.match(agent)["version"] == metadata.version("webtext")
    assert "user_agent" not in caplog.text

    _add_site(fake_reddit, "anonymous", body)
    monkeypatch.setenv("praw_username", "from_the_environment")
    assert make_reddit("anonymous").config.user_agent.endswith("(by /u/from_the_environment)")
    monkeypatch.delenv("praw_username")
    reset_praw_config_cache()
    anonymous = make_reddit("anonymous")
    assert anonymous.config.user_agent.startswith("python:webtext:")
    assert "by https://github.com/webtext-corpus/webtext" in anonymous.config.user_agent
    assert "'anonymous' sets no user_agent and no username" in caplog.text and "praw_username" in caplog.text


def test_fake_escapes_strings_without_raw_json(fake_reddit: FakeRedditSite) -> None:
    """The fake behaves like Reddit for clients that forget raw_json=1 (PRAW always sends it)."""
    import requests

    server = fake_reddit.server
    auth = requests.post(f"{server.url}/api/v1/access_token", auth=(server.client_id, server.client_secret),
                         data={"grant_type": "client_credentials"}, timeout=10)
    token = auth.json()["access_token"]
    page = requests.get(f"{server.url}/r/news/hot", params={"limit": 3}, headers={"Authorization": f"bearer {token}"}, timeout=10)
    assert page.status_code == 200 and {"x-ratelimit-remaining", "x-ratelimit-used", "x-ratelimit-reset"} <= set(page.headers)
    titles = [child["data"]["title"] for child in page.json()["data"]["children"]]
    assert len(titles) == 3 and all("&amp;" in t for t in titles)
    unauthorized = requests.get(f"{server.url}/r/news/hot", timeout=10)
    assert unauthorized.status_code == 401
    assert json.loads(unauthorized.text) == {"message": "Unauthorized", "error": 401}


def test_unreachable_reddit_is_an_auth_error_naming_the_site(fake_reddit: FakeRedditSite) -> None:
    reddit = make_reddit(fake_reddit.site)
    fake_reddit.server.stop()
    with pytest.raises(RedditAuthError, match=rf"{fake_reddit.site!r}.*cannot reach Reddit") as caught:
        check_reddit_auth(reddit, fake_reddit.site)
    assert fake_reddit.client_secret not in str(caught.value)
