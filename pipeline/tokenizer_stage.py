"""The `tokenizer` stage: GPT-2's byte-level BPE trained on the corpus (or a deterministic sample), or GPT-2's own;
writes RUN/tokenizer/tokenizer.json and the GPT-2-format vocab.json + merges.txt."""
from __future__ import annotations

import hashlib
import logging
import sys
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow.compute as pc
from tqdm import tqdm

from webtext.pipeline import gpt2_bpe, layout, storage
from webtext.pipeline.layout import RunDir
from webtext.pipeline.storage import FileEntry
from webtext.pipeline.stage_options import options_of
from webtext.pipeline.stage import Stage, StageContext, StageError

log = logging.getLogger(__name__)

NAME = "tokenizer"
FILES = ("tokenizer.json", "vocab.json", "merges.txt")
GPT2_FILES = ("encoder.json", "vocab.bpe")
SAMPLE_HASH_PERSON = b"webtext-bpe"  # a hash of its own, so the sample is independent of the train/val split


def sample_hash(doc_id: str) -> int:
    """A stable 64-bit hash of a document id that decides whether the document is in the training sample."""
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8, person=SAMPLE_HASH_PERSON)
    return int.from_bytes(digest.digest(), "big")


@dataclass
class Sample:
    """Which documents train the BPE: those whose sample hash is at most `max_hash` (None: all of them)."""

    max_hash: int | None
    documents: int
    text_bytes: int


def _scan(files: list[FileEntry], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample hashes and UTF-8 text sizes of every document, in reading order."""
    hashes = np.empty(rows, dtype=np.uint64)
    sizes = np.empty(rows, dtype=np.int64)
    position = 0
    with tqdm(total=rows, desc="tokenizer: sizing documents", unit="doc", disable=None) as progress:
        for batch in storage.iter_batches(files, list(layout.TEXT_COLUMNS)):
            count = batch.num_rows
            doc_ids = batch.column(0).to_pylist()
            hashes[position:position + count] = [sample_hash(d or "") for d in doc_ids]
            sizes[position:position + count] = pc.fill_null(pc.binary_length(batch.column(1)), 0).to_numpy()
            position += count
            progress.update(count)
    return hashes[:position], sizes[:position]


def choose_sample(hashes: np.ndarray, sizes: np.ndarray, sample_bytes: int) -> Sample:
    """The documents of lowest sample hash that together hold at least `sample_bytes` of text.

    Depends only on the documents themselves, not on how they are spread over files or ordered.
    """
    total = int(sizes.sum())
    if sample_bytes <= 0 or total <= sample_bytes:
        return Sample(None, len(hashes), total)
    order = np.argsort(hashes, kind="stable")
    cumulative = np.cumsum(sizes[order])
    last = int(np.searchsorted(cumulative, sample_bytes))
    max_hash = int(hashes[order[last]])
    chosen = hashes <= np.uint64(max_hash)
    return Sample(max_hash, int(chosen.sum()), int(sizes[chosen].sum()))


def iter_training_texts(files: list[FileEntry], rows: int, sample: Sample, ctx: StageContext) -> Iterator[list[str]]:
    """Batches of the sampled, non-empty document texts for the BPE trainer, with a progress bar."""
    desc = "tokenizer: training on " + ("the sample" if sample.max_hash is not None else "the corpus")
    with tqdm(total=rows, desc=desc, unit="doc", disable=None) as progress:
        for batch in storage.iter_batches(files, list(layout.TEXT_COLUMNS)):
            doc_ids, texts = batch.column(0), batch.column(1)
            keep = pc.fill_null(pc.greater(pc.binary_length(texts), 0), False).to_numpy(zero_copy_only=False)
            ctx.count("docs.empty_text", int((~keep).sum()))
            if sample.max_hash is not None:
                hashes = np.fromiter((sample_hash(d or "") for d in doc_ids.to_pylist()), np.uint64, len(doc_ids))
                keep &= hashes <= np.uint64(sample.max_hash)
            chosen = texts.filter(keep)
            ctx.count("docs.trained", len(chosen))
            ctx.count("bytes.trained", int(pc.sum(pc.binary_length(chosen)).as_py() or 0))
            progress.update(batch.num_rows)
            if len(chosen):
                yield chosen.to_pylist()
    log.info("tokenizer: %s documents read (%.1f MB of text); computing the merges",
             f"{ctx.counters.get('docs.trained', 0):,}", ctx.counters.get("bytes.trained", 0) / 1e6)


def train_on_corpus(ctx: StageContext):
    source = layout.require_documents(ctx.run)
    _, rows = layout.check_documents(source.files, layout.TEXT_COLUMNS)
    log.info("tokenizer: %d documents in %d files under %s", rows, len(source.files), source.pattern)
    ctx.count("docs.read", rows)
    sample = Sample(None, rows, 0)
    if ctx.config["sample_bytes"] > 0:
        sample = choose_sample(*_scan(source.files, rows), ctx.config["sample_bytes"])
        log.info("tokenizer: sample of %d documents, %.1f MB of text", sample.documents, sample.text_bytes / 1e6)
    return gpt2_bpe.train_bpe(iter_training_texts(source.files, rows, sample, ctx), vocab_size=ctx.config["vocab_size"],
                         min_frequency=ctx.config["min_frequency"], show_progress=sys.stderr.isatty())


def load_gpt2(directory: str):
    paths = [storage.join(directory, name) for name in GPT2_FILES]
    for path in paths:
        if not storage.exists(path):
            raise StageError(f"--from-gpt2: {path} not found (the directory needs encoder.json and vocab.bpe)")
    try:
        return gpt2_bpe.tokenizer_from_gpt2(storage.read_bytes(paths[0]), storage.read_bytes(paths[1]),
                                       encoder_where=paths[0], merges_where=paths[1])
    except gpt2_bpe.VocabularyError as error:
        raise StageError(str(error)) from None


def save(run: RunDir, tokenizer) -> None:
    vocab_json, merges_txt = gpt2_bpe.gpt2_files(tokenizer)
    contents = [tokenizer.to_str(pretty=True).encode("utf-8"), vocab_json, merges_txt]
    for name, data in zip(FILES, contents):
        storage.write_bytes(run.path(layout.TOKENIZER, name), data)


def execute(ctx: StageContext) -> None:
    config = ctx.config
    if config["from_gpt2"]:
        tokenizer = load_gpt2(config["from_gpt2"])
    else:
        if config["vocab_size"] < gpt2_bpe.MIN_VOCAB_SIZE:
            raise StageError(f"--vocab-size must be at least {gpt2_bpe.MIN_VOCAB_SIZE}, got {config['vocab_size']}")
        tokenizer = train_on_corpus(ctx)
    size = gpt2_bpe.vocab_size(tokenizer)
    if not config["from_gpt2"] and size < config["vocab_size"]:
        log.warning("tokenizer: the corpus supports only %d tokens (asked for %d): no pair left occurs %d times",
                    size, config["vocab_size"], config["min_frequency"])
    ctx.count("vocab.size", size)
    ctx.count("vocab.merges", len(gpt2_bpe.model_vocab_and_merges(tokenizer.to_str())[1]))
    save(ctx.run, tokenizer)
    log.info("tokenizer: %d tokens, <|endoftext|> = %d, written to %s", size, gpt2_bpe.eot_id(tokenizer), ctx.run.path(layout.TOKENIZER))


def external_inputs(run: RunDir, config: dict) -> list[FileEntry]:
    if config.get("from_gpt2"):
        return [entry for name in GPT2_FILES for entry in storage.match(storage.join(config["from_gpt2"], name))]
    source = layout.find_documents(run)
    return source.files if source else []


def upstream(run: RunDir, config: dict) -> list[str]:
    if config.get("from_gpt2"):
        return []
    source = layout.find_documents(run)
    return source.upstream if source else []


@dataclass(frozen=True)
class TokenizerOptions:
    """The tokenizer stage's options (flags and [tokenizer] keys)."""

    vocab_size: int = field(default=50257, metadata={"min": 257,
        "help": "tokens in the vocabulary, <|endoftext|> (the last id) included"})
    sample_bytes: int = field(default=0, metadata={"min": 0,
        "help": "train on a deterministic sample of about this many bytes of text (0: everything)"})
    min_frequency: int = field(default=2, metadata={"min": 0, "help": "a pair must occur at least this often to be merged"})
    from_gpt2: str | None = field(default=None, metadata={
        "help": "directory (or URL) holding GPT-2's encoder.json and vocab.bpe: use them, no training"})


STAGE = Stage(
    name=NAME,
    help="train a GPT-2 byte-level BPE on the documents (or take GPT-2's own vocabulary with --from-gpt2)",
    options=options_of(TokenizerOptions),
    execute=execute,
    external_inputs=external_inputs,
    upstream=upstream,
    outputs=[layout.TOKENIZER],
    runs_beam=False,  # trains in this process, reading RUN (gs:// too) directly
)
