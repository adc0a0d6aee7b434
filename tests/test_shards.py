"""Tests for the shards stage: the Beam job, the manifest, the train/val split, determinism and --verify."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from tokenizers import Tokenizer

from tests.tokenizer_corpus import letter_bpe_gpt2_files, place_docs, real_pages, tricky_docs, word_docs
from webtext.pipeline import gpt2_bpe, layout, report, shards_stage
from webtext.pipeline.cli import main as webtext
from webtext.pipeline.layout import RunDir
from webtext.pipeline.storage import read_rows as read_parquet_rows
from webtext.pipeline.token_encoding import Encoder
from webtext.train import shard_format
from webtext.train.shard_format import Manifest, Shard

SHARD_TOKENS = 20_000
VAL_FRACTION = 0.05
FNAPI = "--runner=FnApiRunner"
MULTIPROCESS = ["--direct_num_workers=2"]  # the default local runner


def corpus_rows(shared_data: Path) -> list[dict]:
    """Real pages and tricky texts, plus one document per reject reason and a duplicated doc_id."""
    rows = real_pages(shared_data) + tricky_docs()
    rows += [{"doc_id": "empty", "text": "", "url": None},
             {"doc_id": "null-text", "text": None, "url": None},
             {"doc_id": None, "text": "a document without an id", "url": None},
             {"doc_id": "", "text": "a document with an empty id", "url": None},
             {"doc_id": "tricky-0", "text": "a second document claiming the id tricky-0", "url": None}]
    return rows


def make_run(root: Path, rows: list[dict], files: int, *shard_args: str, vocab_size: int = 1000) -> Path:
    place_docs(root, rows, files=files)
    assert webtext(["tokenizer", str(root), "--vocab-size", str(vocab_size)]) == 0
    assert webtext(["shards", str(root), "--shard-tokens", str(SHARD_TOKENS), "--val-fraction", str(VAL_FRACTION),
                    *shard_args]) == 0
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data) -> Path:
    return make_run(tmp_path_factory.mktemp("shards") / "run", corpus_rows(shared_data), 2, FNAPI)


def shard_bytes(run: Path) -> dict[str, bytes]:
    files = sorted(Path(run, layout.SHARDS).glob("*"))
    return {path.name: path.read_bytes() for path in files if path.name != layout.SUCCESS}


def stats(run: Path) -> dict[str, int]:
    return json.loads(Path(run, layout.STATS, "shards.json").read_text())["counters"]


def copy_run(run: Path, destination: Path) -> Path:
    shutil.copytree(run, destination)
    return destination


# -- what the stage writes ----------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_manifest_describes_the_shards(run):
    manifest = Manifest.load(Path(run, layout.SHARDS))
    tokenizer_json = Path(run, layout.TOKENIZER_JSON).read_bytes()
    assert manifest.tokenizer_sha256 == hashlib.sha256(tokenizer_json).hexdigest()
    assert (manifest.vocab_size, manifest.eot_id, manifest.dtype) == (1000, 999, "uint16")
    raw = json.loads(Path(run, layout.SHARDS_MANIFEST).read_text())
    assert raw["format"] == "webtext-shards" and raw["version"] == 1
    assert [s["name"] for s in raw["shards"]] == sorted(s["name"] for s in raw["shards"] if s["split"] == "train") + \
        sorted(s["name"] for s in raw["shards"] if s["split"] == "val")
    names = {path.name for path in Path(run, layout.SHARDS).glob("*.arrow")}
    assert names == {info.name for info in manifest.shards}
    for info in manifest.shards:
        assert shard_format.sha256_file(Path(run, layout.SHARDS, info.name)) == info.sha256
        shard = Shard(Path(run, layout.SHARDS, info.name))
        assert (shard.num_documents, shard.num_tokens, shard.dtype) == (info.documents, info.tokens, "uint16")
    shard_format.verify(manifest)


@pytest.mark.realdata
def test_every_document_decodes_back_to_its_text(run, shared_data):
    texts = {row["doc_id"]: {row["text"]} for row in real_pages(shared_data) + tricky_docs()}
    texts["tricky-0"].add("a second document claiming the id tricky-0")  # one of the two stays
    encoder = Encoder(Path(run, layout.TOKENIZER_JSON).read_bytes())
    seen = []
    for path in sorted(Path(run, layout.SHARDS).glob("*.arrow")):
        shard = Shard(path)
        for index in range(len(shard)):
            tokens = shard.document(index)
            assert np.shares_memory(tokens, shard.tokens)  # a view of the memory map
            assert tokens[-1] == encoder.eot_id and encoder.eot_id not in tokens[:-1]
            assert encoder.decode(tokens[:-1]) in texts[shard.doc_id(index)]
            seen.append(shard.doc_id(index))
    assert sorted(seen) == sorted(texts)  # each kept document exactly once; the second "tricky-0" was dropped


@pytest.mark.realdata
def test_split_is_a_stable_hash_of_doc_id_with_a_val_shard(run):
    manifest = Manifest.load(Path(run, layout.SHARDS))
    assert manifest.split("val") and manifest.split("train")
    for info in manifest.shards:
        for doc_id in Shard(Path(run, layout.SHARDS, info.name)).doc_ids.to_pylist():
            assert shard_format.split_for_doc(doc_id, VAL_FRACTION) == info.split


@pytest.mark.realdata
def test_shards_hold_about_shard_tokens_in_hash_order(run):
    manifest = Manifest.load(Path(run, layout.SHARDS))
    for split in ("train", "val"):
        infos = manifest.split(split)
        total = manifest.split_tokens(split)
        assert len(infos) == max(1, -(-total // SHARD_TOKENS))
        assert [info.name for info in infos] == [shard_format.shard_name(split, i) for i in range(len(infos))]
        previous_last = -1
        for info in infos:
            shard = Shard(Path(run, layout.SHARDS, info.name))
            longest = int(np.diff(shard.offsets).max())
            assert info.tokens <= total / len(infos) + longest
            hashes = [shards_stage.doc_hash(d) for d in shard.doc_ids.to_pylist()]
            assert hashes == sorted(hashes) and hashes[0] > previous_last
            previous_last = hashes[-1]


@pytest.mark.realdata
def test_rejects_and_counters(run):
    rejects = [row for path in sorted(Path(run, layout.REJECTS, "shards").glob("*.parquet"))
               for row in read_parquet_rows(str(path))]
    reasons = sorted(row["reason"] for row in rejects)
    assert reasons == ["duplicate_doc_id", "empty_text", "missing_doc_id", "missing_doc_id", "missing_text"]
    assert {row["item_id"] for row in rejects if row["reason"] == "duplicate_doc_id"} == {"tricky-0"}
    counters = stats(run)
    manifest = Manifest.load(Path(run, layout.SHARDS))
    kept = 91 + 6
    assert counters["docs.read"] == kept + 5 and counters["docs.encoded"] == kept + 1
    assert counters["reject.duplicate_doc_id"] == 1 and counters["reject.missing_doc_id"] == 2
    assert counters["reject.empty_text"] == 1 and counters["reject.missing_text"] == 1
    assert counters["docs.train"] + counters["docs.val"] == kept
    assert counters["tokens.train"] == manifest.split_tokens("train")
    assert counters["tokens.val"] == manifest.split_tokens("val")
    assert counters["shards.verified"] == len(manifest.shards)
    assert counters["docs.cross_checked"] > 0  # tiktoken's ids were compared with tokenizers' on real documents


def test_a_corpus_with_nothing_to_reject_leaves_no_rejects_files(tmp_path):
    words = "the river runs past the old mill and the town keeps its bridge over water".split()
    run = make_run(tmp_path / "run", word_docs(words, 30, 120), 1, FNAPI, vocab_size=300)
    assert stats(run)["docs.encoded"] == 30
    for stage in ("tokenizer", "shards"):
        assert list(Path(run, layout.REJECTS).glob(f"{stage}/*")) == [], stage
    summary = report.collect(RunDir(str(run)))  # the report reads a missing rejects folder as no rejects
    assert summary["rejects"]["tokenizer"] == summary["rejects"]["shards"] == {}
    assert summary["funnel"][-1]["step"] == "documents in shards" and summary["funnel"][-1]["top_rejects"] == []
    assert webtext(["shards", str(run), "--shard-tokens", str(SHARD_TOKENS), "--val-fraction", str(VAL_FRACTION),
                    FNAPI]) == 0  # its own _SUCCESS and the tokenizer's still hold: up to date


# -- determinism --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.realdata
def test_same_files_with_two_workers_and_the_tokenizers_engine(run, tmp_path, shared_data):
    other = make_run(tmp_path / "run", corpus_rows(shared_data), 2, *MULTIPROCESS, "--encoder", "tokenizers")
    assert shard_bytes(other) == shard_bytes(run)
    assert stats(other).get("docs.cross_checked", 0) == 0  # no second engine to compare with


@pytest.mark.realdata
def test_same_files_whatever_the_input_layout(run, tmp_path, shared_data):
    other = make_run(tmp_path / "run", corpus_rows(shared_data)[::-1], 5, FNAPI)
    assert shard_bytes(other) == shard_bytes(run)


def test_only_token_refs_cross_the_shuffle_and_the_tokens_come_back_from_the_work_files(tmp_path):
    """Encoders append tokens to their own work files; shard writers read any subset back, in any order."""
    folder = str(tmp_path / "work")
    (tmp_path / "work").mkdir()
    batches = [shard_format.TokenBatch.from_lengths(np.arange(n * 3, dtype=np.uint16) + n, np.full(3, n, np.int64))
               for n in (1, 4, 2)]
    refs = []
    for start in (0, 2):  # two bundles: two files
        writer = shards_stage.TokenWriter(folder)
        for index in range(start, min(start + 2, len(batches))):
            ids = [f"d{index}-{i}" for i in range(3)]
            refs.append(writer.add(ids, np.arange(3, dtype=np.uint64), batches[index]))
        writer.close()
    assert {name for r in refs for name in r.files} == {p.name for p in (tmp_path / "work").iterdir()}
    assert not hasattr(refs[0], "documents") and refs[0].lengths.tolist() == [1, 1, 1]
    merged = shards_stage.TokenRefs.concat(refs)
    order = [8, 0, 4, 3, 7]
    back = shards_stage.read_tokens(folder, merged.take(order), "uint16")
    every = shard_format.TokenBatch.concat(batches)
    assert all(np.array_equal(back.document(i), every.document(j)) for i, j in enumerate(order))


def test_the_work_folder_is_removed(run):
    assert Path(run, layout.SHARDS, "_work") == Path(run, layout.SHARDS_WORK)
    assert not Path(run, layout.SHARDS_WORK).exists()


# -- the original GPT-2 vocabulary --------------------------------------------------------------------------------


@pytest.mark.realdata
def test_gpt2_vocabulary_shards_hold_openai_ids(tmp_path, shared_data, webtext_cli, beam_args):
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    run = tmp_path / "run"
    pages = real_pages(shared_data)[:30] + tricky_docs()
    place_docs(run, pages)
    gpt2_dir = shared_data / "gpt2-tokenizer"
    assert webtext_cli("tokenizer", run, "--from-gpt2", gpt2_dir) == 0
    assert webtext_cli("shards", run, "--val-fraction", "0.1", *beam_args) == 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", "")
        ranks = data_gym_to_mergeable_bpe_ranks(str(gpt2_dir / "vocab.bpe"), str(gpt2_dir / "encoder.json"))
    reference = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                  special_tokens={"<|endoftext|>": 50256})
    texts = {page["doc_id"]: page["text"] for page in pages}
    manifest = Manifest.load(Path(run, layout.SHARDS))
    assert (manifest.vocab_size, manifest.eot_id, manifest.dtype) == (50257, 50256, "uint16")
    for info in manifest.shards:
        for doc_id, tokens in Shard(Path(run, layout.SHARDS, info.name)):
            assert tokens.tolist() == reference.encode_ordinary(texts.pop(doc_id)) + [50256]
    assert not texts


# -- verification -------------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_verify_passes_on_good_shards(run, webtext_cli, capsys):
    assert webtext_cli("shards", run, "--verify") == 0
    out = capsys.readouterr().out
    assert "verified" in out and "train" in out and "val" in out


@pytest.mark.realdata
@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_verify_names_a_damaged_shard(run, tmp_path, webtext_cli, capsys, damage):
    copy = copy_run(run, tmp_path / "run")
    victim = Path(copy, layout.SHARDS, shard_format.shard_name("train", 1))
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[: len(data) // 3]))
    else:
        victim.unlink()
    assert webtext_cli("shards", copy, "--verify") == 2
    err = capsys.readouterr().err
    assert "verification failed" in err and str(victim) in err
    assert {"flip": "sha256", "truncate": "sha256", "delete": "missing"}[damage] in err


@pytest.mark.realdata
def test_verify_checks_contents_not_only_checksums(run, tmp_path):
    copy = copy_run(run, tmp_path / "run")
    manifest = Manifest.load(Path(copy, layout.SHARDS))
    info = manifest.split("train")[0]
    shard = Shard(Path(copy, layout.SHARDS, info.name))
    tokens = shard.tokens.copy()
    tokens[shard.offsets[1] - 1] = 5  # the first document no longer ends with eot
    stats_ = shard_format.write_shard_batch(Path(copy, layout.SHARDS, info.name),
                                            shard_format.TokenBatch(tokens, shard.offsets), shard.doc_ids.to_pylist(),
                                            "uint16")
    manifest.shards[manifest.shards.index(info)] = shard_format.ShardInfo.from_stats(info.name, "train", stats_)
    manifest.save()
    with pytest.raises(shard_format.ShardFormatError, match=f"{info.name}.*does not end with the end-of-text id"):
        shards_stage.verify_shards(RunDir(str(copy)))


@pytest.mark.realdata
def test_verify_refuses_shards_of_another_tokenizer(run, tmp_path, webtext_cli, capsys):
    copy = copy_run(run, tmp_path / "run")
    tokenizer = Path(copy, layout.TOKENIZER_JSON)
    tokenizer.write_bytes(tokenizer.read_bytes() + b"\n")
    assert webtext_cli("shards", copy, "--verify") == 2
    assert "rerun the shards stage" in capsys.readouterr().err


def test_verify_without_shards_says_so(tmp_path, webtext_cli, capsys):
    assert webtext_cli("shards", tmp_path / "run", "--verify") == 2
    assert "no shard manifest here" in capsys.readouterr().err


# -- planning -----------------------------------------------------------------------------------------------------


def test_plan_cuts_near_equal_shards_and_keeps_equal_hashes_together():
    hashes = np.array([2**63 + i * 1000 for i in range(100)] + [5], dtype=np.uint64)
    lengths = np.full(101, 10, dtype=np.int64)
    plan = shards_stage.make_plan((hashes, lengths), val_fraction=0.0, shard_tokens=250)
    assert plan.names[0] == shard_format.shard_name("val", 0) and plan.splits.count("val") == 1
    located = plan.locate(hashes)
    assert located[-1] == 0 and (located[:-1] > 0).all()  # the lowest hash alone is val: at least one val document
    sizes = np.bincount(located[:-1])[1:] * 10
    assert len(sizes) == 4 and sizes.sum() == 1000 and sizes.max() - sizes.min() <= 10

    doubled = np.repeat(np.arange(1, 51, dtype=np.uint64) * 2**57, 2)  # pairs of equal hashes
    plan = shards_stage.make_plan((doubled, np.full(100, 7, np.int64)), val_fraction=0.0, shard_tokens=33)
    located = plan.locate(doubled)
    assert (located[0::2] == located[1::2]).all()
    assert plan.splits.count("val") == 1 and (located[:2] == 0).all() and (located[2:] > 0).all()


def test_plan_never_makes_more_shards_than_documents():
    hashes = np.arange(1, 11, dtype=np.uint64) * 2**60
    plan = shards_stage.make_plan((hashes, np.full(10, 1000, np.int64)), val_fraction=0.0, shard_tokens=1)
    assert plan.splits == ["val"] + ["train"] * 9
    assert list(plan.locate(hashes)) == list(range(10))


def test_plan_val_fraction_matches_train_split_for_doc():
    doc_ids = [f"doc-{i}" for i in range(2000)]
    hashes = np.array([shards_stage.doc_hash(d) for d in doc_ids], dtype=np.uint64)
    plan = shards_stage.make_plan((hashes, np.ones(2000, np.int64)), val_fraction=0.1, shard_tokens=10**9)
    located = plan.locate(hashes)
    for doc_id, position in zip(doc_ids, located):
        assert plan.splits[position] == shard_format.split_for_doc(doc_id, 0.1)


def test_plan_of_nothing_is_empty():
    plan = shards_stage.make_plan((np.empty(0, np.uint64), np.empty(0, np.int64)), 0.1, 100)
    assert plan.names == []


# -- errors ---------------------------------------------------------------------------------------------------------


def test_stage_errors_are_clear(tmp_path, webtext_cli, capsys, beam_args):
    run = tmp_path / "run"
    rows = [{"doc_id": f"d{i}", "text": f"text number {i} " * 20, "url": None} for i in range(8)]
    place_docs(run, rows)
    assert webtext_cli("shards", run, *beam_args) == 2
    assert "the tokenizer stage has not finished" in capsys.readouterr().err

    assert webtext_cli("tokenizer", run, "--vocab-size", "300") == 0
    assert webtext_cli("shards", run, "--val-fraction", "1.0", *beam_args) == 2
    assert "--val-fraction must lie in [0, 1)" in capsys.readouterr().err

    place_docs(run, [{"doc_id": f"d{i}", "text": "", "url": None} for i in range(3)])
    assert webtext_cli("shards", run, *beam_args) == 2
    assert "all 3 were rejected" in capsys.readouterr().err

    place_docs(run, rows[:3])
    assert webtext_cli("shards", run, "--val-fraction", "0.999", *beam_args) == 2
    assert "every document fell into the val split" in capsys.readouterr().err


@pytest.mark.realdata
def test_shards_on_a_non_local_filesystem_go_through_a_temporary_file(run, tmp_path, monkeypatch, beam_args):
    """The gs:// path: shards written to a local temp file and copied through Beam's FileSystems, and verified
    after copying them back one at a time (exercised here on local disk by treating it as remote)."""
    copy = copy_run(run, tmp_path / "run")
    monkeypatch.setattr(shards_stage, "_is_local", lambda path: False)
    assert webtext(["shards", str(copy), "--force", "--shard-tokens", str(SHARD_TOKENS),
                    "--val-fraction", str(VAL_FRACTION), *beam_args]) == 0
    assert shard_bytes(copy) == shard_bytes(run)
    assert shards_stage.verify_shards(RunDir(str(copy))).shards == len(Manifest.load(Path(run, layout.SHARDS)).shards)
    victim = Path(copy, layout.SHARDS, shard_format.shard_name("val", 0))
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(shard_format.ShardFormatError, match=f"{victim}: sha256"):
        shards_stage.verify_shards(RunDir(str(copy)))


def test_small_corpus_makes_one_train_and_one_val_shard(tmp_path, webtext_cli, beam_args):
    run = tmp_path / "run"
    rows = [{"doc_id": f"d{i}", "text": f"short document {i} with a few words", "url": None} for i in range(20)]
    schema = pa.schema([("doc_id", pa.string()), ("text", pa.large_string()), ("url", pa.string())])
    place_docs(run, rows, schema=schema)
    assert webtext_cli("tokenizer", run, "--vocab-size", "300") == 0
    assert webtext_cli("shards", run, *beam_args) == 0
    manifest = Manifest.load(Path(run, layout.SHARDS))
    assert [info.name for info in manifest.shards] == [shard_format.shard_name("train", 0),
                                                        shard_format.shard_name("val", 0)]
    assert manifest.split("val")[0].documents == 1 and manifest.split("train")[0].documents == 19
    encoder = Encoder(Path(run, layout.TOKENIZER_JSON).read_bytes())
    val_doc, tokens = next(iter(Shard(Path(run, layout.SHARDS, shard_format.shard_name("val", 0)))))
    assert encoder.decode(tokens[:-1]) == rows[int(val_doc[1:])]["text"]
    assert gpt2_bpe.ENDOFTEXT == encoder.decode(tokens[-1:])


# -- a vocabulary beyond 65,536 tokens: uint32 shards, end to end -------------------------------------------------

LARGE_VOCAB = 70_000
LARGE_EOT = LARGE_VOCAB - 1
BLOCK_SIZE = 64


@pytest.fixture(scope="module")
def large_vocab_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A run whose tokenizer has LARGE_VOCAB tokens, sharded with tiktoken: (run, its documents)."""
    root = tmp_path_factory.mktemp("uint32")
    encoder_json, vocab_bpe = letter_bpe_gpt2_files(LARGE_VOCAB)
    (root / "letter-bpe").mkdir()
    (root / "letter-bpe" / "encoder.json").write_bytes(encoder_json)
    (root / "letter-bpe" / "vocab.bpe").write_bytes(vocab_bpe)
    beyond_uint16 = [token for token, token_id in json.loads(encoder_json).items() if 2**16 <= token_id < LARGE_EOT]
    rows = word_docs(beyond_uint16 + ["the", "shard", "holds", "tokens", "of", "words"], 40, 120) + tricky_docs()
    run = root / "run"
    place_docs(run, rows, files=2)
    assert webtext(["tokenizer", str(run), "--from-gpt2", str(root / "letter-bpe")]) == 0
    assert webtext(["shards", str(run), "--shard-tokens", "4000", "--val-fraction", "0.1", "--encoder", "tiktoken",
                    FNAPI]) == 0
    return run, rows


def test_large_vocabulary_makes_uint32_shards_that_verify(large_vocab_run, webtext_cli):
    """A vocabulary over 65,536 tokens gives uint32 shards holding ids above 65,535, and --verify accepts them."""
    run, _ = large_vocab_run
    manifest = Manifest.load(Path(run, layout.SHARDS))
    assert (manifest.vocab_size, manifest.eot_id, manifest.dtype) == (LARGE_VOCAB, LARGE_EOT, "uint32")
    assert len(manifest.split("train")) > 1 and manifest.split("val")
    shards = [Shard(manifest.path_of(info)) for info in manifest.shards]
    assert all(shard.dtype == "uint32" and shard.tokens.dtype == np.uint32 for shard in shards)
    assert max(int(shard.tokens.max()) for shard in shards) == LARGE_EOT
    assert sum(int(np.count_nonzero((shard.tokens >= 2**16) & (shard.tokens != LARGE_EOT))) for shard in shards) > 1000
    assert stats(run)["docs.cross_checked"] > 0  # tiktoken encoded them, checked against tokenizers
    assert webtext_cli("shards", run, "--verify") == 0


def test_large_vocabulary_documents_match_the_tokenizers_library(large_vocab_run):
    """Each document's uint32 tokens are `tokenizers`' ids plus end-of-text, and decode back to its text."""
    run, rows = large_vocab_run
    reference = Tokenizer.from_str(Path(run, layout.TOKENIZER_JSON).read_text(encoding="utf-8"))
    reference.encode_special_tokens = True  # "<|endoftext|>" written in a document is text
    texts = {row["doc_id"]: row["text"] for row in rows}
    for path in sorted(Path(run, layout.SHARDS).glob("*.arrow")):
        for doc_id, tokens in Shard(path):
            text = texts.pop(doc_id)
            assert tokens.tolist() == reference.encode(text, add_special_tokens=False).ids + [LARGE_EOT]
            assert reference.decode(tokens[:-1].tolist(), skip_special_tokens=False) == text
    assert not texts


def test_large_vocabulary_tokenizers_engine_writes_the_same_shards(large_vocab_run, tmp_path):
    """The `tokenizers` engine writes byte-identical uint32 shards to tiktoken's."""
    run, _ = large_vocab_run
    copy = copy_run(run, tmp_path / "run")
    assert webtext(["shards", str(copy), "--force", "--shard-tokens", "4000", "--val-fraction", "0.1",
                    "--encoder", "tokenizers", FNAPI]) == 0
    assert shard_bytes(copy) == shard_bytes(run)
    assert stats(copy).get("docs.cross_checked", 0) == 0


def test_large_vocabulary_shards_feed_the_trainer_loader(large_vocab_run):
    """The trainer's window index and prefetching loader read uint32 shards as the same ids, widened to int64."""
    import torch

    from webtext.train.data import PrefetchingLoader, TrainBatches, WindowIndex, open_split

    run, _ = large_vocab_run
    shards = open_split(Manifest.load(Path(run, layout.SHARDS)), "train")
    index = WindowIndex(shards, BLOCK_SIZE)
    expected = [tokens[start:start + BLOCK_SIZE + 1]
                for tokens in (segment.tokens for shard in shards for segment in shard.segments)
                for start in range(0, len(tokens) - BLOCK_SIZE, BLOCK_SIZE)]
    windows = index.gather(np.arange(index.count))
    assert windows.dtype == np.int64 and len(windows) == len(expected) == index.count
    assert (windows == np.stack(expected).astype(np.int64)).all()
    assert windows.max() == LARGE_EOT and np.count_nonzero((windows >= 2**16) & (windows != LARGE_EOT)) > 1000

    window_ids = TrainBatches(index, micro_batch=index.count, seed=7).next_window_ids()
    loader = PrefetchingLoader(TrainBatches(index, micro_batch=index.count, seed=7), torch.device("cpu"))
    try:
        x, y = loader.next()
    finally:
        loader.close()
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(torch.cat([x, y[:, -1:]], dim=1), torch.from_numpy(windows[window_ids]))
    assert torch.equal(x[:, 1:], y[:, :-1]) and int(x.max()) >= 2**16
