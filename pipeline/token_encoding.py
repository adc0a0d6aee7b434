"""Fast document encoding for the shards stage: tiktoken on our BPE files, ids identical to `tokenizers`, which stays the fallback."""
from __future__ import annotations

import json
import logging
from typing import Sequence

import numpy as np

from webtext.pipeline import gpt2_bpe
from webtext.train.shard_format import TokenBatch, dtype_for_vocab

log = logging.getLogger(__name__)

ENGINES = ("auto", "tiktoken", "tokenizers")

# Texts both engines must encode identically before tiktoken is trusted: contractions, digit runs, whitespace runs
# (the `\s+(?!\S)` rule), non-Latin letters and numbers, emoji, control bytes and the end-of-text marker as text.
PROBE_TEXTS = [
    "Hello world! It's 2019, they'll've done it; we'd re-run 12345678 tests.\n\n\tTabs  and   spaces   \n",
    "naïve café — “quotes” ‘single’ … ½ ² Ⅻ ٣٤ 三百 Ελληνικά русский עברית العربية हिन्दी 한국어 日本語 🙂👍🏽",
    "text <|endoftext|> more text<|endoftext|>\x00\x01\x7f\u00a0\u2028\u3000\u200b\ufeff end  ",
    "   leading spaces, trailing spaces   ",
    "'S 'T 'RE 'VE 'M 'LL 'D 's't're've'm'll'd x's",
    "",
]


class IncompatibleVocabulary(ValueError):
    """The BPE files cannot be run by tiktoken with ids guaranteed equal to `tokenizers`'."""


def _check_tiktoken_structure(tokenizer_json: str) -> dict[bytes, int]:
    """The tiktoken ranks (token bytes -> id) of a byte-level BPE whose ids follow its merge order.

    tiktoken merges the adjacent pair whose concatenation has the lowest id; `tokenizers` merges the pair with the
    earliest merge rule. These structural checks (every token a single byte or made by exactly one merge, ids rising
    with merge priority after the 256 bytes, as `tokenizers` trains and GPT-2's files are laid out) are necessary
    but not sufficient: a merge that BPE itself would never reach can still make the engines differ, which is why
    the Encoder also compares them on probe texts and cross-checks each worker's first documents.
    """
    config = json.loads(tokenizer_json)
    if config.get("normalizer") is not None:
        raise IncompatibleVocabulary("the tokenizer has a normalizer")
    pre = config.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True) or pre.get("add_prefix_space"):
        raise IncompatibleVocabulary(f"pre-tokenizer is {pre}, expected ByteLevel(use_regex=True, add_prefix_space=False)")
    model = config["model"]
    for option in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(option):
            raise IncompatibleVocabulary(f"BPE option {option}={model[option]!r} is not supported by tiktoken")
    if model.get("byte_fallback") or model.get("ignore_merges"):
        raise IncompatibleVocabulary("BPE byte_fallback/ignore_merges are not supported by tiktoken")
    added = [t["content"] for t in config.get("added_tokens", [])]
    if added != [gpt2_bpe.ENDOFTEXT]:
        raise IncompatibleVocabulary(f"added tokens are {added}, expected only {gpt2_bpe.ENDOFTEXT}")

    vocab, merges = gpt2_bpe.model_vocab_and_merges(tokenizer_json)
    vocab.pop(gpt2_bpe.ENDOFTEXT, None)
    single_bytes = set(gpt2_bpe.byte_to_unicode().values())
    byte_ids = [vocab[c] for c in single_bytes if c in vocab]
    if len(byte_ids) != 256:
        raise IncompatibleVocabulary(f"only {len(byte_ids)} of the 256 single-byte tokens are in the vocabulary")
    merged_ids = [vocab.get(a + b) for a, b in merges]
    if None in merged_ids:
        raise IncompatibleVocabulary("a merge produces a token missing from the vocabulary")
    if len(set(merged_ids)) != len(merged_ids) or len(vocab) != 256 + len(merges):
        raise IncompatibleVocabulary("some token is produced by several merges or by none")
    if merged_ids and (min(merged_ids) < max(byte_ids) or any(a >= b for a, b in zip(merged_ids, merged_ids[1:]))):
        raise IncompatibleVocabulary("token ids do not follow the merge order")
    return {gpt2_bpe.token_bytes(token): token_id for token, token_id in vocab.items()}


def tiktoken_encoding(tokenizer_json: str, name: str = "webtext"):
    """A tiktoken Encoding with the same vocabulary, merges, regex and end-of-text id as `tokenizer_json`."""
    import tiktoken

    ranks = _check_tiktoken_structure(tokenizer_json)
    tokenizer = gpt2_bpe.tokenizer_from_json(tokenizer_json)
    return tiktoken.Encoding(name, pat_str=gpt2_bpe.GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={gpt2_bpe.ENDOFTEXT: gpt2_bpe.eot_id(tokenizer)},
                             explicit_n_vocab=gpt2_bpe.vocab_size(tokenizer))


class Encoder:
    """Encodes documents with the fastest engine that gives `tokenizers`' ids; "<|endoftext|>" in text stays text.

    engine="auto" uses tiktoken when it is installed, the vocabulary has tiktoken's structure and the probe texts
    encode identically; otherwise `tokenizers`. Naming an engine makes a failed check an error instead.
    """

    def __init__(self, tokenizer_json: str | bytes, engine: str = "auto"):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.tokenizer_json = tokenizer_json.decode("utf-8") if isinstance(tokenizer_json, bytes) else tokenizer_json
        self.tokenizer = gpt2_bpe.tokenizer_from_json(self.tokenizer_json)
        self.eot_id = gpt2_bpe.eot_id(self.tokenizer)
        self.vocab_size = gpt2_bpe.vocab_size(self.tokenizer)
        self.dtype = dtype_for_vocab(self.vocab_size)
        self._tiktoken = None
        self.engine = "tokenizers"
        if engine != "tokenizers":
            self._tiktoken = self._try_tiktoken(required=engine == "tiktoken")
            if self._tiktoken is not None:
                self.engine = "tiktoken"
        log.debug("encoder engine: %s (vocab %d, eot %d)", self.engine, self.vocab_size, self.eot_id)

    def _try_tiktoken(self, required: bool):
        try:
            encoding = tiktoken_encoding(self.tokenizer_json)
        except ImportError:
            if required:
                raise
            log.warning("tiktoken is not installed; encoding with tokenizers (slower)")
            return None
        except IncompatibleVocabulary as error:
            if required:
                raise
            log.warning("vocabulary not runnable by tiktoken (%s); encoding with tokenizers (slower)", error)
            return None
        expected = self._encode_tokenizers(PROBE_TEXTS)
        actual = [encoding.encode_ordinary(text) for text in PROBE_TEXTS]
        if actual != expected:
            message = "tiktoken and tokenizers disagree on the probe texts"
            if required:
                raise IncompatibleVocabulary(message)
            log.warning("%s; encoding with tokenizers (slower)", message)
            return None
        return encoding

    def _encode_tokenizers(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without the end-of-text id."""
        if self._tiktoken is not None:
            # one call per text: encode_ordinary_batch hands every text to a thread pool, slower in a worker process
            return [self._tiktoken.encode_ordinary(text) for text in texts]
        return self._encode_tokenizers(texts)

    def encode_documents(self, texts: Sequence[str]) -> TokenBatch:
        """All texts as one flat array in the shard dtype, each document followed by the end-of-text id."""
        return self.documents_from_ids(self.encode(texts))

    def documents_from_ids(self, encoded: Sequence[Sequence[int]]) -> TokenBatch:
        lengths = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded))
        documents = TokenBatch.from_lengths(np.empty(int(lengths.sum()), dtype=np.dtype(self.dtype)), lengths)
        for index, ids in enumerate(encoded):
            start, end = documents.offsets[index], documents.offsets[index + 1] - 1
            documents.tokens[start:end] = ids
            documents.tokens[end] = self.eot_id
        return documents

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
