"""Unit tests of the dedup library: normalisation, shingles, MinHash (against datasketch), LSH, components, Bloom."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from webtext.dedup import decontam
from webtext.dedup.components import UnionFind, clusters, star_clusters
from webtext.dedup.lsh import Banding, band_keys, bucket_pairs, optimal_bands
from webtext.dedup.minhash import MinHashConfig, MinHasher, estimated_jaccard, jaccard, shingle_hashes, shingles
from webtext.dedup.sketch import DocRef, decode_record, encode_record, sketch_documents
from webtext.dedup.survivors import DocRank, pick_survivor
from webtext.dedup.text import exact_hash, normalized_text, words

VOCAB = [f"w{i}" for i in range(5000)]


def random_text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n_words))


# -- normalisation -------------------------------------------------------------------------------------------------


def test_words_fold_case_punctuation_and_whitespace():
    assert words("Hello,   WORLD!\n\tIt's 2024…") == ["hello", "world", "it", "s", "2024"]
    assert normalized_text("A  b\u00a0C.") == normalized_text("a b c") == "a b c"
    assert words("snake_case") == ["snake", "case"]  # the underscore is punctuation here too


def test_words_keep_non_latin_words_whole():
    assert words("Привет, МИР!") == ["привет", "мир"]
    assert words("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # combining vowel signs stay in the word
    assert words("Straße café") == ["strasse", "café"]  # case folding, NFC composition
    assert words("ＡＢＣ１２３") == ["abc123"]  # NFKC folds full-width forms


def test_unspaced_scripts_give_one_word_per_character():
    assert words("東京は晴れ") == ["東", "京", "は", "晴", "れ"]
    assert words("abc中文def") == ["abc", "中", "文", "def"]
    assert words("ภาษา") == ["ภ", "า", "ษ", "า"]


def test_exact_hash_ignores_case_punctuation_and_spacing_only():
    assert exact_hash(words("The cat sat.")) == exact_hash(words("the  CAT, sat"))
    assert exact_hash(words("The cat sat.")) != exact_hash(words("The cat sat down."))
    assert exact_hash(words("猫が座った")) != exact_hash(words("猫が立った"))


# -- shingles and MinHash --------------------------------------------------------------------------------------------


def test_shingles_are_word_ngrams_and_short_texts_make_one():
    assert shingles(["a", "b", "c", "d"], 3) == [b"a b c", b"b c d"]
    assert shingles(["a", "b"], 5) == [b"a b"]
    assert shingles([], 5) == []
    non_ascii = words("ça va très bien, merci beaucoup à vous")
    assert shingles(non_ascii, 3) == [" ".join(non_ascii[i:i + 3]).encode() for i in range(len(non_ascii) - 2)]


@pytest.mark.parametrize("num_perm,seed", [(128, 1), (64, 7), (256, 42)])
def test_signatures_are_identical_to_datasketch(num_perm, seed):
    rng = random.Random(seed)
    texts = [random_text(rng, n) for n in (1, 3, 5, 6, 40, 500, 6000)]  # 6000 words: more than one chunk
    texts += ["Москва — столица России, крупнейший город страны.", "東京は日本の首都であり最大の都市です"]
    hasher = MinHasher(MinHashConfig(num_perm=num_perm, seed=seed, ngram=5))
    hash_sets = [hasher.shingle_hashes(words(t)) for t in texts]
    ours = hasher.signatures(hash_sets)
    for text, signature in zip(texts, ours):
        reference = MinHash(num_perm=num_perm, seed=seed)
        reference.update_batch(shingles(words(text), 5))
        assert np.array_equal(signature, reference.hashvalues)


def test_empty_shingle_set_gives_datasketchs_empty_signature():
    hasher = MinHasher()
    assert np.array_equal(hasher.signature(shingle_hashes([])), MinHash(num_perm=128, seed=1).hashvalues)


def test_exact_and_estimated_jaccard():
    rng = random.Random(3)
    base = [rng.choice(VOCAB) for _ in range(2000)]
    edited = list(base)
    for i in rng.sample(range(len(edited)), 60):
        edited[i] = "edit"
    grams = lambda ws: {tuple(ws[i:i + 5]) for i in range(len(ws) - 4)}  # noqa: E731
    truth = len(grams(base) & grams(edited)) / len(grams(base) | grams(edited))
    hasher = MinHasher()
    a, b = hasher.shingle_hashes(base), hasher.shingle_hashes(edited)
    assert jaccard(a, b) == pytest.approx(truth, abs=1e-9)
    sigma = (truth * (1 - truth) / 128) ** 0.5
    assert abs(estimated_jaccard(hasher.signature(a), hasher.signature(b)) - truth) < 4 * sigma
    assert jaccard(a, a) == 1.0 and jaccard(a, np.empty(0, np.uint32)) == 0.0


def test_sketch_documents_keeps_rank_and_hashes():
    hasher = MinHasher()
    text = "One two three four five six seven."
    (sketch,) = sketch_documents([("d1", "http://a/", 7, text, words(text))], hasher)
    assert sketch.rank == DocRank("d1", 7, len(text))
    assert sketch.text_hash == exact_hash(words(text))
    assert np.array_equal(sketch.shingle_array(), hasher.shingle_hashes(words(text)))
    assert np.array_equal(sketch.signature_array(), hasher.signature(sketch.shingle_array()))


def test_sketch_record_round_trips_rank_url_signature_and_shingles():
    hasher = MinHasher()
    text = "Ünïcode words, then plain ones: one two three four five six seven eight."
    (sketch,) = sketch_documents([("d1", "https://例え.jp/ä?q=1", 3, text, words(text))], hasher)
    record = decode_record(encode_record(sketch))
    assert record.rank == DocRank("d1", 3, len(text)) and record.url == "https://例え.jp/ä?q=1"
    assert np.array_equal(record.signature, sketch.signature_array())
    assert np.array_equal(record.shingles, sketch.shingle_array())
    ref = DocRef("d1", 3, len(text), "sketch-0", 128, len(encode_record(sketch)))
    assert DocRef(*ref.to_tuple()) == ref and ref.sort_key() == sketch.rank.sort_key()


# -- LSH -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_optimal_bands_match_datasketch_with_equal_weights(threshold):
    expected = _optimal_param(threshold, 128, 0.5, 0.5)
    assert optimal_bands(threshold, 128, false_negative_weight=0.5) == Banding(*expected)


def test_default_banding_favours_recall():
    banding = optimal_bands(0.8, 128)
    assert banding.bands * banding.rows <= 128
    assert banding.collision_probability(0.9) > 0.99  # datasketch's equal weights give 0.93
    assert banding.collision_probability(0.5) < 0.05


def test_band_keys_differ_only_in_the_band_that_changed():
    banding = Banding(4, 8)
    signature = np.arange(32, dtype=np.uint32)
    changed = signature.copy()
    changed[9] = 999  # band 1
    keys, other = band_keys(signature, banding), band_keys(changed, banding)
    assert [k == o for k, o in zip(keys, other)] == [True, False, True, True]
    assert len(set(keys)) == 4


def test_bucket_pairs_all_pairs_then_star():
    members = [DocRank(f"d{i}", score=i, length=10) for i in range(5)]
    ids = lambda pairs: sorted((a.doc_id, b.doc_id) for a, b in pairs)  # noqa: E731
    assert ids(bucket_pairs(members, max_bucket_size=5)) == [
        (f"d{i}", f"d{j}") for i in range(5) for j in range(i + 1, 5)]
    star = ids(bucket_pairs(members, max_bucket_size=4))  # the best (highest score) is d4
    assert star == [(f"d{i}", "d4") for i in range(4)]
    shuffled = list(members)
    random.Random(1).shuffle(shuffled)
    assert ids(bucket_pairs(shuffled, max_bucket_size=4)) == star
    assert all(isinstance(member, DocRank) for pair in bucket_pairs(members, 4) for member in pair)


# -- survivors and components ----------------------------------------------------------------------------------------


def test_survivor_rule_karma_then_length_then_doc_id():
    assert pick_survivor([DocRank("a", 1, 100), DocRank("b", 5, 10)]).doc_id == "b"
    assert pick_survivor([DocRank("a", 5, 10), DocRank("b", 5, 100)]).doc_id == "b"
    assert pick_survivor([DocRank("b", 5, 10), DocRank("a", 5, 10)]).doc_id == "a"


def test_components_join_chains_and_ignore_edge_order():
    ranks = {name: DocRank(name, score, 10) for name, score in [("a", 1), ("b", 9), ("c", 2), ("x", 0), ("y", 0)]}
    edges = [(ranks["a"], ranks["b"]), (ranks["b"], ranks["c"]), (ranks["x"], ranks["y"])]
    expected = {("b", ("a", "b", "c")), ("x", ("x", "y"))}
    for seed in range(5):
        shuffled = list(edges)
        random.Random(seed).shuffle(shuffled)
        found = {(s.doc_id, tuple(m.doc_id for m in members)) for s, members in clusters(shuffled)}
        assert found == expected


def test_star_clusters_verify_every_member_against_its_survivor():
    a, b, c, d = (DocRank(name, score, 10) for name, score in [("a", 9), ("b", 5), ("c", 1), ("d", 0)])
    chain = [(a, b), (b, c), (c, d)]  # a-b-c-d: components would make one cluster around a
    for seed in range(4):
        shuffled = list(chain)
        random.Random(seed).shuffle(shuffled)
        found = {(s.doc_id, tuple(m.doc_id for m in members)) for s, members in star_clusters(shuffled)}
        assert found == {("a", ("a", "b")), ("c", ("c", "d"))}
    hub = [(b, a), (b, c), (b, d)]
    assert [(s.doc_id, [m.doc_id for m in ms]) for s, ms in star_clusters(hub)] == [("a", ["a", "b"])]


def test_union_find_groups():
    union_find = UnionFind()
    for a, b in [("1", "2"), ("3", "4"), ("2", "3"), ("5", "6")]:
        union_find.union(a, b)
    assert sorted(sorted(g) for g in union_find.groups().values()) == [["1", "2", "3", "4"], ["5", "6"]]


# -- decontamination -------------------------------------------------------------------------------------------------


def test_ngram_hashes_share_equal_ngrams():
    a = decontam.ngram_hashes(words("one two three four five six seven eight nine"), 8)
    b = decontam.ngram_hashes(words("zero ONE two three, four five six seven eight"), 8)
    assert len(a) == 2 and len(b) == 2
    assert len(np.intersect1d(a, b)) == 1
    assert len(decontam.ngram_hashes(words("too short"), 8)) == 0


def test_bloom_filter_has_no_false_negatives_and_its_stated_false_positive_rate():
    rng = np.random.default_rng(0)
    items = np.unique(rng.integers(0, 2**63, 20_000, dtype=np.uint64))
    bloom = decontam.BloomFilter(decontam.BloomParams.for_capacity(len(items), 0.01, max_bytes=1 << 20))
    bloom.add(items)
    assert bloom.contains(items).all()
    others = rng.integers(0, 2**63, 200_000, dtype=np.uint64)
    others = others[~np.isin(others, items)]
    measured = bloom.contains(others).mean()
    assert bloom.false_positive_rate() == pytest.approx(0.01, rel=0.1)
    assert 0.007 < measured < 0.013


def test_bloom_filter_works_in_blocks_with_the_same_answers(monkeypatch):
    """Probes are computed BLOCK_ITEMS at a time, so one huge document never builds an items x hashes array."""
    rng = np.random.default_rng(1)
    items, queries = rng.integers(0, 2**63, (2, 5_000), dtype=np.uint64)
    params = decontam.BloomParams.for_capacity(len(items), 0.2, max_bytes=1 << 20)
    whole = decontam.BloomFilter(params)
    whole.add(items)
    whole_answers = whole.contains(queries)
    monkeypatch.setattr(decontam, "BLOCK_ITEMS", 333)
    blocked = decontam.BloomFilter(params)
    blocked.add(items)
    assert np.array_equal(blocked.bits, whole.bits) and blocked.items == whole.items == 5_000
    assert np.array_equal(blocked.contains(queries), whole_answers) and 0 < whole_answers.sum() < 5_000
    assert blocked.contains(items).all() and blocked.contains(queries[:0]).shape == (0,)


def test_bloom_filter_memory_cap_raises_the_stated_rate():
    params = decontam.BloomParams.for_capacity(1_000_000, 1e-6, max_bytes=64 << 10)
    assert params.num_bits == 64 << 13
    assert params.false_positive_rate(1_000_000) > 0.3


def test_eval_examples_jsonl_and_plain_text(tmp_path):
    jsonl = "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["first one", "second one"])) + "\n"
    assert decontam.eval_examples(jsonl.encode(), "x.jsonl") == ["first one", "second one"]
    plain = b"para one\nstill one\n\n \npara two\n"
    assert decontam.eval_examples(plain, "x.txt") == ["para one\nstill one", "para two"]
    with pytest.raises(ValueError, match="text"):
        decontam.eval_examples(b'{"label": 1}\n', "bad.jsonl")
    assert decontam.parse_eval_spec("lambada=/data/l.jsonl") == ("lambada", "/data/l.jsonl")
    with pytest.raises(ValueError):
        decontam.parse_eval_spec("no-equals-sign")


def test_eval_set_overlap_and_exact_share():
    passage = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat"
    eval_set = decontam.build_eval_set("toy", "toy.txt", passage.encode(), 8, 1e-6, 1 << 20)
    assert eval_set.examples == 1 and len(eval_set.ngrams) == len(words(passage)) - 7
    doc = decontam.ngram_hashes(words("Unrelated words first. " + passage[:60] + " and then other things"), 8)
    (overlap,) = decontam.document_overlaps(doc, {"toy": eval_set.bloom})
    assert 0 < overlap.matched < overlap.ngrams
    found, share = decontam.matched_share(overlap.matched_hashes, eval_set.ngrams)
    assert found == overlap.matched and share == pytest.approx(found / len(eval_set.ngrams))


def test_what_crosses_dedups_shuffles_is_small_and_fixed_per_document(tmp_path):
    """A document's exact-duplicate entry is one byte string (DocRef, URL, band keys); LSH band records are fixed
    30-byte rows in work files, and only their file names cross the shuffle."""
    from webtext.pipeline import dedup_stage

    ref = DocRef("doc-ü1", 7, 3000, dedup_stage.sketch_file_name(0xABCDEF0123456789), 1 << 33, 4321)
    keys = bytes(range(140))
    entry = dedup_stage.pack_doc_entry(ref, "https://例え.jp/a", keys)
    assert isinstance(entry, bytes) and len(entry) <= 40 + len("doc-ü1".encode()) + 20 + len(keys)
    assert dedup_stage.unpack_doc_entry(entry) == (ref, "https://例え.jp/a", keys)
    assert dedup_stage.BAND_RECORD.itemsize == 30
    packer = dedup_stage.PackBands(partitions=3, work=str(tmp_path))
    packer.start_bundle()
    assert list(packer.process((ref.to_tuple(), keys[:30]))) == []
    crossing = [value.value for value in packer.finish_bundle()]
    assert all(isinstance(p, int) and isinstance(name, str) for p, name in crossing)
    records = np.concatenate([np.frombuffer((tmp_path / name).read_bytes(), dedup_stage.BAND_RECORD)
                              for _, name in crossing])
    assert len(records) == 3 and set(records["offset"].tolist()) == {1 << 33}
    assert set(records["size"].tolist()) == {4321}
    assert {dedup_stage.sketch_file_name(f) for f in records["file"].tolist()} == {ref.sketch_file}
