"""GPT-2 byte-level BPE with `tokenizers`: training, loading OpenAI's encoder.json/vocab.bpe, and the GPT-2 file formats."""
from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

log = logging.getLogger(__name__)

ENDOFTEXT = "<|endoftext|>"
# GPT-2's pre-tokenization regex (as tiktoken writes it); `tokenizers`' ByteLevel(use_regex=True) applies the same one.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
MERGES_HEADER = "#version: 0.2"
MIN_VOCAB_SIZE = 257  # the 256 bytes and <|endoftext|>


class VocabularyError(ValueError):
    """GPT-2 vocabulary files that do not fit together (the message says which file and what is wrong)."""


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte (printable Latin-1 bytes stand for themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + shifted)
            shifted += 1
    return mapping


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    return {char: byte for byte, char in byte_to_unicode().items()}


def token_bytes(token: str) -> bytes:
    """The raw bytes a byte-level token string stands for ('Ġthe' -> b' the')."""
    table = unicode_to_byte()
    try:
        return bytes(table[char] for char in token)
    except KeyError as error:
        raise VocabularyError(f"token {token!r} has a character outside the byte-level alphabet: {error}") from None


def _byte_level(model: models.Model) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _add_endoftext(tokenizer: Tokenizer) -> int:
    tokenizer.add_special_tokens([AddedToken(ENDOFTEXT, special=True, normalized=False)])
    return tokenizer.token_to_id(ENDOFTEXT)


def train_bpe(batches: Iterable[list[str]], vocab_size: int, min_frequency: int = 2,
              show_progress: bool = False) -> Tokenizer:
    """Trains a byte-level BPE on batches of texts; <|endoftext|> takes the last id (vocab_size - 1 as in GPT-2).

    The trainer gets vocab_size - 1 and the special token is added afterwards, so literal "<|endoftext|>" in the
    training text stays ordinary text and the merges fill ids 256 .. vocab_size - 2.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes + {ENDOFTEXT}), got {vocab_size}")
    tokenizer = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=min_frequency, show_progress=show_progress,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tokenizer.train_from_iterator(batches, trainer=trainer)
    _add_endoftext(tokenizer)
    return tokenizer


def _parse_merges(vocab_bpe: str, where: str) -> list[tuple[str, str]]:
    lines = vocab_bpe.split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges = []
    for number, line in enumerate(lines, start=2):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise VocabularyError(f"{where}: line {number} is not a merge 'a b': {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def tokenizer_from_gpt2(encoder_json: bytes, vocab_bpe: bytes, encoder_where: str = "encoder.json",
                        merges_where: str = "vocab.bpe") -> Tokenizer:
    """The original GPT-2 tokenizer from OpenAI's encoder.json (token -> id) and vocab.bpe (merges by priority)."""
    try:
        vocab = json.loads(encoder_json)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VocabularyError(f"{encoder_where}: not valid JSON: {error}") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise VocabularyError(f"{encoder_where}: expected a JSON object mapping tokens to integer ids")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise VocabularyError(f"{encoder_where}: ids are not exactly 0..{len(vocab) - 1}")
    if ENDOFTEXT not in vocab:
        raise VocabularyError(f"{encoder_where}: has no {ENDOFTEXT} token")
    missing_bytes = [b for b, char in byte_to_unicode().items() if char not in vocab]
    if missing_bytes:
        raise VocabularyError(f"{encoder_where}: {len(missing_bytes)} of the 256 single-byte tokens are missing")
    try:
        merges = _parse_merges(vocab_bpe.decode("utf-8"), merges_where)
    except UnicodeDecodeError as error:
        raise VocabularyError(f"{merges_where}: not UTF-8: {error}") from None
    for a, b in merges:
        for part in (a, b, a + b):
            if part not in vocab:
                raise VocabularyError(f"{merges_where}: merge '{a} {b}' uses {part!r}, which {encoder_where} lacks")
    tokenizer = _byte_level(models.BPE(vocab=vocab, merges=merges))
    eot_id = _add_endoftext(tokenizer)
    if eot_id != vocab[ENDOFTEXT]:
        raise VocabularyError(f"{encoder_where}: {ENDOFTEXT} got id {eot_id}, expected {vocab[ENDOFTEXT]}")
    return tokenizer


def tokenizer_from_json(data: str | bytes) -> Tokenizer:
    """A tokenizer.json as saved by the tokenizer stage, ready to encode text losslessly.

    `encode_special_tokens` is not saved in tokenizer.json; it is set here so "<|endoftext|>" written inside a
    document stays text and only the appended end-of-text id means a document boundary.
    """
    tokenizer = Tokenizer.from_str(data.decode("utf-8") if isinstance(data, bytes) else data)
    if tokenizer.token_to_id(ENDOFTEXT) is None:
        raise VocabularyError(f"tokenizer has no {ENDOFTEXT} token")
    tokenizer.encode_special_tokens = True
    return tokenizer


def eot_id(tokenizer: Tokenizer) -> int:
    token_id = tokenizer.token_to_id(ENDOFTEXT)
    if token_id is None:
        raise VocabularyError(f"tokenizer has no {ENDOFTEXT} token")
    return token_id


def vocab_size(tokenizer: Tokenizer) -> int:
    return tokenizer.get_vocab_size(with_added_tokens=True)


def model_vocab_and_merges(tokenizer_json: str | bytes) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The BPE model's vocabulary (without added tokens) and merges in priority order, from tokenizer.json text."""
    model = json.loads(tokenizer_json)["model"]
    if model.get("type") != "BPE":
        raise VocabularyError(f"tokenizer model is {model.get('type')!r}, expected BPE")
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return dict(model["vocab"]), merges


def gpt2_files(tokenizer: Tokenizer) -> tuple[bytes, bytes]:
    """vocab.json (all tokens, <|endoftext|> included, in id order) and merges.txt, in GPT-2's own byte format.

    For the original GPT-2 vocabulary these are byte-for-byte OpenAI's encoder.json and vocab.bpe.
    """
    vocab, merges = model_vocab_and_merges(tokenizer.to_str())
    vocab = {**vocab, ENDOFTEXT: eot_id(tokenizer)}
    ordered = dict(sorted(vocab.items(), key=lambda item: item[1]))
    vocab_json = json.dumps(ordered).encode("utf-8")
    merges_txt = "\n".join([MERGES_HEADER, *(f"{a} {b}" for a, b in merges)]) + "\n"
    return vocab_json, merges_txt.encode("utf-8")

