"""WebText's link rules: per-submission rejects in their fixed order, merging by URL under the karma
rules, and the accounting (every submission in a row or one reject) on real and synthetic dumps."""
from __future__ import annotations

import dataclasses
import itertools
import os
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.dump_files import raw_records
from webtext.crawl.reddit.dumps import iter_dump_records
from webtext.crawl.reddit.linkrules import LinkRow, LinkRules, judge_submission, merge_link, submission_reject
from webtext.crawl.reddit.submissions import BadSubmission, Submission, parse_submission
from webtext.crawl.reddit.urls import UrlFilter
from webtext.pipeline.demo_dump import make_sample_dump

RULES = LinkRules()


def sub(id: str = "abc", url: str = "https://example.com/story", score: int = 5, created_utc: int = 1_500_000_000,
        is_self: bool = False, over_18: bool = False, subreddit: str = "news", title: str = "A story") -> Submission:
    return Submission(id=id, url=url, score=score, created_utc=created_utc, is_self=is_self, over_18=over_18,
                      subreddit=subreddit, title=title, permalink=f"/r/{subreddit}/comments/{id}/a_story/", domain="")


# ---- per-submission rules -------------------------------------------------------------------------

@pytest.mark.parametrize(("submission", "reason"), [
    (sub(is_self=True, over_18=True, url=""), "self-post"),
    (sub(url=""), "missing-url"),
    (sub(url="   "), "missing-url"),
    (sub(is_self=True, url="//example.com/"), "self-post"),
    (sub(url="//schemeless.com/"), "schemeless-url"),
    (sub(url=" //example.com/r/news/comments/abc"), "schemeless-url"),
    (sub(url="/r/news/comments/abc/a_story/"), "self-post"),
    (sub(url="https://www.reddit.com/r/news/comments/abc/a_story/"), "self-post"),
    (sub(url="http://old.reddit.com/r/news/comments/abc"), "self-post"),
    (sub(url="https://redd.it/abc"), "self-post"),
    (sub(url="https://www.reddit.com/r/news/comments/abcd/other/"), "reddit-host"),
    (sub(url="https://www.reddit.com/r/pics/comments/xyz/other/"), "reddit-host"),
    (sub(url="https://example.com/comments/abc/"), None),  # not a Reddit host
    (sub(over_18=True, created_utc=10, url="ftp://x"), "nsfw"),
    (sub(created_utc=10, url="ftp://x"), "too-old"),
    (sub(created_utc=2_000_000_000, url="ftp://x"), "too-new"),
    (sub(url="ftp://x/en.wikipedia.org"), "invalid-url"),
    (sub(url="https://en.wikipedia.org/wiki/X.jpg"), "wikipedia"),
    (sub(url="https://v.redd.it/x"), "reddit-host"),
    (sub(url="https://i.imgur.com/x.jpg"), "media-host"),
    (sub(url="https://twitter.com/a/status/1"), "blocked-domain"),
    (sub(url="https://example.com/paper.pdf"), "blocked-extension"),
    (sub(url="https://example.com/story?utm_source=reddit"), None),
])
def test_reasons_in_their_fixed_order(submission: Submission, reason: str | None) -> None:
    rules = LinkRules(after=1_000_000_000, before=1_800_000_000)
    found = submission_reject(submission, rules)
    assert (found[0] if found else None) == reason


def test_verdict_gives_the_key_or_the_reason() -> None:
    verdict = judge_submission(sub(url="HTTPS://Example.com:443/story?utm_medium=x&amp;b=1#top"), RULES)
    assert verdict == ("https://example.com/story?b=1", None, "")
    bad = judge_submission(sub(url="http://example.com:99999/"), RULES)
    assert bad == (None, "invalid-url", "bad-port")


def test_nsfw_and_date_bounds_are_options() -> None:
    nsfw = sub(over_18=True)
    assert submission_reject(nsfw, RULES) == ("nsfw", "over_18")
    assert submission_reject(nsfw, LinkRules(keep_nsfw=True)) is None
    rules = LinkRules(after=100, before=200)
    assert submission_reject(sub(created_utc=100), rules) is None  # after is inclusive
    assert submission_reject(sub(created_utc=199), rules) is None
    assert submission_reject(sub(created_utc=200), rules) == ("too-new", "created_utc 200 >= before 200")
    assert submission_reject(sub(created_utc=99), rules) == ("too-old", "created_utc 99 < after 100")


def test_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="karma_rule"):
        LinkRules(karma_rule="median")
    with pytest.raises(ValueError, match="earlier"):
        LinkRules(after=10, before=10)


def test_custom_filter_is_used() -> None:
    rules = LinkRules(url_filter=UrlFilter(blocked_domains=frozenset({"example.com"})))
    assert submission_reject(sub(), rules) == ("blocked-domain", "example.com")
    assert submission_reject(sub(url="https://i.imgur.com/x.jpg"), rules) is None
    assert submission_reject(sub(url="https://www.reddit.com/r/news/comments/abc/"), rules)[0] == "self-post"


# ---- merging ------------------------------------------------------------------------------------

KEY = "https://example.com/story"


def test_merge_under_the_max_rule() -> None:
    subs = [
        sub("b1", score=1, created_utc=300, subreddit="news", url="https://example.com/story?utm_source=x"),
        sub("a2", score=5, created_utc=200, subreddit="science", title="Best", url="HTTPS://EXAMPLE.com/story"),
        sub("c3", score=2, created_utc=100, subreddit="news"),
    ]
    row, rejects = merge_link(KEY, subs, RULES)
    assert rejects == []
    assert row == LinkRow(url="HTTPS://EXAMPLE.com/story", url_key=KEY, domain="example.com", score=5, score_sum=8,
                          num_submissions=3, created_utc=100, subreddits=["news", "science"],
                          submission_ids=["a2", "b1", "c3"], title="Best")
    assert row.to_dict()["subreddits"] == ["news", "science"]
    assert set(row.to_dict()) == {f.name for f in dataclasses.fields(LinkRow)}


def test_low_karma_rejects_every_submission_of_the_url() -> None:
    subs = [sub("a", score=2), sub("b", score=1)]
    row, rejects = merge_link(KEY, subs, RULES)
    assert row is None
    assert [(s.id, reason, detail) for s, reason, detail in rejects] == [
        ("a", "low-karma", "max score 2 < 3"), ("b", "low-karma", "max score 2 < 3")]


def test_sum_rule_adds_scores() -> None:
    rules = LinkRules(karma_rule="sum")
    row, rejects = merge_link(KEY, [sub("a", score=2), sub("b", score=1)], rules)
    assert row is not None and row.score == 2 and row.score_sum == 3 and rejects == []
    row, rejects = merge_link(KEY, [sub("a", score=1), sub("b", score=1)], rules)
    assert row is None and {r[1:] for r in rejects} == {("low-karma", "score sum 2 < 3")}
    row, _ = merge_link(KEY, [sub("a", score=2), sub("b", score=1)], LinkRules(min_karma=2))
    assert row is not None


def test_duplicate_copies_of_one_submission() -> None:
    copies = [sub("a", score=2, created_utc=10), sub("a", score=7, created_utc=10), sub("a", score=7, created_utc=10, title="later")]
    row, rejects = merge_link(KEY, copies + [sub("b", score=1)], RULES)
    assert row is not None
    assert row.submission_ids == ["a", "b"] and row.num_submissions == 2
    assert row.score == 7 and row.score_sum == 8 and row.title == "later"
    assert sorted((s.score, s.title, reason) for s, reason, _ in rejects) == [
        (2, "A story", "duplicate-submission"), (7, "A story", "duplicate-submission")]


def test_duplicates_of_a_low_karma_url_are_counted_once_each() -> None:
    row, rejects = merge_link(KEY, [sub("a", score=1), sub("a", score=2)], RULES)
    assert row is None
    assert sorted(reason for _, reason, _ in rejects) == ["duplicate-submission", "low-karma"]


def test_best_submission_ties_break_by_time_then_id() -> None:
    row, _ = merge_link(KEY, [sub("b", score=5, created_utc=20, title="B"), sub("c", score=5, created_utc=10, title="C"),
                              sub("a", score=5, created_utc=10, title="A")], RULES)
    assert row.title == "A"


def test_merge_is_the_same_for_every_input_order() -> None:
    subs = [sub("a", score=4, created_utc=5, title="t1", url="https://example.com/story#x"),
            sub("a", score=4, created_utc=9, title="t2"),
            sub("b", score=4, created_utc=5, title="t3", url="http://EXAMPLE.com/story"),
            sub("c", score=1, created_utc=1, subreddit="zzz"),
            sub("c", score=0, created_utc=1, subreddit="zzz")]
    outcomes = set()
    for order in itertools.permutations(subs):
        row, rejects = merge_link(KEY, order, RULES)
        outcomes.add((repr(row), repr(rejects)))
    assert len(outcomes) == 1


# ---- accounting on real dumps ----------------------------------------------------------------------

def _shipped_list(name: str) -> list[str]:
    text = resources.files("webtext.crawl.reddit").joinpath("data", name).read_text()
    return [line.split("#")[0].split()[0] for line in text.splitlines() if line.split("#")[0].strip()]


def _expected_by_plain_loop(records: list[dict]) -> tuple[set[tuple[str, ...]], Counter]:
    """WebText's rules written as a plain loop with the standard library, for the default rules:
    the groups of submission ids that become links, and the reject counts."""
    blocked = {domain.lower() for domain in _shipped_list("blocked_domains.txt")}
    extensions = {"." + e.lower().lstrip(".") for e in _shipped_list("blocked_extensions.txt")}
    rejects: Counter = Counter()
    by_key: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        url = record["url"].replace("&amp;", "&").strip()
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        suffixes = {".".join(host.split(".")[i:]) for i in range(host.count(".") + 1)}
        if record.get("is_self"):
            rejects["self-post"] += 1
        elif record.get("over_18"):
            rejects["nsfw"] += 1
        elif suffixes & blocked:
            rejects["domain"] += 1
        elif os.path.splitext(parts.path)[1].lower() in extensions:
            rejects["blocked-extension"] += 1
        else:
            query = tuple(sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not k.startswith("utm_")))
            by_key[(parts.scheme.lower(), host, parts.path or "/", query)].append(record)
    groups = set()
    for members in by_key.values():
        best: dict[str, int] = {}
        for record in members:
            best[record["id"]] = max(best.get(record["id"], -(10**9)), int(record.get("score") or 0))
        rejects["duplicate-submission"] += len(members) - len(best)
        if max(best.values()) >= 3:
            groups.add(tuple(sorted(best)))
        else:
            rejects["low-karma"] += len(best)
    return groups, rejects


def _run_library(paths: list[Path], rules: LinkRules) -> tuple[list[LinkRow], Counter, int]:
    """The library composed as the pipeline will: read, parse, judge, group by key, merge."""
    rejects: Counter = Counter()
    groups: dict[str, list[Submission]] = defaultdict(list)
    read = 0
    for path in paths:
        with open(path, "rb") as handle:
            for line in iter_dump_records(handle, path.name):
                read += 1
                if line.error:
                    rejects[line.error] += 1
                    continue
                try:
                    submission = parse_submission(line.record)
                except BadSubmission as exc:
                    rejects[exc.reason] += 1
                    continue
                verdict = judge_submission(submission, rules)
                if verdict.reason:
                    rejects[verdict.reason] += 1
                else:
                    groups[verdict.url_key].append(submission)
    rows = []
    for key in sorted(groups):
        row, merged_rejects = merge_link(key, groups[key], rules)
        rejects.update(reason for _, reason, _ in merged_rejects)
        if row is not None:
            rows.append(row)
    return rows, rejects, read


@pytest.mark.realdata
def test_accounting_on_all_real_dumps(shared_data: Path) -> None:
    paths = sorted(p for p in (shared_data / "reddit-dumps").iterdir() if p.suffix in (".xz", ".zst", ".ndjson"))
    assert len(paths) == 5
    rows, rejects, read = _run_library(paths, RULES)
    records = [r for p in paths for r in raw_records(p)]
    assert read == len(records) == 2 * 103 + 2 * 1079 + 31

    # every submission read is in exactly one place
    assert sum(row.num_submissions for row in rows) + sum(rejects.values()) == read
    ids_in_rows = [i for row in rows for i in row.submission_ids]
    assert len(ids_in_rows) == len(set(ids_in_rows))

    groups, expected = _expected_by_plain_loop(records)
    assert {tuple(row.submission_ids) for row in rows} == groups
    assert len(rows) == len(groups)
    domain_rejects = rejects["wikipedia"] + rejects["reddit-host"] + rejects["media-host"] + rejects["blocked-domain"]
    assert domain_rejects == expected["domain"]
    for reason in ("self-post", "nsfw", "blocked-extension", "duplicate-submission", "low-karma"):
        assert rejects[reason] == expected[reason], reason
    # the .zst files repeat the .xz files (less the 7 July links rejected before merging, once per copy)
    # and the mixed-eras file repeats June's ids 87-91
    assert rejects["duplicate-submission"] == 103 + 1079 - 7 + 5


@pytest.mark.realdata
def test_june_2005_gives_the_manifest_figure(shared_data: Path) -> None:
    rows, rejects, read = _run_library([shared_data / "reddit-dumps" / "RS_2005-06.zst"], RULES)
    assert read == 103
    assert len(rows) == 83  # MANIFEST.md: 83 submissions with score >= 3, 83 distinct URLs, none blocked
    assert rejects == Counter({"low-karma": 20})
    assert all(row.domain and row.score >= 3 and row.url_key.startswith("http") for row in rows)
    top = max(rows, key=lambda row: row.score)
    assert (top.url, top.title, top.score) == ("http://www.downingstreetmemo.com", "The Downing Street Memo", 183)


@pytest.mark.realdata
def test_sum_rule_admits_more_links_on_real_dumps(shared_data: Path) -> None:
    paths = [shared_data / "reddit-dumps" / "RS_v2_2005-07.xz"]
    max_rows, _, read = _run_library(paths, RULES)
    sum_rows, sum_rejects, _ = _run_library(paths, LinkRules(karma_rule="sum"))
    assert {r.url_key for r in max_rows} <= {r.url_key for r in sum_rows}
    assert sum(r.num_submissions for r in sum_rows) + sum(sum_rejects.values()) == read


# ---- accounting on generated dumps -----------------------------------------------------------------

def test_planted_figures_are_found(tmp_path: Path) -> None:
    path = tmp_path / "RS_2015-01.zst"
    planted = make_sample_dump(path, 20_000, seed=11)
    rows, rejects, read = _run_library([path], RULES)
    assert read == planted["lines"]
    assert len(rows) == planted["links"]
    assert dict(rejects) == planted["expected_rejects"]
    assert sum(row.num_submissions for row in rows) == planted["merged_submissions"]
    assert sum(row.num_submissions for row in rows) + sum(rejects.values()) == read
    for reason in ("self-post", "nsfw", "wikipedia", "reddit-host", "media-host", "blocked-extension", "invalid-url",
                   "duplicate-submission", "low-karma", "bad-json", "missing-id", "missing-field"):
        assert rejects[reason] > 0, reason

    sum_rows, sum_rejects, _ = _run_library([path], LinkRules(karma_rule="sum"))
    assert len(sum_rows) == planted["links_sum_rule"] > len(rows)
    assert sum_rejects["low-karma"] == planted["low_karma_sum_rule"]


def test_sample_with_given_urls_links_each_of_them(tmp_path: Path) -> None:
    urls = [f"http://127.0.0.1:8123/site{i}/page-{i}.html?a=1&b={i}" for i in range(40)]
    path = tmp_path / "RS_demo.ndjson"
    planted = make_sample_dump(path, 1_000, seed=4, urls=urls)
    rows, rejects, _ = _run_library([path], RULES)
    assert planted["urls_covered"] == 40 == planted["links"] == len(rows)
    assert sorted(row.url for row in rows) == sorted(urls)
