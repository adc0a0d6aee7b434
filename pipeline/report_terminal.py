"""The terminal summary of `webtext stats`: the funnel, then one table of counters per stage (each counter once)."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table


def _number(value) -> str:
    return "—" if value is None else f"{value:,}"


def funnel_table(summary: dict) -> Table:
    table = Table(title=f"run {summary['run']}: funnel", title_justify="left")
    for column, justify in (("step", "left"), ("count", "right"), ("of previous", "right"), ("top rejects", "left")):
        table.add_column(column, justify=justify)
    for row in summary["funnel"]:
        share = "" if row["share_of_previous"] is None else f"{row['share_of_previous']:.1%}"
        count = _number(row["count"]) + (f" ({row['tokens']:,} tokens)" if "tokens" in row else "")
        top = ", ".join(f"{r['reason']} {r['count']:,}" for r in row["top_rejects"])
        table.add_row(row["step"], count, share, top)
    return table


def stage_table(name: str, info: dict) -> Table:
    table = Table(title=f"{name} ({info['seconds']} s)", title_justify="left")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for counter, value in sorted(info["counters"].items()):
        label = f"rejected {counter[len('reject.'):]}" if counter.startswith("reject.") else counter
        table.add_row(label, _number(value))
    return table


def print_summary(summary: dict, console: Console | None = None) -> None:
    console = console or Console(width=None if sys.stdout.isatty() else 120)  # a log file gets the wide tables
    console.print(funnel_table(summary))
    for name, info in summary["stages"].items():
        console.print(stage_table(name, info))
