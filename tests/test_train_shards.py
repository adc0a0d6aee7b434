"""Tests for webtext.train.shard_format: writing, memory-mapped reading, manifest validation and verify()."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from webtext.train import shard_format
from webtext.train.shard_format import MANIFEST_NAME, Manifest, Shard, ShardFormatError, ShardInfo, TokenBatch

EOT = 99
VOCAB = 100


def make_documents(count: int, seed: int = 0, eot: int = EOT) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    documents = []
    for index in range(count):
        body = rng.integers(0, eot, size=int(rng.integers(1, 40)))
        documents.append((f"doc-{seed}-{index}", np.append(body, eot).astype(np.uint16)))
    return documents


def write_run(tmp_path, splits=(("train", 3), ("val", 1)), docs_per_shard=20, dtype="uint16") -> Manifest:
    infos = []
    seed = 0
    for split, count in splits:
        for index in range(count):
            name = shard_format.shard_name(split, index)
            stats = shard_format.write_shard(tmp_path / name, make_documents(docs_per_shard, seed), dtype, eot_id=EOT)
            infos.append(ShardInfo.from_stats(name, split, stats))
            seed += 1
    manifest = Manifest(root=tmp_path, tokenizer_sha256="0" * 64, vocab_size=VOCAB, eot_id=EOT, dtype=dtype, shards=infos)
    manifest.save()
    return manifest


def test_round_trip_zero_copy_views(tmp_path):
    documents = make_documents(50)
    stats = shard_format.write_shard(tmp_path / "train-00000.arrow", documents, "uint16", eot_id=EOT)
    assert stats.documents == 50
    assert stats.tokens == sum(len(tokens) for _, tokens in documents)
    assert stats.sha256 == shard_format.sha256_file(tmp_path / "train-00000.arrow")

    shard = Shard(tmp_path / "train-00000.arrow")
    assert shard.dtype == "uint16" and shard.num_documents == 50 and shard.num_tokens == stats.tokens
    assert len(shard.segments) == 1
    assert shard.tokens.dtype == np.uint16
    assert not shard.tokens.flags.writeable  # a view of the read-only memory map, not a copy
    assert shard.offsets[0] == 0 and shard.offsets[-1] == stats.tokens and len(shard.offsets) == 51
    for index, (doc_id, tokens) in enumerate(documents):
        assert shard.doc_id(index) == doc_id
        np.testing.assert_array_equal(shard.document(index), tokens)
        assert np.shares_memory(shard.document(index), shard.tokens)
    assert list(shard.doc_ids.to_pylist()) == [doc_id for doc_id, _ in documents]


def test_file_is_one_uncompressed_record_batch(tmp_path):
    path = tmp_path / "s.arrow"
    shard_format.write_shard(path, make_documents(30), "uint16")
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        assert reader.num_record_batches == 1
        schema = reader.schema
        assert schema.field("tokens").type == pa.large_list(pa.field("item", pa.uint16(), nullable=False))
        assert schema.field("doc_id").type == pa.string()
        assert reader.get_batch(0).column("tokens").values.buffers()[1].size >= 2 * 30
    # the raw bytes carry the token values in place: memory-mappable, not compressed
    tokens = Shard(path).tokens
    assert tokens.tobytes() in path.read_bytes()


def test_batch_variant_matches_document_variant(tmp_path):
    documents = make_documents(25, seed=3)
    flat = np.concatenate([tokens for _, tokens in documents]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(tokens) for _, tokens in documents])])
    a = shard_format.write_shard(tmp_path / "a.arrow", documents, "uint16")
    b = shard_format.write_shard_batch(tmp_path / "b.arrow", TokenBatch(flat, offsets), [d for d, _ in documents],
                                       "uint16")
    assert a == b  # identical bytes, hence identical sha256


def test_writer_streams_batches_into_one_record_batch(tmp_path):
    documents = make_documents(40, seed=5)
    with shard_format.ShardWriter(tmp_path / "w.arrow", "uint32", eot_id=EOT) as writer:
        for start in range(0, 40, 7):
            chunk = documents[start:start + 7]
            flat = np.concatenate([tokens for _, tokens in chunk])
            offsets = np.concatenate([[0], np.cumsum([len(tokens) for _, tokens in chunk])])
            writer.add_batch(TokenBatch(flat, offsets), [doc_id for doc_id, _ in chunk])
    shard = Shard(tmp_path / "w.arrow")
    assert shard.dtype == "uint32" and len(shard.segments) == 1 and shard.num_documents == 40
    np.testing.assert_array_equal(shard.tokens, np.concatenate([t for _, t in documents]))


def test_token_batch_takes_and_concatenates_documents():
    documents = [tokens for _, tokens in make_documents(6, seed=9)]
    batch = TokenBatch.from_lengths(np.concatenate(documents), np.array([len(t) for t in documents]))
    assert len(batch) == 6 and list(batch.lengths) == [len(t) for t in documents]
    taken = batch.take([4, 1])
    assert len(taken) == 2 and taken.offsets[0] == 0
    np.testing.assert_array_equal(taken.document(0), documents[4])
    np.testing.assert_array_equal(taken.document(1), documents[1])
    joined = TokenBatch.concat([batch.take([0, 1]), batch.take([]), batch.take([2, 3, 4, 5])])
    np.testing.assert_array_equal(joined.tokens, batch.tokens)
    np.testing.assert_array_equal(joined.offsets, batch.offsets)
    assert TokenBatch.concat([batch]) is batch
    empty = TokenBatch.concat([], np.uint32)
    assert len(empty) == 0 and empty.tokens.dtype == np.uint32 and list(empty.offsets) == [0]


def test_writer_refuses_bad_documents_and_leaves_no_file(tmp_path):
    path = tmp_path / "bad.arrow"
    with pytest.raises(ValueError, match="does not end with eot"):
        shard_format.write_shard(path, [("a", np.array([1, 2, 3]))], "uint16", eot_id=EOT)
    with pytest.raises(ValueError, match="outside uint16"):
        shard_format.write_shard(path, [("a", np.array([70000, EOT]))], "uint16")
    with pytest.raises(ValueError, match="empty"):
        shard_format.write_shard(path, [("a", np.array([], dtype=np.int64))], "uint16")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_multi_batch_shard_written_by_another_tool_is_readable(tmp_path):
    """The format allows a few record batches; the reader serves each as its own contiguous segment."""
    documents = make_documents(10, seed=7)
    schema = shard_format.shard_schema("uint16")
    path = tmp_path / "multi.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for part in (documents[:4], documents[4:]):
            writer.write_batch(pa.RecordBatch.from_pylist(
                [{"tokens": t.tolist(), "doc_id": d} for d, t in part], schema=schema))
    shard = Shard(path)
    assert len(shard.segments) == 2 and shard.num_documents == 10
    for index, (doc_id, tokens) in enumerate(documents):
        assert shard.doc_id(index) == doc_id
        np.testing.assert_array_equal(shard.document(index), tokens)
    np.testing.assert_array_equal(shard.tokens, np.concatenate([t for _, t in documents]))
    np.testing.assert_array_equal(np.diff(shard.offsets), [len(t) for _, t in documents])


def test_manifest_round_trip_and_save_is_atomic(tmp_path):
    manifest = write_run(tmp_path)
    loaded = Manifest.load(tmp_path)
    assert loaded == manifest
    record = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert record["format"] == "webtext-shards" and record["version"] == 1
    assert [s["name"] for s in record["shards"]] == ["train-00000.arrow", "train-00001.arrow",
                                                     "train-00002.arrow", "val-00000.arrow"]
    assert loaded.split_tokens("train") == sum(info.tokens for info in loaded.split("train"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(format="other"), "format is 'other'"),
    (lambda r: r.update(version=2), "version 2 is not supported"),
    (lambda r: r.pop("vocab_size"), "missing field 'vocab_size'"),
    (lambda r: r.update(dtype="int8"), "dtype 'int8'"),
    (lambda r: r.update(vocab_size=70000), "does not fit dtype uint16"),
    (lambda r: r.update(eot_id=100), "eot_id 100 outside"),
    (lambda r: r["shards"][0].update(name="../x.arrow"), "relative to the manifest"),
    (lambda r: r["shards"][0].update(documents=-1), "'documents' must be >= 0"),
    (lambda r: r["shards"][0].update(tokens="12"), "'tokens' must be int"),
    (lambda r: r["shards"][0].update(sha256="xyz"), "is not 64 lowercase hex"),
    (lambda r: r["shards"].append(dict(r["shards"][0])), "listed twice"),
])
def test_manifest_validation_messages_name_the_file(tmp_path, change, message):
    write_run(tmp_path, splits=(("train", 1),))
    path = tmp_path / MANIFEST_NAME
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    with pytest.raises(ShardFormatError, match=message) as raised:
        Manifest.load(path)
    assert str(path) in str(raised.value)


def test_manifest_missing_and_garbled(tmp_path):
    with pytest.raises(ShardFormatError, match="no shard manifest"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ShardFormatError, match="unreadable manifest"):
        Manifest.load(tmp_path)


def test_verify_accepts_a_good_run(tmp_path):
    shard_format.verify(write_run(tmp_path))


def test_verify_names_a_truncated_shard(tmp_path):
    manifest = write_run(tmp_path)
    victim = tmp_path / shard_format.shard_name("train", 1)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardFormatError, match=f"{victim.name}: sha256") as raised:
        shard_format.verify(manifest)
    assert "truncated" in str(raised.value)
    with pytest.raises(ShardFormatError, match=f"{victim.name}: not a readable Arrow IPC file"):
        shard_format.verify(manifest, check_sha256=False)


def test_verify_names_a_missing_shard(tmp_path):
    manifest = write_run(tmp_path)
    victim = tmp_path / shard_format.shard_name("val", 0)
    victim.unlink()
    with pytest.raises(ShardFormatError, match=f"{victim.name}: shard listed in the manifest is missing"):
        shard_format.verify(manifest)


def test_check_manifest_wants_the_splits_and_the_tokenizer(tmp_path):
    manifest = write_run(tmp_path, splits=(("train", 1),))
    shard_format.check_manifest(manifest, ["train"], "0" * 64)
    with pytest.raises(ShardFormatError, match="manifest.json: no shards in split 'val'"):
        shard_format.verify(manifest, splits=["train", "val"])
    with pytest.raises(ShardFormatError, match="made with tokenizer 000000000000…, but the run's tokenizer.json is "
                                               "111111111111… \\(rerun the shards stage\\)"):
        shard_format.verify(manifest, tokenizer_sha256="1" * 64)
    manifest.shards.clear()
    with pytest.raises(ShardFormatError, match="manifest.json: the manifest lists no shards"):
        shard_format.verify(manifest)


def _rewrite_shard(manifest: Manifest, index: int, documents, dtype="uint16") -> None:
    info = manifest.shards[index]
    stats = shard_format.write_shard(manifest.path_of(info), documents, dtype)
    manifest.shards[index] = ShardInfo.from_stats(info.name, info.split, stats)


def test_verify_finds_missing_eot(tmp_path):
    manifest = write_run(tmp_path)
    documents = make_documents(20, seed=11)
    documents[5] = ("no-eot", np.array([1, 2, 3], dtype=np.uint16))
    _rewrite_shard(manifest, 2, documents)
    with pytest.raises(ShardFormatError, match=r"train-00002.arrow: document 5 \('no-eot'\) does not end"):
        shard_format.verify(manifest)


def test_verify_finds_ids_outside_the_vocabulary(tmp_path):
    manifest = write_run(tmp_path)
    documents = make_documents(20, seed=12)
    documents[3] = ("big", np.array([1, 4000, EOT], dtype=np.uint16))
    _rewrite_shard(manifest, 0, documents)
    with pytest.raises(ShardFormatError, match="train-00000.arrow: token id 4000 is outside"):
        shard_format.verify(manifest)


def test_verify_finds_wrong_totals_and_dtype(tmp_path):
    manifest = write_run(tmp_path)
    info = manifest.shards[1]
    manifest.shards[1] = ShardInfo(info.name, info.split, info.documents + 1, info.tokens, info.sha256)
    with pytest.raises(ShardFormatError, match="train-00001.arrow: holds 20 documents"):
        shard_format.verify(manifest)
    manifest = write_run(tmp_path)
    _rewrite_shard(manifest, 3, make_documents(20, seed=13), dtype="uint32")
    with pytest.raises(ShardFormatError, match="val-00000.arrow: tokens are uint32, the manifest says uint16"):
        shard_format.verify(manifest)


def test_shard_refuses_wrong_schema(tmp_path):
    path = tmp_path / "wrong.arrow"
    table = pa.table({"tokens": pa.array([[1, 2]], type=pa.list_(pa.uint16())), "doc_id": ["a"]})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(ShardFormatError, match="wrong.arrow: column 'tokens' is list<"):
        Shard(path)


def test_split_for_doc_is_stable_and_proportional():
    assert shard_format.split_for_doc("abc", 0.0) == "train"
    assert shard_format.split_for_doc("abc", 1.0) == "val"
    picks = [shard_format.split_for_doc(f"doc-{i}", 0.1) for i in range(20000)]
    assert 0.08 < picks.count("val") / len(picks) < 0.12
    assert picks == [shard_format.split_for_doc(f"doc-{i}", 0.1) for i in range(20000)]
    # pinned values: a change to the hash would silently move documents between splits
    assert [shard_format.split_for_doc(f"doc-{i}", 0.5) for i in range(8)] == PINNED_SPLITS


PINNED_SPLITS = ["train", "val", "train", "train", "val", "val", "train", "val"]


def test_dtype_for_vocab():
    assert shard_format.dtype_for_vocab(50257) == "uint16"
    assert shard_format.dtype_for_vocab(65536) == "uint16"
    assert shard_format.dtype_for_vocab(65537) == "uint32"


def test_failed_rewrite_leaves_the_previous_shard_intact(tmp_path):
    path = tmp_path / "train-00000.arrow"
    good = shard_format.write_shard(path, make_documents(10), "uint16", eot_id=EOT)

    def documents_then_a_bad_one():
        yield from make_documents(10, seed=1)
        yield "bad", np.array([1, 2], dtype=np.uint16)

    with pytest.raises(ValueError, match="does not end with eot"):
        shard_format.write_shard(path, documents_then_a_bad_one(), "uint16", eot_id=EOT)
    assert shard_format.sha256_file(path) == good.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-00000.arrow"]


def _arrow_reference(path, documents, dtype: str) -> bytes:
    """The shard as one record batch built whole in memory and written by Arrow: the bytes chunked writing must give."""
    schema = shard_format.shard_schema(dtype)
    offsets = np.concatenate([[0], np.cumsum([len(t) for _, t in documents])]).astype(np.int64)
    values = pa.array(np.concatenate([t for _, t in documents]).astype(shard_format.DTYPES[dtype]))
    tokens = pa.LargeListArray.from_arrays(pa.array(offsets), values, type=schema.field("tokens").type)
    batch = pa.RecordBatch.from_arrays([tokens, pa.array([d for d, _ in documents], pa.string())], schema=schema)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(batch)
    return path.read_bytes()


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_chunked_writing_gives_the_bytes_of_one_in_memory_record_batch(tmp_path, dtype):
    documents = make_documents(300, seed=11)
    doc_ids = [d for d, _ in documents]
    lengths = np.array([len(t) for _, t in documents])
    chunks = [TokenBatch.from_lengths(np.concatenate([t for _, t in documents[i:i + 37]]), lengths[i:i + 37])
              for i in range(0, 300, 37)]
    stats = shard_format.write_shard_chunks(tmp_path / "c.arrow", doc_ids, lengths, dtype, chunks, eot_id=EOT)
    assert (tmp_path / "c.arrow").read_bytes() == _arrow_reference(tmp_path / "ref.arrow", documents, dtype)
    assert stats.documents == 300 and stats.tokens == int(lengths.sum())
    assert stats.sha256 == shard_format.sha256_file(tmp_path / "ref.arrow")


def test_chunked_writing_refuses_chunks_that_disagree_with_the_announced_lengths(tmp_path):
    documents = make_documents(4, seed=2)
    lengths = np.array([len(t) for _, t in documents])
    wrong = [TokenBatch.from_lengths(np.concatenate([t for _, t in documents]), lengths[::-1])]
    with pytest.raises(ValueError, match="other lengths"):
        shard_format.write_shard_chunks(tmp_path / "w.arrow", [d for d, _ in documents], lengths, "uint16", wrong)
    with pytest.raises(ValueError, match="4 documents announced, 2 given"):
        half = [TokenBatch.from_lengths(np.concatenate([t for _, t in documents[:2]]), lengths[:2])]
        shard_format.write_shard_chunks(tmp_path / "w.arrow", [d for d, _ in documents], lengths, "uint16", half)
    assert list(tmp_path.iterdir()) == []
