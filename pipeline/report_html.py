"""RUN/stats/report.html: one self-contained page (inline CSS and matplotlib SVG, no script, no request) of a run."""
from __future__ import annotations

import html
import io
import json

SECTIONS = (("funnel", "Funnel"), ("rejects", "Rejects by stage and reason"), ("distributions", "Distributions"),
            ("domains", "Domains"), ("decontamination", "Decontamination"), ("training", "Training"),
            ("provenance", "Provenance"))
DISTRIBUTIONS = {  # name in stats.json -> (title, x label, what is counted, log-scale y)
    "document_words": ("Document length (words)", "words", "documents", False),
    "document_tokens": ("Tokens per document (shards)", "tokens", "documents", False),
    "language_score": ("Language score", "py3langid probability", "documents", False),
    "reddit_score": ("Karma (Reddit score of the link)", "score", "documents", True),
    "fetch_seconds": ("Fetch time", "seconds", "fetches", True),
    "extraction_yield": ("Extraction yield", "text bytes / bytes received", "pages", False),
}
STYLE = """
body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{padding:3px 10px;border-bottom:1px solid #ddd;vertical-align:top}
th{text-align:left;background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:1em}.plot{flex:0 0 34em}.plot svg{width:100%;height:auto}
.note{color:#666;font-size:.9em}code,pre{background:#f6f6f6}pre{padding:.5em;overflow-x:auto}
nav a{margin-right:1em}.bad{color:#b00;font-weight:bold}.good{color:#080;font-weight:bold}
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value))


def number(value) -> str:
    if value is None:
        return "—"
    return f"{value:,.4g}" if isinstance(value, float) else f"{value:,}"


def table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='n'>{cell}</td>" if i in numeric else f"<td>{cell}</td>"
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def reason_anchor(stage: str, reason: str) -> str:
    return f"reject-{stage}-{reason}".replace(" ", "-")


# -- plots -----------------------------------------------------------------------------------------------------------

def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "webtext"})
    return plt.subplots(figsize=(5.2, 2.8))


def svg(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def plot_block(title: str, body: str) -> str:
    return f"<div class='plot'><h3>{esc(title)}</h3>{body}</div>"


def histogram(dist: dict, xlabel: str, ylabel: str, log_y: bool) -> str:
    fig, ax = _figure()
    ax.hist(dist["sample"], bins=40, color="#4C72B0")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel if dist["sampled"] == dist["count"] else f"{ylabel} (sample)")
    if log_y:
        ax.set_yscale("log")
    return svg(fig)


def bars(labels: list[str], values: list[int], xlabel: str, ylabel: str, log_y: bool = False) -> str:
    fig, ax = _figure()
    ax.bar(labels, values, color="#55A868")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    else:
        ax.yaxis.get_major_locator().set_params(integer=True)
    ax.tick_params(axis="x", labelrotation=45 if len(labels) > 8 else 0)
    return svg(fig)


def s_curve(lsh: dict) -> str:
    import numpy as np

    fig, ax = _figure()
    s = np.linspace(0, 1, 201)
    ax.plot(s, 1 - (1 - s ** lsh["rows"]) ** lsh["bands"], color="#C44E52",
            label=f"{lsh['bands']} bands × {lsh['rows']} rows")
    points = lsh.get("candidate_probability_at_jaccard", {})
    ax.scatter([float(k) for k in points], list(points.values()), color="#222", zorder=3, s=12)
    ax.axvline(lsh["threshold"], color="#888", linestyle="--", label=f"threshold {lsh['threshold']}")
    ax.set_xlabel("Jaccard similarity")
    ax.set_ylabel("P(candidate pair)")
    ax.legend(loc="upper left")
    return svg(fig)


def training_plot(log: list[dict], keys: list[str], ylabel: str) -> str:
    fig, ax = _figure()
    for key in keys:
        rows = [r for r in log if r.get(key) is not None]
        ax.plot([r["tokens"] for r in rows], [r[key] for r in rows], marker="o" if key == "val_loss" else None,
                markersize=3, label=key)
    ax.set_xlabel("tokens")
    ax.set_ylabel(ylabel)
    if len(keys) > 1:
        ax.legend()
    return svg(fig)


# -- sections --------------------------------------------------------------------------------------------------------

def funnel_section(summary: dict) -> str:
    rows = []
    for row in summary["funnel"]:
        top = ", ".join(f"<a href='#{reason_anchor(r['stage'], r['reason'])}'>{esc(r['reason'])}</a> {r['count']:,}"
                        for r in row["top_rejects"])
        share = "" if row["share_of_previous"] is None else f"{row['share_of_previous']:.1%}"
        count = number(row["count"]) + (f" documents, {row['tokens']:,} tokens" if "tokens" in row else "")
        rows.append([esc(row["step"]), count, share, top or ""])
    return table(["step", "count", "share of previous step", "top reject reasons"], rows, {1, 2}) + \
        "<p class='note'>A step with — did not run (or its stage wrote no stats).</p>"


def rejects_section(summary: dict) -> str:
    parts = []
    for stage, reasons in summary["rejects"].items():
        if not reasons:
            continue
        parts.append(f"<h3>{esc(stage)}</h3>")
        rows = []
        for reason, entry in reasons.items():
            examples = "<br>".join(f"{esc(e['url'])} — {esc(e['detail'])}" for e in entry["examples"])
            rows.append([f"<span id='{reason_anchor(stage, reason)}'>{esc(reason)}</span>", number(entry["count"]),
                         examples])
        parts.append(table(["reason", "rows", "examples (URL — detail; quality rules: measured value vs threshold)"],
                           rows, {1}))
    return "".join(parts) or "<p>No rejects were written.</p>"


def distributions_section(summary: dict) -> str:
    plots = []
    for name, (title, xlabel, ylabel, log_y) in DISTRIBUTIONS.items():
        dist = summary["distributions"][name]
        if not dist["count"]:
            plots.append(plot_block(title, "<p class='note'>Not recorded in this run.</p>"))
            continue
        note = f"<p class='note'>{dist['count']:,} values; median {number(dist['p50'])}, " \
               f"p10 {number(dist['p10'])}, p90 {number(dist['p90'])}, mean {number(dist['mean'])}" + \
               ("" if dist["sampled"] == dist["count"] else f"; plotted from a uniform sample of {dist['sampled']:,}") \
               + "</p>"
        plots.append(plot_block(title, histogram(dist, xlabel, ylabel, log_y) + note))
    statuses = summary["fetch_status_codes"]
    plots.append(plot_block("Fetch status codes", bars(list(statuses), list(statuses.values()), "HTTP status",
                                                       "fetches", log_y=True) if statuses else
                            "<p class='note'>No fetch log in this run.</p>"))
    clusters = summary["duplicate_cluster_sizes"]
    plots.append(plot_block("Duplicate-cluster sizes", bars(list(clusters), list(clusters.values()),
                                                            "documents in the cluster", "clusters") if clusters else
                            "<p class='note'>No duplicate clusters.</p>"))
    lsh = summary["lsh"]
    plots.append(plot_block("LSH S-curve (dedup/lsh.json)", s_curve(lsh) if lsh else
                            "<p class='note'>No dedup/lsh.json in this run.</p>"))
    return "<div class='grid'>" + "".join(plots) + "</div>"


def domains_section(summary: dict) -> str:
    domains = summary["domains"]
    if domains is None:
        return "<p class='note'>The documents have no domain column (or there are no documents).</p>"
    ours, theirs = domains["corpus_top"], domains["webtext_top"]
    rows = [[str(i + 1), esc(ours[i][0]) if i < len(ours) else "", number(ours[i][1]) if i < len(ours) else "",
             esc(theirs[i][0]) if i < len(theirs) else "", number(theirs[i][1]) if i < len(theirs) else ""]
            for i in range(min(25, max(len(ours), len(theirs))))]
    wikipedia = domains["wikipedia_documents"]
    check = "<span class='good'>absent</span>" if not wikipedia else \
        f"<span class='bad'>present in {wikipedia:,} documents</span>"
    rho = domains["spearman_on_shared_domains"]
    plural = "" if domains["corpus_domains"] == 1 else "s"
    return (f"<p>{domains['corpus_domains']:,} domain{plural} in the corpus; "
            f"{domains['overlap_with_webtext_top1000']:,} of "
            f"them are among WebText's top 1,000 (holding {domains['documents_on_shared_domains']:,} documents); "
            f"Spearman rank correlation of document counts on those shared domains: "
            f"{'— (fewer than 3 shared, or no spread)' if rho is None else rho}. Wikipedia: {check}.</p>"
            + table(["rank", "this corpus", "documents", "WebText (OpenAI)", "documents"], rows, {0, 2, 4})
            + "<p class='note'>Domains are compared as WebText's list names them: the registrable name without its "
              "public suffix. WebText's list: openai/gpt-2 domains.txt, shipped with webtext as package data.</p>")


def decontamination_section(summary: dict) -> str:
    report = summary["contamination"]
    if report is None:
        return "<p class='note'>No stats/contamination.json: the dedup stage has not run.</p>"
    if not report.get("eval_sets"):
        return f"<p>No eval set was given to the dedup stage (--eval-set NAME=PATH), so none was measured. " \
               f"({report['ngram']}-grams, {esc(report['normalisation'])}.)</p>"
    rows, tops = [], []
    for name, entry in report["eval_sets"].items():
        rows.append([esc(name), number(entry.get("ngrams")), number(entry.get("ngrams_in_corpus")),
                     number(entry.get("share_in_corpus")), number(entry.get("documents_with_overlap")),
                     number(entry.get("documents_over_threshold")), number(entry.get("documents_dropped")),
                     number(entry.get("share_after_decontamination"))])
        tops += [[esc(name), esc(doc.get("url")), number(doc.get("overlap")), number(doc.get("matched")),
                  "yes" if doc.get("dropped") else "no"] for doc in entry.get("top_documents", [])[:5]]
    return (f"<p>{report['ngram']}-gram overlap ({esc(report['overlap'])}); contamination threshold "
            f"{report['contamination_threshold']}; documents over it removed: {report['decontaminate']}.</p>"
            + table(["eval set", "its n-grams", "found in corpus", "share", "documents with overlap",
                     "over threshold", "dropped", "share after decontamination"], rows, {1, 2, 3, 4, 5, 6, 7})
            + ("<h3>Most contaminated documents</h3>"
               + table(["eval set", "URL", "overlap", "n-grams matched", "dropped"], tops, {2, 3}) if tops else ""))


def training_section(summary: dict) -> str:
    if not summary["training"]:
        return "<p class='note'>No RUN/train/*/log.jsonl: no model was trained in this run.</p>"
    parts = []
    for name, log in summary["training"].items():
        if not log:
            parts.append(f"<h3>{esc(name)}</h3><p class='note'>log.jsonl is empty.</p>")
            continue
        last = log[-1]
        parts.append(f"<h3>{esc(name)}</h3><p>{last['step']:,} steps, {last.get('tokens', 0):,} tokens; last loss "
                     f"{number(last.get('loss'))}</p><div class='grid'>"
                     + plot_block("Loss", training_plot(log, ["loss", "val_loss"], "loss"))
                     + plot_block("Learning rate", training_plot(log, ["lr"], "lr"))
                     + plot_block("Throughput", training_plot(log, ["tokens_per_s"], "tokens/s")) + "</div>")
    return "".join(parts)


def provenance_section(summary: dict) -> str:
    info = summary["provenance"]
    stages = table(["stage", "wall time (s)", "finished (UTC)"],
                   [[esc(n), number(s["seconds"]), esc(s["finished"])] for n, s in info["stages"].items()], {1})
    versions = table(["package", "version"], [[esc(k), esc(v)] for k, v in info["versions_at_report_time"].items()])
    options = "".join(
        f"<div><h4>[{esc(section)}]</h4>"
        + table(["option", "value"],
                [[esc(k), f"<code>{esc(json.dumps(v))}</code>"] for k, v in sorted(values.items())])
        + "</div>" for section, values in info["config"].items()) or "<p class='note'>No config.toml in this run.</p>"
    return (stages + f"<h3>Versions (of the environment that wrote this report, {esc(info['report_written'])})</h3>"
            + versions + "<h3>Options of every stage (config.toml)</h3>" + f"<div class='grid'>{options}</div>")


RENDERERS = {"funnel": funnel_section, "rejects": rejects_section, "distributions": distributions_section,
             "domains": domains_section, "decontamination": decontamination_section, "training": training_section,
             "provenance": provenance_section}


def render_html(summary: dict) -> str:
    nav = "".join(f"<a href='#{key}'>{esc(title)}</a>" for key, title in SECTIONS)
    body = "".join(f"<section id='{key}'><h2>{esc(title)}</h2>{RENDERERS[key](summary)}</section>"
                   for key, title in SECTIONS)
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>webtext run report</title>"
            "<link rel='icon' href='data:,'>"
            f"<style>{STYLE}</style></head><body><h1>webtext run <code>{esc(summary['run'])}</code></h1>"
            f"<nav>{nav}</nav>{body}</body></html>\n")
