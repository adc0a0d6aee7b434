"""A host's links fetched one after another: the per-host cap, the host-down rule, redirects between hosts and links
an earlier (killed) run finished."""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Iterable, Iterator

from .fetcher import Fetcher
from .outcomes import NETWORK_FAILURES, FetchResult, error_detail

log = logging.getLogger(__name__)


def redirect_item(link: dict, result: FetchResult) -> dict:
    """A link whose fetch stopped at a redirect to another host, as an item for `crawl_host` of that host."""
    return {"redirected_link": link, "result": result.to_dict()}


def finished_item(link: dict, row: dict) -> dict:
    """A link that an earlier run finished, with its fetch-log row from that run's journal, as a `crawl_host` item."""
    return {"finished_link": link, "row": row}


def item_link(item: dict) -> dict:
    """The link row of a `crawl_host` item."""
    return item.get("redirected_link") or item.get("finished_link") or item


def _work(item: dict) -> tuple[dict, FetchResult | None, dict | None]:
    """(link, the result to resume or None, the earlier run's row or None) of a `crawl_host` item."""
    if "redirected_link" in item:
        return item["redirected_link"], FetchResult.from_dict(item["result"]), None
    if "finished_link" in item:
        return item["finished_link"], None, item["row"]
    return item, None, None


def crawl_host(fetcher: Fetcher, links: Iterable[dict], max_pages: int = 0, max_network_failures: int = 0,
               stay_on_host: bool = False, recover: Callable[[dict, dict], FetchResult | None] | None = None,
               ) -> Iterator[tuple[dict, FetchResult]]:
    """Fetches one host's links in order of `url_key`, yielding (link, result) for every link.

    An item may also be a `redirect_item` (a link that another host redirected here): its fetch goes on from the
    redirect. With `stay_on_host`, a redirect to another host ends a link's fetch as a `pending` result.
    After `max_pages` links (0: no cap) the rest are rejected `host-cap`; after `max_network_failures` consecutive
    network failures (0: never) the host counts as down and the rest are rejected `host-unreachable`.
    A `finished_item` gets its earlier result back from `recover(link, row)` (None: fetch it after all) and counts
    toward the cap and the failures in a row as it did then, so a resumed host ends as an uninterrupted one."""
    failures_in_a_row = 0
    work = sorted((_work(item) for item in links), key=lambda pair: (pair[0].get("url_key") or "", pair[0]["url"]))
    for index, (link, resume, row) in enumerate(work):
        url = link["url"]
        recovered = recover(link, row) if row is not None and recover is not None else None
        if recovered is not None:
            if recovered.reason not in ("host-cap", "host-unreachable"):  # ended without a fetch: the count stands
                failures_in_a_row = failures_in_a_row + 1 if recovered.reason in NETWORK_FAILURES else 0
            yield link, recovered
            continue
        if max_pages and index >= max_pages:
            yield link, _ended(url, resume, "host-cap", f"more than {max_pages} links on this host")
            continue
        if max_network_failures and failures_in_a_row >= max_network_failures:
            yield link, _ended(url, resume, "host-unreachable",
                               f"{failures_in_a_row} network failures in a row on this host")
            continue
        try:
            result = fetcher.fetch_page(url, stay_on_host=stay_on_host, resume=resume)
        except Exception as error:  # a bug: keep the link in the accounting and go on with the host
            log.exception("fetching %s failed unexpectedly", url)
            result = _ended(url, resume, "fetch-error", error_detail(error))
        failures_in_a_row = failures_in_a_row + 1 if result.reason in NETWORK_FAILURES else 0
        yield link, result


def _ended(url: str, resume: FetchResult | None, reason: str, detail: str) -> FetchResult:
    """A link's result without (further) fetching: keeps what a resumed link had so far."""
    if resume is None:
        return FetchResult(url=url, reason=reason, detail=detail)
    return dataclasses.replace(resume, reason=reason, detail=detail, redirect_to=None, seen=[])
