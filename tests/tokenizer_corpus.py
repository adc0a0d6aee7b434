"""Small document corpora as Parquet for the tokenizer and shards tests (written by the tests, never copied)."""
from __future__ import annotations

import itertools
import json
import random
import string
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from webtext.pipeline import gpt2_bpe, layout, sinks

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
        path = directory / sinks.shard_name(prefix, index, files)
        pq.write_table(pa.Table.from_pylist(part, schema=schema), path)
        paths.append(path)
    return paths


def place_docs(run: Path, rows: list[dict], **kwargs) -> list[Path]:
    """Documents put in RUN/docs by hand, marked as such (layout.PLACED_DOCS): a corpus made elsewhere."""
    paths = write_docs(Path(run, layout.DOCS), rows, **kwargs)
    Path(run, layout.PLACED_DOCS).touch()
    return paths


def real_pages(shared_data: Path) -> list[dict]:
    """The extraction benchmark's ground-truth article bodies as documents (91 real news pages)."""
    truth = json.loads((shared_data / "extraction-benchmark" / "ground-truth.json").read_text(encoding="utf-8"))
    return [{"doc_id": key, "text": value["articleBody"], "url": value.get("url")}
            for key, value in sorted(truth.items())]


def tricky_docs() -> list[dict]:
    return [{"doc_id": f"tricky-{i}", "text": text, "url": None} for i, text in enumerate(TRICKY_TEXTS)]


def _bpe_parts(token: str, merge_ranks: dict[tuple[str, str], int]) -> list[str]:
    """What BPE leaves of `token`'s characters: lowest-ranked merge of adjacent pieces first, leftmost on ties."""
    parts = list(token)
    while len(parts) > 1:
        ranked = [(merge_ranks.get(pair, len(merge_ranks)), i) for i, pair in enumerate(zip(parts, parts[1:]))]
        rank, at = min(ranked)
        if rank == len(merge_ranks):
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


def letter_bpe_gpt2_files(vocab_size: int) -> tuple[bytes, bytes]:
    """encoder.json and vocab.bpe of a byte-level BPE of exactly `vocab_size` tokens, built without training.

    The 256 bytes in GPT-2's order, then every 2- and 3-letter lowercase token and as many 4-letter ones as fit in
    lexicographic order, and <|endoftext|> last. Each token comes from one merge: the last one BPE makes when
    encoding the token with the merges before it, so `tokenizers` and tiktoken encode the same way.
    """
    letter_tokens = (itertools.product(string.ascii_lowercase, repeat=length) for length in (2, 3, 4))
    vocab = {char: token_id for token_id, char in enumerate(gpt2_bpe.byte_to_unicode().values())}
    merge_ranks: dict[tuple[str, str], int] = {}
    for token in map("".join, itertools.chain.from_iterable(letter_tokens)):
        if len(vocab) == vocab_size - 1:
            break
        left, right = _bpe_parts(token, merge_ranks)
        merge_ranks[left, right] = len(merge_ranks)
        vocab[token] = len(vocab)
    if len(vocab) != vocab_size - 1:
        raise ValueError(f"at most {len(vocab) + 1} tokens fit this scheme, asked for {vocab_size}")
    vocab[gpt2_bpe.ENDOFTEXT] = len(vocab)
    merges = "\n".join([gpt2_bpe.MERGES_HEADER, *(f"{a} {b}" for a, b in merge_ranks)]) + "\n"
    return json.dumps(vocab).encode("utf-8"), merges.encode("utf-8")


def word_docs(words: list[str], documents: int, words_per_doc: int, seed: int = 0) -> list[dict]:
    """Documents of words drawn (seeded) from `words`, with some capitals, commas, full stops and newlines."""
    rng = random.Random(seed)
    rows = []
    for index in range(documents):
        picked = [rng.choice(words) for _ in range(words_per_doc)]
        text = " ".join(word + rng.choice(["", "", "", ",", ".", ".\n"]) for word in picked)
        rows.append({"doc_id": f"words-{index}", "text": text[0].upper() + text[1:], "url": None})
    return rows
