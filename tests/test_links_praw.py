"""`webtext links` through PRAW against a fake Reddit API on 127.0.0.1: OAuth, pagination, rules, clear auth errors."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from webtext.pipeline import layout
from webtext.pipeline.demo_dump import make_sample_dump


def rows(folder) -> list[dict]:
    return [row for path in sorted(folder.glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def expected_links(listings: list[list[dict]]) -> dict[str, int]:
    """Straightforward reference: outbound, safe-for-work, non-media link posts; a URL needs one post with 3 karma."""
    best: dict[str, int] = defaultdict(int)
    for listing in listings:
        for item in listing:
            url = item["url"]
            if item["is_self"] or item["over_18"] or "imgur.com" in url:
                continue
            best[url] = max(best[url], int(item["score"]))
    return {url: score for url, score in best.items() if score >= 3}


def test_praw_listings_become_links(fake_reddit, tmp_path, webtext_cli, beam_args):
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--praw-site", fake_reddit.site, "--praw-subreddits", "news,science",
                       "--praw-listing", "top", "--praw-time-filter", "all", *beam_args) == 0
    served = [fake_reddit.server.listing(name, "top") for name in ("news", "science")]
    expected = expected_links(served)
    links = rows(Path(run, layout.LINKS))
    assert {row["url"]: row["score"] for row in links} == expected
    rejects = rows(Path(run, layout.REJECTS, "links"))
    assert sum(row["num_submissions"] for row in links) + len(rejects) == sum(len(listing) for listing in served)
    assert {r["reason"] for r in rejects} >= {"self-post", "nsfw", "media-host", "low-karma"}
    paths = [request.path for request in fake_reddit.requests]
    assert "/api/v1/access_token" in paths
    listing_requests = [r for r in fake_reddit.requests if r.path.startswith("/r/news/top")]
    assert len(listing_requests) >= 3  # 250 posts at 100 a page: pagination with `after`
    assert any("after" in r.query for r in listing_requests)


def test_praw_and_dumps_together(fake_reddit, tmp_path, webtext_cli, beam_args):
    dump = tmp_path / "RS_2016-01.zst"
    planted = make_sample_dump(dump, n=500, seed=3)
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--reddit-dumps", str(dump), "--praw-site", fake_reddit.site,
                       "--praw-subreddits", "science", "--praw-listing", "new", *beam_args) == 0
    links = rows(Path(run, layout.LINKS))
    praw_expected = expected_links([fake_reddit.server.listing("science", "new")])
    assert len(links) == planted["links"] + len(praw_expected)


def test_authentication_failure_names_the_site_not_the_secret(fake_reddit, tmp_path, webtext_cli, beam_args, capsys):
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--praw-site", fake_reddit.bad_site, "--praw-subreddits", "news", *beam_args) == 2
    err = capsys.readouterr().err
    assert fake_reddit.bad_site in err and "Traceback" not in err
    assert fake_reddit.wrong_secret not in err and fake_reddit.client_secret not in err
    assert not Path(run, layout.LINKS, layout.SUCCESS).exists()


def test_unknown_subreddit_is_a_reject_not_a_crash(fake_reddit, tmp_path, webtext_cli, beam_args):
    run = tmp_path / "run"
    assert webtext_cli("links", run, "--praw-site", fake_reddit.site, "--praw-subreddits", "science,doesnotexist",
                       *beam_args) == 0
    rejects = rows(Path(run, layout.REJECTS, "links"))
    failed = [r for r in rejects if r["reason"] == "listing-failed"]
    assert len(failed) == 1 and "doesnotexist" in failed[0]["detail"]
    assert rows(Path(run, layout.LINKS))  # r/science still made it
