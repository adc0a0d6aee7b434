"""The terminal text of `webtext inspect`: each sub-command's items (pipeline/corpus_inspect.py) drawn with rich."""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Iterable

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

DIFF_CONTEXT = 8  # equal words shown either side of a change in a word diff
OUTCOME_STYLES = {"kept": "green", "dropped": "bold red", "unaccounted": "bold red", "not run": "yellow",
                  "not reached": "dim", "not seen": "bold red"}


def console() -> Console:
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)  # a pipe or log gets wide lines


def _date(epoch: int | None) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if epoch else "—"


def _fields(rows: Iterable[tuple[str, object]], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, Text("—" if value in (None, "", []) else str(value)))
    return table


def _one_line(text: str) -> str:
    return " ".join(text.split())


def print_docs(items: Iterable[dict], out: Console | None = None) -> None:
    out = out or console()
    count = 0
    for item in items:
        count += 1
        out.print(Text.assemble((item["doc_id"] or "", "bold cyan"), "  ", item["url"] or ""))
        language = f"{item['language']} {item['language_score']:.2f}" if item.get("language_score") is not None \
            else item.get("language")
        out.print(Text(f"  score {item['score']} · {language} · {item['n_words']} words · {item['domain']}",
                       style="dim"))
        if "match" in item:
            out.print(Text.assemble("  match: ", (_one_line(item["match"]["context"]), "yellow")))
        out.print(Padding(Text(_one_line(item["text_start"]) + " …"), (0, 0, 0, 2)))
        out.print()
    out.print(Text(f"{count} document(s)", style="dim"))


def print_rejects(items: Iterable[dict], out: Console | None = None) -> None:
    out = out or console()
    count = 0
    for item in items:
        count += 1
        where = item.get("url") or item.get("item_id") or "—"
        out.print(Text.assemble((f"{item['reason']:<22}", "bold"), " ", where, "  ", (item.get("detail") or "", "dim")))
    out.print(Text(f"{count} reject(s)", style="dim"))


def _fate(corpus: dict) -> str:
    parts = []
    for stage, fate in corpus.items():
        reason = f" ({fate['reason']}: {fate['detail']})" if fate.get("reason") else ""
        parts.append(f"{stage} {fate['outcome']}{reason}")
    return "; ".join(parts)


def print_doc(items: Iterable[dict], out: Console | None = None) -> None:
    out = out or console()
    for doc in items:
        tokens = doc.get("tokens")
        token_text = None if tokens is None else (
            f"{tokens['tokens']:,} (text + <|endoftext|>, {tokens['tokenizer']}"
            + ("" if tokens["same_tokenizer_as_shards"] is not False else "; NOT the tokenizer the shards were made "
               "with") + ")")
        out.print(_fields([
            ("doc_id", doc["doc_id"]), ("url", doc.get("url")), ("final url", doc.get("final_url")),
            ("title", doc.get("title")), ("date", doc.get("date")), ("domain", doc.get("domain")),
            ("language", f"{doc.get('language')} ({doc.get('language_score')})"),
            ("words", doc.get("n_words")), ("tokens", token_text), ("charset", doc.get("charset")),
            ("in the corpus", _fate(doc["corpus"])),
        ], title="document"))
        out.print(_fields([
            ("score", f"{doc.get('score')} (summed over submissions: {doc.get('score_sum')})"),
            ("submissions", f"{doc.get('num_submissions')}: {', '.join(doc.get('submission_ids') or [])}"),
            ("subreddits", ", ".join(doc.get("subreddits") or [])), ("first posted", _date(doc.get("created_utc"))),
            ("reddit title", doc.get("reddit_title")), ("fetched", _date(doc.get("fetched_at"))),
        ], title="reddit"))
        fetch = doc.get("fetch_log")
        if fetch:
            out.print(_fields([(name, value) for name, value in fetch.items() if name not in ("url", "url_key")],
                              title="fetch-log row"))
        record = doc.get("warc_record")
        if record:
            out.print(_fields(list(record.items()), title="WARC record"))
        if doc.get("cluster"):
            out.print(_fields([(r["doc_id"], f"{'survivor' if r['kept'] else r['reason']}, Jaccard {r['jaccard']:.3f}")
                               for r in doc["cluster"]], title="duplicate cluster"))
        out.rule("text")
        out.print(Text(doc.get("text") or ""))
        out.rule()


def diff_text(ops: list[dict]) -> Text:
    """A word diff as git's --word-diff draws it: [-survivor's words-]{+member's words+}, long equal runs cut short."""
    text = Text()
    for index, op in enumerate(ops):
        if op["op"] == "equal":
            run = op["text"].split()
            first, last = index == 0, index == len(ops) - 1
            if len(run) > 2 * DIFF_CONTEXT + 1:
                head = [] if first else run[:DIFF_CONTEXT]
                tail = [] if last else run[-DIFF_CONTEXT:]
                text.append(" ".join(head) + (" " if head else ""))
                text.append(f"… {len(run) - len(head) - len(tail)} equal words …", style="dim")
                text.append((" " if tail else "") + " ".join(tail) + " ")
            else:
                text.append(" ".join(run) + " ")
            continue
        if op["survivor"]:
            text.append(f"[-{op['survivor']}-]", style="red strike")
        if op["member"]:
            text.append(f"{{+{op['member']}+}}", style="green")
        text.append(" ")
    return text


def print_cluster(items: Iterable[dict], out: Console | None = None) -> None:
    out = out or console()
    for cluster in items:
        if cluster["cluster_id"] is None:
            out.print(f"{cluster['doc_id']} is in no duplicate cluster: dedup found no copy of it")
            continue
        survivor = cluster["survivor"]
        out.rule(f"survivor {survivor['doc_id']}")
        out.print(Text(f"{survivor['url']} · {survivor['n_words']} words"))
        out.print(Text(_one_line(survivor["text"] or "")[:600] + " …", style="dim"))
        for member in cluster["members"]:
            out.rule(f"{member['reason']} {member['doc_id']}")
            out.print(Text(f"{member['url']} · {member['n_words']} words · Jaccard {member['jaccard']:.3f} exact, "
                           f"{member['jaccard_estimated']:.3f} estimated by MinHash (what dedup decided on) · "
                           f"{cluster['shingle_words']}-word shingles"))
            changes = [op for op in member["diff"] if op["op"] != "equal"]
            out.print(diff_text(member["diff"]) if changes else Text("no word differs from the survivor's text",
                                                                     style="dim"))


def print_url(items: Iterable[dict], out: Console | None = None) -> None:
    out = out or console()
    for trace in items:
        out.print(_fields([("url", trace["url"]), ("url_key", trace["url_key"] or f"none: {trace['invalid']}"),
                           ("doc_id", trace["doc_id"])]))
        table = Table(title_justify="left")
        for column in ("stage", "outcome", "why", "detail"):
            table.add_column(column, overflow="fold")
        for step in trace["stages"]:
            why = " · ".join(filter(None, [step.get("step"), step.get("reason")]))
            table.add_row(step["stage"], Text(step["outcome"], style=OUTCOME_STYLES.get(step["outcome"], "")),
                          why, Text(_step_detail(step)))
        out.print(table)
        dropped = trace["dropped_at"]
        if dropped:
            where = " · ".join(filter(None, [dropped["stage"], dropped.get("step")]))
            out.print(Text.assemble(("dropped", "bold red"), f" at {where}: {dropped.get('reason') or ''} "
                                    f"{dropped.get('detail') or ''}"))
        else:
            out.print(Text.assemble(("kept", "bold green"), " by every stage that has run"
                                    + (f": document {trace['doc_id']}" if trace["doc_id"] else "")))


def _step_detail(step: dict) -> str:
    parts = [step.get("detail") or ""]
    link = step.get("link")
    if link:
        parts.append(f"score {link['score']}, {link['num_submissions']} submission(s) in "
                     f"{', '.join(link['subreddits'] or [])}")
    rejected = step.get("rejected_submissions")
    if rejected:
        parts.append("rejected submissions: " + ", ".join(f"{r['submission_id']} {r['reason']}" for r in rejected))
    fetch = step.get("fetch_log")
    if fetch:
        moved = fetch.get("final_url") not in (None, fetch["url"])
        parts.append(f"fetch: status {fetch['status']}, {fetch['bytes']} bytes, {fetch['attempts']} attempt(s)"
                     + (f", ended at {fetch['final_url']}" if moved else ""))
    return "; ".join(p for p in parts if p)


RENDER = {"docs": print_docs, "doc": print_doc, "rejects": print_rejects, "cluster": print_cluster, "url": print_url}
