"""Tests for the tokenizer stage and the BPE/encoder modules: GPT-2 ids byte for byte, lossless round trips, determinism."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import pre_tokenizers

from tests.tokenizer_corpus import TRICKY_TEXTS, place_docs, real_pages, tricky_docs, write_docs
from webtext.pipeline import gpt2_bpe, layout, tokenizer_stage
from webtext.pipeline.token_encoding import Encoder, IncompatibleVocabulary

GPT2_ENCODER_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"

# Deterministic hypothesis runs (the suite is offline and reproducible); the deadline is off for slow CI machines.
HYPOTHESIS = settings(derandomize=True, max_examples=300, deadline=None)

any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
# Fragments where the regexes of tiktoken and tokenizers could part ways, joined in random order.
FRAGMENTS = [" ", "  ", "\n", "\t", "\r\n", "\u00a0", "\u3000", "'s", "'ll", "'S", "<|endoftext|>", "<|", "|>",
             "endoftext", "123", "٣", "½", "a", "Zebra", "ǅ", "é", "e\u0301", "日本", "🙂", "👍🏽", "--", "...", "\x00",
             "\u200b", "\ufeff", "Ⅻ", "ß", "İ"]
fragment_text = st.lists(st.sampled_from(FRAGMENTS) | any_text, max_size=20).map("".join)


def _tiktoken_reference(directory: Path):
    """OpenAI's GPT-2 encoding built by tiktoken itself, offline, from encoder.json + vocab.bpe (hashes pinned)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", "")  # no cache keyed by path: always read these very files
        ranks = data_gym_to_mergeable_bpe_ranks(str(directory / "vocab.bpe"), str(directory / "encoder.json"),
                                                vocab_bpe_hash=GPT2_VOCAB_BPE_SHA256,
                                                encoder_json_hash=GPT2_ENCODER_SHA256)
    return tiktoken.Encoding("gpt2-reference", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


@pytest.fixture(scope="module")
def gpt2_dir(shared_data) -> Path:
    return shared_data / "gpt2-tokenizer"


@pytest.fixture(scope="module")
def gpt2(gpt2_dir):
    return gpt2_bpe.tokenizer_from_gpt2((gpt2_dir / "encoder.json").read_bytes(), (gpt2_dir / "vocab.bpe").read_bytes())


@pytest.fixture(scope="module")
def gpt2_encoders(gpt2, gpt2_dir):
    json_text = gpt2.to_str()
    return {"reference": _tiktoken_reference(gpt2_dir), "tokenizers": Encoder(json_text, engine="tokenizers"),
            "tiktoken": Encoder(json_text, engine="tiktoken")}


@pytest.fixture(scope="module")
def trained(shared_data):
    texts = [page["text"] for page in real_pages(shared_data)] + TRICKY_TEXTS
    return gpt2_bpe.train_bpe([texts], vocab_size=1500, min_frequency=2)


@pytest.fixture(scope="module")
def small():
    """A tokenizer trained on generated text only (for tests that do not need the real data)."""
    words = ["token", "shard", "merge", "byte", "level", "corpus", "train", "value", "the", "of"]
    texts = [" ".join(words[(i * 7 + j) % len(words)] + str(j % 3) for j in range(40)) for i in range(60)]
    return gpt2_bpe.train_bpe([texts + TRICKY_TEXTS], vocab_size=400, min_frequency=2)


def _real_texts(shared_data: Path) -> list[str]:
    texts = [page["text"] for page in real_pages(shared_data)]
    extracted = json.loads((shared_data / "extraction-benchmark" / "trafilatura-output.json").read_text("utf-8"))
    texts += [value.get("articleBody") or "" for _, value in sorted(extracted["output"].items())]
    shakespeare = (shared_data / "text" / "tinyshakespeare.txt").read_text("utf-8")
    texts += [shakespeare[i:i + 5000] for i in range(0, 100_000, 5000)]
    wikitext = (shared_data / "eval" / "wikitext-2_test.txt").read_text("utf-8")
    texts += [wikitext[i:i + 5000] for i in range(0, 100_000, 5000)]
    return texts + TRICKY_TEXTS


# -- the byte-level alphabet and GPT-2's own files -----------------------------------------------------------------


def test_byte_alphabet_is_gpt2s():
    table = gpt2_bpe.byte_to_unicode()
    assert len(set(table.values())) == 256
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"
    assert gpt2_bpe.token_bytes("Ġthe") == b" the"


@pytest.mark.realdata
def test_gpt2_files_are_reproduced_byte_for_byte(gpt2, gpt2_dir):
    vocab_json, merges_txt = gpt2_bpe.gpt2_files(gpt2)
    assert vocab_json == (gpt2_dir / "encoder.json").read_bytes()
    assert merges_txt == (gpt2_dir / "vocab.bpe").read_bytes()


@pytest.mark.realdata
def test_gpt2_known_ids(gpt2_encoders):
    for name in ("tokenizers", "tiktoken"):
        encoder = gpt2_encoders[name]
        assert encoder.vocab_size == 50257 and encoder.eot_id == 50256 and encoder.dtype == "uint16"
        assert encoder.encode(["Hello world", " the"]) == [[15496, 995], [262]]
    assert gpt2_encoders["tiktoken"].engine == "tiktoken"


@pytest.mark.realdata
def test_gpt2_ids_equal_openai_encoding_on_real_text(shared_data, gpt2_encoders):
    texts = _real_texts(shared_data)
    expected = [gpt2_encoders["reference"].encode_ordinary(text) for text in texts]
    assert sum(map(len, expected)) > 100_000
    assert gpt2_encoders["tokenizers"].encode(texts) == expected
    assert gpt2_encoders["tiktoken"].encode(texts) == expected


@pytest.mark.realdata
@HYPOTHESIS
@given(text=fragment_text)
def test_gpt2_ids_equal_openai_encoding_on_any_text(gpt2_encoders, text):
    expected = gpt2_encoders["reference"].encode_ordinary(text)
    assert gpt2_encoders["tokenizers"].encode([text]) == [expected]
    assert gpt2_encoders["tiktoken"].encode([text]) == [expected]


@pytest.mark.realdata
@HYPOTHESIS
@given(text=fragment_text)
def test_round_trip_is_lossless(gpt2_encoders, trained, text):
    for encoder in (gpt2_encoders["tokenizers"], Encoder(trained.to_str(), engine="tokenizers")):
        ids = encoder.encode([text])[0]
        assert encoder.eot_id not in ids
        assert encoder.decode(ids) == text


@pytest.mark.realdata
def test_round_trip_on_real_pages(shared_data, gpt2_encoders, trained):
    texts = _real_texts(shared_data)
    for encoder in (gpt2_encoders["tiktoken"], Encoder(trained.to_str())):
        documents = encoder.encode_documents(texts)
        for index, text in enumerate(texts):
            ids = documents.tokens[documents.offsets[index]:documents.offsets[index + 1]]
            assert ids[-1] == encoder.eot_id and encoder.eot_id not in ids[:-1]
            assert encoder.decode(ids[:-1]) == text


def test_endoftext_inside_text_stays_text(small):
    encoder = Encoder(small.to_str())
    text = "before <|endoftext|> after<|endoftext|>"
    ids = encoder.encode([text])[0]
    assert encoder.eot_id not in ids
    assert encoder.decode(ids) == text
    # the same text with the special token recognised, as a plain tokenizers call would do, is different
    assert small.encode(text).ids != ids


# -- training ----------------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_trained_vocabulary_layout(trained):
    vocab, merges = gpt2_bpe.model_vocab_and_merges(trained.to_str())
    assert gpt2_bpe.vocab_size(trained) == 1500 and gpt2_bpe.eot_id(trained) == 1499
    assert sorted(vocab.values()) == list(range(1499))
    assert {vocab[char] for char in gpt2_bpe.byte_to_unicode().values()} == set(range(256))
    assert len(merges) == 1499 - 256
    assert [vocab[a + b] for a, b in merges] == list(range(256, 1499))  # ids follow merge order: tiktoken's ranks


@pytest.mark.realdata
def test_trained_files_load_in_tiktoken_with_identical_ids(tmp_path, shared_data, trained, monkeypatch):
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    vocab_json, merges_txt = gpt2_bpe.gpt2_files(trained)
    (tmp_path / "vocab.json").write_bytes(vocab_json)
    (tmp_path / "merges.txt").write_bytes(merges_txt)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    ranks = data_gym_to_mergeable_bpe_ranks(str(tmp_path / "merges.txt"), str(tmp_path / "vocab.json"))
    loaded = tiktoken.Encoding("trained", pat_str=gpt2_bpe.GPT2_PATTERN, mergeable_ranks=ranks,
                               special_tokens={"<|endoftext|>": 1499})
    texts = _real_texts(shared_data)
    expected = Encoder(trained.to_str(), engine="tokenizers").encode(texts)
    assert [loaded.encode_ordinary(text) for text in texts] == expected
    assert Encoder(trained.to_str(), engine="tiktoken").encode(texts) == expected


@pytest.mark.realdata
def test_trained_files_load_in_transformers(tmp_path, shared_data, trained):
    transformers = pytest.importorskip("transformers")
    vocab_json, merges_txt = gpt2_bpe.gpt2_files(trained)
    (tmp_path / "vocab.json").write_bytes(vocab_json)
    (tmp_path / "merges.txt").write_bytes(merges_txt)
    hf = transformers.GPT2Tokenizer.from_pretrained(str(tmp_path))  # finds vocab.json + merges.txt by name
    assert hf.eos_token_id == 1499 and len(hf) == 1500
    texts = [page["text"] for page in real_pages(shared_data)[:20]]
    expected = Encoder(trained.to_str(), engine="tokenizers").encode(texts)
    assert [hf(text)["input_ids"] for text in texts] == expected


def test_training_rejects_a_vocabulary_without_room_for_the_bytes():
    with pytest.raises(ValueError, match="at least 257"):
        gpt2_bpe.train_bpe([["some text"]], vocab_size=256)


def test_sample_is_the_lowest_hashes_up_to_the_size():
    import numpy as np

    hashes = np.array([50, 10, 40, 30, 20], dtype=np.uint64)
    sizes = np.array([5, 5, 5, 5, 5], dtype=np.int64)
    sample = tokenizer_stage.choose_sample(hashes, sizes, 12)
    assert (sample.max_hash, sample.documents, sample.text_bytes) == (30, 3, 15)
    assert tokenizer_stage.choose_sample(hashes, sizes, 100).max_hash is None
    assert tokenizer_stage.choose_sample(hashes, sizes, 0).max_hash is None


# -- the stage ---------------------------------------------------------------------------------------------------


def _read_outputs(run: Path) -> dict[str, bytes]:
    return {name: Path(run, layout.TOKENIZER, name).read_bytes() for name in tokenizer_stage.FILES}


def _counters(run: Path) -> dict[str, int]:
    return json.loads(Path(run, layout.STATS, "tokenizer.json").read_text())["counters"]


@pytest.mark.realdata
def test_stage_trains_and_writes_gpt2_format_files(tmp_path, shared_data, webtext_cli):
    run = tmp_path / "run"
    place_docs(run, real_pages(shared_data) + tricky_docs(), files=2)
    assert webtext_cli("tokenizer", run, "--vocab-size", "1000") == 0
    files = _read_outputs(run)
    vocab = json.loads(files["vocab.json"])
    assert len(vocab) == 1000 and vocab["<|endoftext|>"] == 999 and max(vocab.values()) == 999
    merges = files["merges.txt"].decode().splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 1000 - 257
    encoder = Encoder(files["tokenizer.json"])
    assert encoder.engine == "tiktoken" and encoder.vocab_size == 1000
    stats = _counters(run)
    assert stats["docs.read"] == stats["docs.trained"] == 91 + len(TRICKY_TEXTS)
    assert stats["vocab.size"] == 1000 and stats["vocab.merges"] == 743
    assert Path(run, layout.TOKENIZER, layout.SUCCESS).exists()


@pytest.mark.realdata
def test_stage_is_deterministic_whatever_the_file_layout(tmp_path, shared_data, webtext_cli):
    pages = real_pages(shared_data)
    outputs = []
    for name, rows, files in (("one", pages, 1), ("three", pages[::-1], 3)):
        run = tmp_path / name
        place_docs(run, rows, files=files)
        assert webtext_cli("tokenizer", run, "--vocab-size", "800") == 0
        outputs.append(_read_outputs(run))
    assert outputs[0] == outputs[1]


@pytest.mark.realdata
def test_stage_sample_is_deterministic_and_big_enough(tmp_path, shared_data, webtext_cli):
    pages = real_pages(shared_data)
    results = []
    for name, rows, files in (("one", pages, 1), ("four", pages[::-1], 4)):
        run = tmp_path / name
        place_docs(run, rows, files=files)
        assert webtext_cli("tokenizer", run, "--vocab-size", "600", "--sample-bytes", "100000") == 0
        stats = _counters(run)
        results.append((_read_outputs(run), stats["docs.trained"], stats["bytes.trained"]))
    assert results[0] == results[1]
    _, documents, text_bytes = results[0]
    total = sum(len(page["text"].encode()) for page in pages)
    assert 100_000 <= text_bytes < total and 0 < documents < len(pages)


@pytest.mark.realdata
def test_stage_from_gpt2_copies_openai_files(tmp_path, gpt2_dir, webtext_cli):
    run = tmp_path / "run"  # no documents needed
    assert webtext_cli("tokenizer", run, "--from-gpt2", gpt2_dir) == 0
    files = _read_outputs(run)
    assert files["vocab.json"] == (gpt2_dir / "encoder.json").read_bytes()
    assert files["merges.txt"] == (gpt2_dir / "vocab.bpe").read_bytes()
    assert Encoder(files["tokenizer.json"]).encode(["Hello world"]) == [[15496, 995]]


def _repeated_docs(prefix: str, words: str, count: int) -> list[dict]:
    return [{"doc_id": f"{prefix}{i}", "text": words * 50, "url": None} for i in range(count)]


def test_stage_prefers_deduplicated_documents(tmp_path, webtext_cli):
    run = tmp_path / "run"
    place_docs(run, _repeated_docs("c", "crawl words ", 5))
    write_docs(Path(run, layout.DEDUP), _repeated_docs("d", "dedup text ", 3))
    layout.RunDir(str(run)).write_success("dedup", "x", [layout.DEDUP])
    assert webtext_cli("tokenizer", run, "--vocab-size", "300") == 0
    stats = _counters(run)
    assert stats["docs.read"] == 3
    assert "Ġdedup" in json.loads(Path(run, layout.TOKENIZER, "vocab.json").read_text())


def test_stage_refuses_output_of_an_unfinished_dedup(tmp_path, webtext_cli, capsys):
    run = tmp_path / "run"
    place_docs(run, _repeated_docs("c", "crawl words ", 5))
    write_docs(Path(run, layout.DEDUP), _repeated_docs("d", "partial ", 2))
    assert webtext_cli("tokenizer", run, "--vocab-size", "300") == 2
    err = capsys.readouterr().err
    assert "the dedup stage has not finished" in err and str(Path(run, layout.DEDUP, layout.SUCCESS)) in err
    assert not Path(run, layout.TOKENIZER, layout.SUCCESS).exists()


def test_stage_accepts_any_parquet_with_doc_id_and_text(tmp_path, webtext_cli):
    run = tmp_path / "run"
    schema = pa.schema([("text", pa.large_string()), ("doc_id", pa.string()), ("extra", pa.int64())])
    rows = [{"text": f"row {i} says something", "doc_id": str(i), "extra": i} for i in range(10)]
    rows.append({"text": None, "doc_id": "null", "extra": 0})
    rows.append({"text": "", "doc_id": "empty", "extra": 0})
    place_docs(run, rows, prefix="anything", schema=schema)
    assert webtext_cli("tokenizer", run, "--vocab-size", "300") == 0
    stats = _counters(run)
    assert stats["docs.read"] == 12 and stats["docs.trained"] == 10 and stats["docs.empty_text"] == 2


def test_stage_errors_are_clear(tmp_path, webtext_cli, capsys):
    run = tmp_path / "run"
    assert webtext_cli("tokenizer", run) == 2
    assert "no documents to read" in capsys.readouterr().err

    [docs_file] = place_docs(run, [{"doc_id": "a", "body": "text"}],
                             schema=pa.schema([("doc_id", pa.string()), ("body", pa.string())]))
    assert webtext_cli("tokenizer", run) == 2
    err = capsys.readouterr().err
    assert f"{docs_file.name}: has no column 'text'" in err

    docs_file.write_bytes(b"not parquet at all")
    assert webtext_cli("tokenizer", run) == 2
    assert "not a readable Parquet file" in capsys.readouterr().err

    with pytest.raises(SystemExit) as refused:  # the flag's range, checked as the command line is parsed
        webtext_cli("tokenizer", run, "--vocab-size", "100")
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "--vocab-size" in err and "at least 257, got 100" in err

    assert webtext_cli("tokenizer", run, "--from-gpt2", tmp_path / "nowhere") == 2
    assert "encoder.json not found" in capsys.readouterr().err

    bad = tmp_path / "bad-gpt2"
    bad.mkdir()
    (bad / "encoder.json").write_text(json.dumps({"a": 0, "<|endoftext|>": 1}))
    (bad / "vocab.bpe").write_text("#version: 0.2\na b\n")
    assert webtext_cli("tokenizer", run, "--from-gpt2", bad) == 2
    assert "single-byte tokens are missing" in capsys.readouterr().err


def test_stage_is_skipped_when_nothing_changed(tmp_path, webtext_cli, capsys):
    run = tmp_path / "run"
    rows = [{"doc_id": str(i), "text": f"document number {i}", "url": None} for i in range(4)]
    place_docs(run, rows)
    assert webtext_cli("tokenizer", run, "--vocab-size", "300") == 0
    capsys.readouterr()
    assert webtext_cli("tokenizer", run, "--vocab-size", "300") == 0
    assert "up to date, skipped" in capsys.readouterr().err
    assert webtext_cli("tokenizer", run, "--vocab-size", "301") == 0
    assert "up to date" not in capsys.readouterr().err


# -- the encoder's engine choice -----------------------------------------------------------------------------------


def test_encoder_falls_back_to_tokenizers_for_a_vocabulary_tiktoken_cannot_run(small, caplog):
    config = json.loads(small.to_str())
    config["added_tokens"].append({**config["added_tokens"][0], "id": 400, "content": "<|pad|>"})
    odd = json.dumps(config)
    encoder = Encoder(odd)
    assert encoder.engine == "tokenizers"
    assert "not runnable by tiktoken" in caplog.text
    assert encoder.encode(["a <|pad|> b"]) == Encoder(odd, engine="tokenizers").encode(["a <|pad|> b"])
    with pytest.raises(IncompatibleVocabulary, match="added tokens"):
        Encoder(odd, engine="tiktoken")


def test_encoder_documents_end_with_eot_in_the_shard_dtype(small):
    encoder = Encoder(small.to_str())
    texts = ["one", "two words", "<|endoftext|>"]
    documents = encoder.encode_documents(texts)
    assert documents.tokens.dtype.name == "uint16"
    lengths = [len(ids) + 1 for ids in encoder.encode(texts)]
    assert list(documents.offsets) == [0, lengths[0], lengths[0] + lengths[1], sum(lengths)]
    ends = documents.tokens[documents.offsets[1:] - 1]
    assert (ends == encoder.eot_id).all()
    assert (documents.tokens == encoder.eot_id).sum() == 3

