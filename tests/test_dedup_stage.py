"""End-to-end tests of `webtext dedup RUN`: real Parquet in, survivors, clusters, rejects and contamination out."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import tokenizer_corpus
from webtext.dedup.text import words
from webtext.pipeline import layout, sinks

LATIN = [f"word{i}" for i in range(3000)]
CYRILLIC = [f"слово{i}" for i in range(3000)]
HAN = [chr(0x4E00 + i) for i in range(3000)]

DOCS_SCHEMA = pa.schema([
    ("doc_id", pa.string()),
    ("url", pa.string()),
    ("domain", pa.string()),
    ("title", pa.string()),
    ("text", pa.string()),
    ("score", pa.int64()),
    ("created_utc", pa.int64()),
    ("subreddits", pa.list_(pa.string())),
])


def text_of(rng: random.Random, vocab: list[str], n: int, sep: str = " ") -> str:
    return sep.join(rng.choice(vocab) for _ in range(n))


def edit(text: str, positions: list[int], sep: str = " ") -> str:
    """Replaces the words at `positions` (a deterministic, small change)."""
    tokens = text.split(sep) if sep else list(text)
    for p in positions:
        tokens[p] = f"edited{p}" if sep else "丁"
    return (sep or "").join(tokens)


def doc(doc_id: str, text: str, score: int = 1) -> dict:
    return {"doc_id": doc_id, "url": f"https://example.org/{doc_id}", "domain": "example.org", "title": doc_id.upper(),
            "text": text, "score": score, "created_utc": 1_500_000_000, "subreddits": ["test", doc_id[:1]]}


def planted_corpus() -> tuple[list[dict], dict]:
    """Documents with known duplicates, and what the stage must make of them."""
    rng = random.Random(1234)
    docs = [doc(f"u{i}", text_of(rng, LATIN, 200), score=i) for i in range(10)]
    exact = text_of(rng, LATIN, 150)
    docs += [doc("e0", exact, score=5), doc("e1", exact.upper() + " !!!", score=9), doc("e2", exact.replace(" ", "\n"), 9)]
    near = text_of(rng, LATIN, 200)
    n1 = edit(near, [20, 120])
    docs += [doc("n0", near, score=1), doc("n1", n1, score=3), doc("n2", edit(near, [60, 170]), score=2),
             doc("n3", edit(n1, [90]), score=0), doc("n2x", edit(near, [60, 170]).upper(), score=0)]
    below = text_of(rng, LATIN, 200)
    docs += [doc("m0", below, score=1), doc("m1", edit(below, list(range(0, 200, 12))), score=1)]  # Jaccard ~0.4
    docs += [doc("s0", "hello world", 1), doc("s1", "Hello, World!", 1), doc("s2", "hello there", 1),
             doc("nowords", "— … !!! ???", 1), doc("nowords2", "...", 1)]
    russian = text_of(rng, CYRILLIC, 200)
    docs += [doc("r0", russian, score=2), doc("r1", edit(russian, [100]), score=1)]
    chinese = text_of(rng, HAN, 400, sep="")
    docs += [doc("c0", chinese, score=1), doc("c1", edit(chinese, [50, 300], sep=""), score=1)]
    expected = {
        "rejects": {"e0": ("exact-duplicate", "e1"), "e2": ("exact-duplicate", "e1"),
                    "n0": ("near-duplicate", "n1"), "n2": ("near-duplicate", "n1"), "n3": ("near-duplicate", "n1"),
                    "n2x": ("exact-duplicate", "n1"), "s0": ("exact-duplicate", "s1"),
                    "r1": ("near-duplicate", "r0"), "c1": ("near-duplicate", "c0")},
        "clusters": {"e1": {"e0", "e1", "e2"}, "n1": {"n0", "n1", "n2", "n3", "n2x"}, "s1": {"s0", "s1"},
                     "r0": {"r0", "r1"}, "c0": {"c0", "c1"}},
    }
    return docs, expected


def write_docs(run: Path, rows: list[dict], files: int = 1, schema: pa.Schema = DOCS_SCHEMA) -> None:
    tokenizer_corpus.place_docs(run, rows, files=files, schema=schema)


def read_rows(folder: Path, prefix: str) -> list[dict]:
    rows = []
    for path in sorted(folder.glob(f"{prefix}-*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def outputs(run: Path) -> dict:
    dedup = Path(run, layout.DEDUP)
    return {"docs": read_rows(dedup, "docs"), "clusters": read_rows(dedup, "clusters"),
            "rejects": read_rows(Path(run, layout.REJECTS, "dedup"), "rejects")}


def file_contents(run: Path) -> dict:
    """Every output file's rows, by file name: equal when the stage wrote the same files."""
    found = {}
    for folder in (Path(run, layout.DEDUP), Path(run, layout.REJECTS, "dedup")):
        for path in sorted(folder.glob("*.parquet")):
            found[path.relative_to(run).as_posix()] = pq.read_table(path).to_pylist()
    return found


def stats_of(run: Path, name: str) -> dict:
    return json.loads(Path(run, layout.STATS, f"{name}.json").read_text())


def first_docs_schema(run: Path) -> pa.Schema:
    return pq.read_schema(sorted(run.glob(layout.DEDUP_DOCS_GLOB))[0]).remove_metadata()


def test_planted_duplicates_are_found_with_the_right_survivors(tmp_path, webtext_cli, beam_args):
    rows, expected = planted_corpus()
    write_docs(tmp_path, rows)
    assert webtext_cli("dedup", tmp_path, *beam_args) == 0
    out = outputs(tmp_path)

    rejected = {r["item_id"]: r for r in out["rejects"]}
    assert {k: r["reason"] for k, r in rejected.items()} == {k: v[0] for k, v in expected["rejects"].items()}
    for doc_id, (_, survivor) in expected["rejects"].items():
        assert rejected[doc_id]["detail"].startswith(f"survivor {survivor}"), rejected[doc_id]
        assert rejected[doc_id]["url"] == f"https://example.org/{doc_id}"
    assert rejected["n2x"]["detail"] == "survivor n1 (same text as n2)"

    survivors = {r["doc_id"] for r in out["docs"]}
    assert survivors == {r["doc_id"] for r in rows} - set(expected["rejects"])
    assert {"m0", "m1", "s2", "nowords", "nowords2"} <= survivors  # below threshold, different, or without words
    assert len(rows) == len(out["docs"]) + len(out["rejects"])  # accounting: input = survivors + rejects

    by_cluster: dict[str, set] = {}
    for row in out["clusters"]:
        by_cluster.setdefault(row["cluster_id"], set()).add(row["doc_id"])
        assert row["kept"] == (row["doc_id"] == row["cluster_id"])
        assert row["reason"] == ("" if row["kept"] else expected["rejects"][row["doc_id"]][0])
        assert 0.0 <= row["jaccard"] <= 1.0
    assert by_cluster == expected["clusters"]
    jaccard = {row["doc_id"]: row["jaccard"] for row in out["clusters"]}
    assert jaccard["e0"] == jaccard["e1"] == 1.0 and jaccard["n1"] == 1.0
    assert 0.7 < jaccard["n3"] < 1.0 and jaccard["n2x"] == jaccard["n2"]

    # same columns and values as the input
    assert first_docs_schema(tmp_path) == DOCS_SCHEMA
    by_id = {r["doc_id"]: r for r in rows}
    assert all(row == by_id[row["doc_id"]] for row in out["docs"])

    stats = stats_of(tmp_path, "dedup")["counters"]
    assert stats["docs.read"] == len(rows)
    assert stats["docs.written"] + stats["reject.exact-duplicate"] + stats["reject.near-duplicate"] == len(rows)
    assert stats["clusters.near"] == 3 and stats["clusters.exact"] == 3
    pairs = read_rows(Path(tmp_path, layout.DEDUP), "pairs")
    assert pairs and all(p["doc_id_a"] < p["doc_id_b"] and p["jaccard"] >= 0.8 for p in pairs)
    assert {("n0", "n1"), ("r0", "r1"), ("c0", "c1")} <= {(p["doc_id_a"], p["doc_id_b"]) for p in pairs}
    lsh = json.loads(Path(tmp_path, layout.DEDUP, "lsh.json").read_text())
    assert lsh["bands"] * lsh["rows"] <= 128 and lsh["threshold"] == 0.8
    contamination = stats_of(tmp_path, "contamination")
    assert contamination["eval_sets"] == {}
    assert not Path(tmp_path, layout.DEDUP_WORK).exists()


@pytest.mark.slow
def test_result_does_not_depend_on_input_order_or_worker_count(tmp_path, webtext_cli, beam_args):
    rows, _ = planted_corpus()
    write_docs(tmp_path / "a", rows, files=1)
    shuffled = list(rows)
    random.Random(7).shuffle(shuffled)
    write_docs(tmp_path / "b", shuffled, files=3)
    write_docs(tmp_path / "c", list(reversed(shuffled)), files=2)
    assert webtext_cli("dedup", tmp_path / "a", *beam_args) == 0
    assert webtext_cli("dedup", tmp_path / "b", "--direct_num_workers=2") == 0
    assert webtext_cli("dedup", tmp_path / "c", "--direct_num_workers=1") == 0
    first = file_contents(tmp_path / "a")
    assert any(first[name] for name in first if name.startswith(f"{layout.DEDUP}/clusters"))
    assert file_contents(tmp_path / "b") == first
    assert file_contents(tmp_path / "c") == first


def test_corpus_without_duplicates_keeps_everything(tmp_path, webtext_cli, beam_args):
    rng = random.Random(5)
    rows = [doc(f"d{i:02d}", text_of(rng, LATIN, 120)) for i in range(40)]
    write_docs(tmp_path, rows)
    assert webtext_cli("dedup", tmp_path, "--dedup-shards", "3", *beam_args) == 0
    out = outputs(tmp_path)
    assert sorted(r["doc_id"] for r in out["docs"]) == [r["doc_id"] for r in rows]
    assert out["clusters"] == [] and out["rejects"] == []
    names = sorted(path.name for path in tmp_path.glob(layout.DEDUP_DOCS_GLOB))
    assert names == [sinks.shard_name("docs", i, 3) for i in range(3)]


def test_empty_corpus(tmp_path, webtext_cli, beam_args):
    write_docs(tmp_path, [])
    eval_file = tmp_path / "eval.txt"
    eval_file.write_text("a passage of more than eight words for the test set\n")
    assert webtext_cli("dedup", tmp_path, "--eval-set", f"toy={eval_file}", *beam_args) == 0
    out = outputs(tmp_path)
    assert out == {"docs": [], "clusters": [], "rejects": []}
    assert len(list(tmp_path.glob(layout.DEDUP_DOCS_GLOB))) == 1  # --dedup-shards 0: one per 256 MiB of input
    report = stats_of(tmp_path, "contamination")
    assert report["eval_sets"]["toy"]["share_in_corpus"] == 0.0
    assert report["eval_sets"]["toy"]["documents_with_overlap"] == 0


def test_minimal_columns_from_elsewhere_and_threshold_flag(tmp_path, webtext_cli, beam_args):
    schema = pa.schema([("doc_id", pa.string()), ("url", pa.string()), ("domain", pa.string()),
                        ("text", pa.string()), ("score", pa.int64())])
    rng = random.Random(9)
    base = text_of(rng, LATIN, 200)
    rows = [{"doc_id": "a", "url": "u:a", "domain": "d", "text": base, "score": 2},
            {"doc_id": "b", "url": "u:b", "domain": "d", "text": edit(base, list(range(0, 200, 25))), "score": 1},
            {"doc_id": "c", "url": "u:c", "domain": "d", "text": text_of(rng, LATIN, 200), "score": 1}]
    elsewhere = tmp_path / "corpus"
    elsewhere.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), elsewhere / "part-0.parquet")
    run = tmp_path / "run"
    assert webtext_cli("dedup", run, "--input-docs", str(elsewhere / "*.parquet"), *beam_args) == 0
    assert len(outputs(run)["docs"]) == 3  # a and b share about 0.66 of their shingles: below 0.8
    assert webtext_cli("dedup", run, "--input-docs", str(elsewhere / "*.parquet"), "--threshold", "0.6",
                       *beam_args) == 0
    out = outputs(run)
    assert sorted(r["doc_id"] for r in out["docs"]) == ["a", "c"]
    assert [(r["item_id"], r["reason"]) for r in out["rejects"]] == [("b", "near-duplicate")]
    assert first_docs_schema(run) == schema


def reference_survivors(rows: list[dict], threshold: float = 0.8) -> dict[str, str]:
    """The dedup decisions computed in memory, without Beam, LSH or files: exact groups by normalised text, then every
    pair of exact survivors compared by exact shingle Jaccard, clustered into components. doc_id -> its survivor."""
    from webtext.dedup.components import clusters
    from webtext.dedup.minhash import MinHasher, jaccard
    from webtext.dedup.survivors import DocRank, pick_survivor
    from webtext.dedup.text import exact_hash

    hasher = MinHasher()
    ranks = {r["doc_id"]: DocRank(r["doc_id"], r["score"], len(r["text"])) for r in rows}
    groups: dict[str, list[str]] = {}
    for row in rows:
        if words(row["text"]):
            groups.setdefault(exact_hash(words(row["text"])), []).append(row["doc_id"])
    survivor_of = {r["doc_id"]: r["doc_id"] for r in rows}
    exact_survivors = []
    for members in groups.values():
        best = pick_survivor([ranks[m] for m in members]).doc_id
        exact_survivors.append(best)
        survivor_of.update({m: best for m in members})
    shingles = {d: hasher.shingle_hashes(words(next(r["text"] for r in rows if r["doc_id"] == d)))
                for d in exact_survivors}
    edges = [(ranks[a], ranks[b]) for i, a in enumerate(exact_survivors) for b in exact_survivors[i + 1:]
             if jaccard(shingles[a], shingles[b]) >= threshold]
    near_of = {m.doc_id: survivor.doc_id for survivor, members in clusters(edges) for m in members}
    return {d: near_of.get(s, s) for d, s in survivor_of.items()}


@pytest.mark.slow
def test_survivors_equal_an_in_memory_reference(tmp_path, webtext_cli):
    """Payloads stay in files (sketch records, survivor work files) and only small records are shuffled; the decisions
    and the surviving rows must still be exactly those of a plain in-memory computation."""
    rows, _ = planted_corpus()
    rng = random.Random(99)
    for i in range(30):
        source = rng.choice(rows)
        if i % 3 == 0:
            rows.append(doc(f"x{i}", source["text"].upper(), score=rng.randint(0, 20)))
        elif source["text"].count(" ") > 100:
            rows.append(doc(f"x{i}", edit(source["text"], [rng.randrange(100) for _ in range(2)]), rng.randint(0, 20)))
        rows.append(doc(f"z{i}", text_of(rng, LATIN, rng.randint(50, 250)), score=rng.randint(0, 20)))
    write_docs(tmp_path, rows, files=3)
    assert webtext_cli("dedup", tmp_path, "--dedup-shards", "2", "--direct_num_workers=2") == 0
    out = outputs(tmp_path)
    expected = reference_survivors(rows)
    kept = {d for d, s in expected.items() if d == s}
    assert len(kept) < len(rows) - 15
    assert sorted(r["doc_id"] for r in out["docs"]) == sorted(kept)
    assert {r["item_id"]: r["detail"].split()[1] for r in out["rejects"]} == {
        d: s for d, s in expected.items() if d != s}
    by_id = {r["doc_id"]: r for r in rows}
    assert all(r == by_id[r["doc_id"]] for r in out["docs"])
    for path in sorted(tmp_path.glob(layout.DEDUP_DOCS_GLOB)):
        ids = pq.read_table(path, columns=["doc_id"]).column("doc_id").to_pylist()
        assert ids == sorted(ids) and all(sinks.shard_name("docs", sinks.stable_shard(d, 2), 2) == path.name for d in ids)
    assert not Path(tmp_path, layout.DEDUP_WORK).exists()


@pytest.mark.parametrize("clustering,removed", [("components", {"b", "c"}), ("star", {"b"})])
def test_chains_make_one_component_but_separate_stars(tmp_path, webtext_cli, beam_args, clustering, removed):
    rng = random.Random(21)
    a = text_of(rng, LATIN, 200)
    b = edit(a, [30, 100, 170])  # Jaccard(a, b) = Jaccard(b, c) ~ 0.86, Jaccard(a, c) ~ 0.73
    c = edit(b, [60, 130, 190])
    write_docs(tmp_path, [doc("a", a, 9), doc("b", b, 5), doc("c", c, 1), doc("z", text_of(rng, LATIN, 200))])
    assert webtext_cli("dedup", tmp_path, "--clustering", clustering, *beam_args) == 0
    out = outputs(tmp_path)
    assert {r["item_id"] for r in out["rejects"]} == removed
    assert all(r["detail"].startswith("survivor a ") for r in out["rejects"])
    assert {(r["cluster_id"], r["doc_id"]) for r in out["clusters"]} == {("a", "a")} | {("a", d) for d in removed}


def eval_passages() -> list[str]:
    rng = random.Random(77)
    return [text_of(rng, [f"eval{i}" for i in range(400)] + LATIN[:400], 60) for _ in range(3)]


def test_contamination_is_measured_then_removed(tmp_path, webtext_cli, beam_args):
    passages = eval_passages()
    eval_file = tmp_path / "toy.jsonl"
    eval_file.write_text("".join(json.dumps({"text": p}) + "\n" for p in passages))
    rng = random.Random(3)
    rows = [doc(f"d{i}", text_of(rng, LATIN, 150)) for i in range(6)]
    rows.append(doc("quote", "Someone wrote: " + passages[0] + " " + text_of(rng, LATIN, 40)))  # mostly the passage
    rows.append(doc("mention", text_of(rng, LATIN, 300) + " " + " ".join(passages[1].split()[:12])))  # a little
    write_docs(tmp_path, rows)
    assert webtext_cli("dedup", tmp_path, "--eval-set", f"toy={eval_file}", *beam_args) == 0
    report = stats_of(tmp_path, "contamination")["eval_sets"]["toy"]
    total = sum(len(words(p)) - 7 for p in passages)
    assert report["ngrams"] == total
    assert report["ngrams_in_corpus"] == (60 - 7) + (12 - 7)
    assert report["share_in_corpus"] == pytest.approx(report["ngrams_in_corpus"] / total)
    assert report["documents_with_overlap"] == 2 and report["documents_over_threshold"] == 1
    assert [d["doc_id"] for d in report["top_documents"]] == ["quote", "mention"]
    assert report["bloom_false_positive_rate"] < 1e-5
    assert len(outputs(tmp_path)["docs"]) == len(rows)  # measured only
    contamination_rows = read_rows(Path(tmp_path, layout.DEDUP), "contamination")
    assert sorted(r["doc_id"] for r in contamination_rows) == ["mention", "quote"]

    assert webtext_cli("dedup", tmp_path, "--eval-set", f"toy={eval_file}", "--decontaminate", *beam_args) == 0
    out = outputs(tmp_path)
    assert [(r["item_id"], r["reason"]) for r in out["rejects"]] == [("quote", "contaminated")]
    assert out["rejects"][0]["detail"].startswith("toy: 53 of ")
    report = stats_of(tmp_path, "contamination")["eval_sets"]["toy"]
    assert report["documents_dropped"] == 1 and report["ngrams_after_decontamination"] == 12 - 7
    assert len(out["docs"]) + len(out["rejects"]) == len(rows)


@pytest.mark.realdata
def test_wikitext_paragraphs_are_found_in_real_text(tmp_path, webtext_cli, beam_args, shared_data):
    wikitext = shared_data / "eval" / "wikitext-2_test.txt"
    paragraphs = [p for p in wikitext.read_text(encoding="utf-8").split("\n \n") if len(p.split()) > 80]
    articles = json.loads((shared_data / "extraction-benchmark" / "ground-truth.json").read_text(encoding="utf-8"))
    bodies = [v["articleBody"] for _, v in sorted(articles.items()) if len(v["articleBody"]) > 2000][:12]
    rows = [doc(f"news{i:02d}", body) for i, body in enumerate(bodies)]
    rows.append(doc("copied", bodies[0][:500] + "\n" + paragraphs[3]))  # a web page that pasted a wiki paragraph
    rows.append(doc("news00-again", bodies[0].replace("\n", " \n "), score=0))  # the same article, less karma
    write_docs(tmp_path, rows)
    assert webtext_cli("dedup", tmp_path, "--eval-set", f"wikitext={wikitext}", "--decontaminate", *beam_args) == 0
    out = outputs(tmp_path)
    assert {(r["item_id"], r["reason"]) for r in out["rejects"]} == {("copied", "contaminated"),
                                                                     ("news00-again", "exact-duplicate")}
    report = stats_of(tmp_path, "contamination")["eval_sets"]["wikitext"]
    assert report["documents_dropped"] == 1 and report["top_documents"][0]["doc_id"] == "copied"
    assert 0 < report["share_in_corpus"] < 0.01 and report["ngrams_after_decontamination"] < report["ngrams_in_corpus"]


@pytest.mark.parametrize("args,message", [
    ((), "the crawl stage has not finished"),
    (("--bands", "20", "--rows", "10"), "needs 200 MinHash values"),
    (("--decontaminate",), "needs at least one --eval-set"),
    (("--eval-set", "nofile"), "NAME=PATH"),
])
def test_user_errors_are_clear(tmp_path, webtext_cli, beam_args, capsys, args, message):
    if args:
        write_docs(tmp_path, [doc("a", "some text here")])
    assert webtext_cli("dedup", tmp_path, *args, *beam_args) == 2
    assert message in capsys.readouterr().err


def test_missing_column_is_a_clear_error(tmp_path, webtext_cli, beam_args, capsys):
    name = sinks.shard_name("docs", 0, 1)
    Path(tmp_path, layout.DOCS).mkdir()
    Path(tmp_path, layout.PLACED_DOCS).touch()
    pq.write_table(pa.table({"doc_id": ["a"], "text": ["x"]}), Path(tmp_path, layout.DOCS, name))
    assert webtext_cli("dedup", tmp_path, *beam_args) == 2
    assert f"{name}: has no column 'url'" in capsys.readouterr().err


def test_repeated_doc_ids_fail_the_stage(tmp_path, webtext_cli, beam_args, capsys):
    write_docs(tmp_path, [doc("a", "one text of some words"), doc("a", "another text entirely here")])
    assert webtext_cli("dedup", tmp_path, *beam_args) == 2
    assert "doc_id must be unique" in capsys.readouterr().err
    assert not Path(tmp_path, layout.DEDUP, layout.SUCCESS).exists()


def test_unreadable_parquet_is_a_clear_error(tmp_path, webtext_cli, beam_args, capsys):
    Path(tmp_path, layout.DOCS).mkdir()
    Path(tmp_path, layout.PLACED_DOCS).touch()
    Path(tmp_path, layout.DOCS, sinks.shard_name("docs", 0, 1)).write_bytes(b"not parquet at all")
    assert webtext_cli("dedup", tmp_path, *beam_args) == 2
    assert "not a readable Parquet file" in capsys.readouterr().err


def test_bad_options_are_clear_errors_and_shards_follow_the_input_size(tmp_path, webtext_cli, beam_args, capsys):
    from webtext.pipeline.dedup_stage import AUTO_SHARD_BYTES, auto_shards
    from webtext.pipeline.storage import FileEntry

    assert auto_shards([FileEntry("a", 10)]) == 1
    assert auto_shards([FileEntry("a", AUTO_SHARD_BYTES), FileEntry("b", AUTO_SHARD_BYTES + 1)]) == 3
    write_docs(tmp_path, [doc("a", "some text here")])
    assert webtext_cli("dedup", tmp_path, "--threshold", "1.0", *beam_args) == 2
    assert "--threshold" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # the flag's range, checked as the command line is parsed
        webtext_cli("dedup", tmp_path, "--false-negative-weight", "1.5", *beam_args)
    assert refused.value.code == 2 and "--false-negative-weight" in capsys.readouterr().err
