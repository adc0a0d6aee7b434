"""Small document corpora as Parquet for the tokenizer and shards tests (written by the tests, never copied)."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# Texts that stress a byte-level BPE: every script class of the GPT-2 regex, whitespace runs, the end-of-text marker
# written inside a document, control characters, emoji with modifiers, combining marks.
TRICKY_TEXTS = [
    "The model's tokenizer doesn't merge across letters, 12345 digits and ... punctuation!!",
    "Whitespace:  two  spaces,\ttab,\n\nnewlines\r\n and trailing spaces   ",
    "A document that mentions <|endoftext|> inside its text, and <|endoftext|>twice<|endoftext|>.",
    "Ünïcödé: naïve café — “quotes” ½ ² Ⅻ; Ελληνικά, русский, עברית, العربية, हिन्दी, 한국어, 日本語, 中文.",
    "Emoji 🙂👍🏽🇫🇷 and combining e\u0301 and zero\u200bwidth and \u00a0nbsp and \x00\x07 controls.",
    "'S 'T 'RE 'VE 'M 'LL 'D they'll we've I'm you'd it's",
]


def write_docs(directory: Path, rows: list[dict], files: int = 1, prefix: str = "docs",
               schema: pa.Schema | None = None) -> list[Path]:
    """Rows spread round-robin over `files` Parquet files named like the crawl/dedup stages name theirs."""
    directory.mkdir(parents=True, exist_ok=True)
    schema = schema or pa.schema([("doc_id", pa.string()), ("text", pa.string()), ("url", pa.string())])
    paths = []
    for index in range(files):
        part = rows[index::files]
        path = directory / f"{prefix}-{index:05d}-of-{files:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(part, schema=schema), path)
        paths.append(path)
    return paths


def real_pages(shared_data: Path) -> list[dict]:
    """The extraction benchmark's ground-truth article bodies as documents (91 real news pages)."""
    truth = json.loads((shared_data / "extraction-benchmark" / "ground-truth.json").read_text(encoding="utf-8"))
    return [{"doc_id": key, "text": value["articleBody"], "url": value.get("url")}
            for key, value in sorted(truth.items())]


def tricky_docs() -> list[dict]:
    return [{"doc_id": f"tricky-{i}", "text": text, "url": None} for i, text in enumerate(TRICKY_TEXTS)]
