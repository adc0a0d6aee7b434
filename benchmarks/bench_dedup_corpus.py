"""Real text for the dedup benchmarks: the extraction benchmark's article bodies and Tiny Shakespeare (../shared/data).

Documents of about 3,000 characters are built from that text (whole articles and Shakespeare passages for the quality
benchmark; random real sentences for the large corpus) and written as docs Parquet files.
"""
from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from webtext.pipeline import sinks

REPO = Path(__file__).resolve().parent.parent
DOCS_SCHEMA = pa.schema([("doc_id", pa.string()), ("url", pa.string()), ("domain", pa.string()),
                         ("text", pa.string()), ("score", pa.int64())])


def shared_data() -> Path:
    for candidate in (os.environ.get("WEBTEXT_SHARED_DATA"), REPO.parent / "shared" / "data"):
        if candidate and Path(candidate, "MANIFEST.md").is_file():
            return Path(candidate)
    raise SystemExit("../shared/data not found; set WEBTEXT_SHARED_DATA")


def articles() -> list[str]:
    """The ground-truth article bodies (real news and blog text, some non-English)."""
    truth = json.loads((shared_data() / "extraction-benchmark" / "ground-truth.json").read_text(encoding="utf-8"))
    return [entry["articleBody"] for _, entry in sorted(truth.items())]


def shakespeare_passages(target_chars: int = 3000) -> list[str]:
    """Tiny Shakespeare cut at blank lines into passages of about `target_chars`."""
    text = (shared_data() / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    passages, current, size = [], [], 0
    for speech in text.split("\n\n"):
        current.append(speech)
        size += len(speech) + 2
        if size >= target_chars:
            passages.append("\n\n".join(current))
            current, size = [], 0
    return passages


def sentences() -> list[str]:
    """Every sentence-like piece of the real text (lines of verse, sentences of articles), de-duplicated."""
    pieces = []
    for body in articles():
        pieces.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", body))
    text = (shared_data() / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    pieces.extend(line.strip() for line in text.splitlines())
    return sorted({p for p in pieces if len(p.split()) >= 4})


def sentence_document(rng: random.Random, pool: list[str], target_chars: int = 3000) -> str:
    """Random real sentences up to about `target_chars`, in paragraphs of a few sentences."""
    paragraphs, current, size = [], [], 0
    while size < target_chars:
        sentence = rng.choice(pool)
        current.append(sentence)
        size += len(sentence) + 1
        if len(current) >= rng.randint(3, 6):
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


def write_docs(folder: Path, rows: list[dict], files: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        table = pa.Table.from_pylist(rows[index::files], schema=DOCS_SCHEMA)
        pq.write_table(table, folder / sinks.shard_name("docs", index, files))
