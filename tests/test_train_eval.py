"""`webtext eval` as the GPT-2 paper measured: sliding-window perplexity and LAMBADA against an independent
transformers computation, LAMBADA and CBT files whose answers are known by construction, the suite and its table."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from tests.train_support import synthetic_documents, train_tokenizer
from webtext.train import checkpoint as ckpt
from webtext.train.cli import main
from webtext.train.eval_tasks import sliding_windows
from webtext.train.hf import export_hf
from webtext.train.model import GPT, GPTConfig
from webtext.train.shard_format import RUN_CONTAMINATION

CYCLE = "apple brick cloud dune ember frost grove harbor island jungle kettle lantern".split()
BLOCK = 32


def cycle_words(start: int, count: int) -> list[str]:
    return [CYCLE[(start + i) % len(CYCLE)] for i in range(count)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread runs them faster than several contending ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(one_thread, tmp_path_factory) -> Path:
    """A tiny GPT-2 of ours trained until it continues the word cycle without fail, as a checkpoint directory."""
    root = tmp_path_factory.mktemp("eval-model")
    cycle_text = " ".join(cycle_words(0, 600))
    tokenizer = train_tokenizer([cycle_text] * 5 + synthetic_documents(200, 3), root / "tokenizer.json")
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=BLOCK, vocab_size=tokenizer.get_vocab_size()))
    stream = torch.tensor(tokenizer.encode(cycle_text).ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(100):
        starts = torch.randint(0, len(stream) - BLOCK - 1, (16,), generator=generator)
        rows = torch.stack([stream[s:s + BLOCK + 1] for s in starts.tolist()])
        _, loss = model(rows[:, :-1], rows[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05, loss.item()
    checkpoint = ckpt.save_checkpoint(root, 100, model, {"eot_id": tokenizer.token_to_id("<|endoftext|>"),
                                                         "run": str(root / "run")})
    shutil.copyfile(root / "tokenizer.json", checkpoint / "tokenizer.json")
    return checkpoint


@pytest.fixture(scope="module")
def hf_dir(model_dir, tmp_path_factory) -> Path:
    return export_hf(model_dir, tmp_path_factory.mktemp("eval-hf") / "hf")


def run_eval(tmp_path: Path, *argv: str) -> dict:
    out = tmp_path / "result.json"
    assert main(["eval", *map(str, argv), "--device", "cpu", "--micro-batch", "3", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def reference_ids(model_dir: Path, text: str) -> list[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    return [tokenizer.token_to_id("<|endoftext|>")] + tokenizer.encode(text).ids


@torch.no_grad()
def reference_perplexity_nll(hf_model, ids: list[int], max_length: int, stride: int) -> tuple[float, int]:
    """The sliding-window loop of the transformers perplexity guide, summing each window's target log-losses."""
    sequence = torch.tensor([ids])
    nll, count, previous_end = 0.0, 0, 0
    for begin in range(0, sequence.size(1), stride):
        end = min(begin + max_length, sequence.size(1))
        target_length = end - previous_end
        input_ids = sequence[:, begin:end]
        labels = input_ids.clone()
        labels[:, :-target_length] = -100
        logits, targets = hf_model(input_ids).logits[0, :-1], labels[0, 1:]
        keep = targets != -100
        nll -= torch.log_softmax(logits[keep].double(), -1).gather(1, targets[keep][:, None]).sum().item()
        count += int(keep.sum())
        previous_end = end
        if end == sequence.size(1):
            break
    return nll, count


def mixed_text() -> str:
    """Cycle runs and pseudo-English: some tokens easy, some hard, so the losses are not all near zero."""
    parts = [" ".join(cycle_words(i, 9)) + ". " + doc for i, doc in enumerate(synthetic_documents(6, 11))]
    return "\n".join(parts) + "\n"


def test_sliding_windows_predict_every_token_once_with_long_context():
    for n_tokens, block, stride in [(2, 8, 4), (9, 8, 4), (100, 8, 3), (8, 8, 7), (50, 16, 15), (1000, 64, 32)]:
        covered = []
        for begin, end, scored in sliding_windows(n_tokens, block, stride):
            assert end - begin <= block and 1 <= scored and end - scored - begin >= min(begin + 1, block - stride)
            covered += range(end - scored, end)
        assert covered == list(range(1, n_tokens))
    with pytest.raises(ValueError, match="--stride"):
        sliding_windows(100, 8, 8)


def test_perplexity_equals_transformers_on_the_same_windows(model_dir, hf_dir, tmp_path):
    import transformers

    data = tmp_path / "mixed.txt"
    data.write_text(mixed_text(), encoding="utf-8")
    result = run_eval(tmp_path, model_dir, "--task", "ppl", "--data", data, "--stride", "12")
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(str(hf_dir)).eval()
    nll, count = reference_perplexity_nll(hf_model, reference_ids(model_dir, mixed_text()), BLOCK, 12)
    assert result["tokens"] == count and result["stride"] == 12
    assert result["loss"] * result["tokens"] == pytest.approx(nll, rel=1e-4)
    assert result["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-4) and result["ppl"] > 1.5
    words = len(mixed_text().split())
    assert result["words"] == words and result["word_ppl"] == pytest.approx(math.exp(nll / words), rel=1e-4)
    # bits per byte over the same file, and the default stride: half the context
    bpb = run_eval(tmp_path, model_dir, "--task", "bpb", "--data", data)
    nll_half, _ = reference_perplexity_nll(hf_model, reference_ids(model_dir, mixed_text()), BLOCK, BLOCK // 2)
    assert bpb["stride"] == BLOCK // 2 and bpb["bytes"] == len(mixed_text().encode())
    assert bpb["bpb"] == pytest.approx(nll_half / math.log(2) / len(mixed_text().encode()), rel=1e-4)


def test_a_hugging_face_directory_scores_like_the_checkpoint(model_dir, hf_dir, tmp_path):
    data = tmp_path / "mixed.txt"
    data.write_text(mixed_text(), encoding="utf-8")
    ours = run_eval(tmp_path, model_dir, "--task", "ppl", "--data", data)
    from_hf = run_eval(tmp_path, hf_dir, "--task", "ppl", "--data", data)
    assert from_hf["loss"] == pytest.approx(ours["loss"], rel=1e-5) and from_hf["tokens"] == ours["tokens"]
    # GPT-2's own tokenizer files: vocab.json + merges.txt instead of tokenizer.json
    from tokenizers import Tokenizer

    bare = tmp_path / "bare-hf"
    shutil.copytree(hf_dir, bare)
    (bare / "tokenizer.json").unlink()
    Tokenizer.from_file(str(hf_dir / "tokenizer.json")).model.save(str(bare))
    assert {"vocab.json", "merges.txt"} <= {p.name for p in bare.iterdir()}
    assert run_eval(tmp_path, bare, "--task", "ppl", "--data", data)["loss"] == pytest.approx(ours["loss"], rel=1e-5)


def lambada_lines(correct: int, wrong: int) -> list[str]:
    """Cycle passages ending in the cycle's next word (right by construction) or in another word (wrong)."""
    lines = []
    for i in range(correct + wrong):
        words = cycle_words(i, 14 + i % 5)
        if i >= correct:
            words[-1] = CYCLE[(CYCLE.index(words[-2]) + 5) % len(CYCLE)]
        lines.append(json.dumps({"text": " ".join(words)}))
    return lines


def test_lambada_accuracy_is_known_by_construction_and_ppl_matches_transformers(model_dir, hf_dir, tmp_path):
    import transformers

    data = tmp_path / "lambada_test.jsonl"
    data.write_text("\n".join(lambada_lines(correct=5, wrong=3)) + "\n", encoding="utf-8")
    result = run_eval(tmp_path, model_dir, "--task", "lambada", "--data", data)
    assert result["examples"] == 8 and result["accuracy"] == pytest.approx(5 / 8)
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(str(hf_dir)).eval()
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    nll, count = 0.0, 0
    for line in data.read_text().splitlines():
        context, _, word = json.loads(line)["text"].rpartition(" ")
        context_ids = [tokenizer.token_to_id("<|endoftext|>")] + tokenizer.encode(context).ids
        word_ids = tokenizer.encode(" " + word).ids
        with torch.no_grad():
            logits = hf_model(torch.tensor([context_ids + word_ids])).logits[0, len(context_ids) - 1:-1].double()
        nll -= torch.log_softmax(logits, -1).gather(1, torch.tensor(word_ids)[:, None]).sum().item()
        count += len(word_ids)
    assert result["tokens"] == count
    assert result["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-4) and result["ppl"] > 1.5


def cbt_question(start: int, answer_offset: int) -> list[str]:
    """20 cycle sentences, then a query whose blank is the cycle's next word; the labelled answer is the word
    `answer_offset` places on (0: the right one)."""
    lines = [f"{n} {' '.join(cycle_words(start + n, 6))} ." for n in range(1, 21)]
    query = cycle_words(start + 3, 7)
    blank = query[3]
    labelled = CYCLE[(CYCLE.index(blank) + answer_offset) % len(CYCLE)]
    candidates = [w for w in CYCLE if w not in (blank, labelled)][:8] + [blank] + ([labelled] if labelled != blank else [])
    candidates = (candidates + [w for w in CYCLE if w not in candidates])[:10]
    query[3] = "XXXXX"
    return lines + [f"21 {' '.join(query)} .\t{labelled}\t\t{'|'.join(sorted(candidates))}", ""]


def test_cbt_chooses_the_candidate_the_model_completes(model_dir, tmp_path):
    data = tmp_path / "cbtest_CN_test_2500ex.txt"
    questions = cbt_question(0, 0) + cbt_question(4, 0) + cbt_question(7, 0) + cbt_question(2, 6)
    data.write_text("\n".join(questions), encoding="utf-8")
    result = run_eval(tmp_path, model_dir, "--task", "cbt", "--data", data)
    assert result["examples"] == 4 and result["accuracy"] == pytest.approx(3 / 4)  # the last label is wrong


@pytest.mark.realdata
def test_wikitext_detokenizer_is_invertible_on_the_real_test_set(shared_data):
    from webtext.train.detokenize import DETOKENIZERS, original_words

    original = (shared_data / "eval" / "wikitext-2_test.txt").read_text(encoding="utf-8")
    wikitext = DETOKENIZERS["wikitext"]
    natural = wikitext.detokenize(original)
    assert wikitext.retokenize(natural) == original
    assert original_words(original) == 241211  # the file's whitespace-separated tokens (wc -w)
    assert natural.count(" @-@ ") < original.count(" @-@ ") / 100 and natural.count(" , ") < original.count(" , ") / 50
    assert "a guest-starring role" in natural and 'as "Craig" in the episode "Teddy\'s Story"' in natural
    assert "= = Career = =" in original and "== Career ==" in natural
    assert "1,000" in natural and "No. 1" in natural  # numbers joined, abbreviations kept


def test_ptb_detokenizer_joins_clitics_and_inverts():
    from webtext.train.detokenize import DETOKENIZERS

    ptb = DETOKENIZERS["ptb"]
    original = (" no it was n't black monday \n but while the new york stock exchange did n't fall apart friday as "
                "the dow jones industrial average plunged N points most of it in the final hour it barely managed "
                "to stay this side of chaos \n some circuit breakers installed after the october N crash failed "
                "their first test traders say unable to cool the selling panic in both stocks and futures \n"
                " the N stock specialist firms on the big board floor were n't ready for what 's coming \n")
    natural = ptb.detokenize(original)
    assert natural.startswith("no it wasn't black monday\nbut while") and "for what's coming\n" in natural
    assert ptb.retokenize(natural) == original


@pytest.mark.realdata
def test_word_perplexity_counts_the_original_words_when_detokenized(model_dir, shared_data, tmp_path):
    import transformers
    from webtext.train.detokenize import DETOKENIZERS

    lines = (shared_data / "eval" / "wikitext-2_test.txt").read_text(encoding="utf-8").split("\n")[:12]
    excerpt = "\n".join(lines) + "\n"
    data = tmp_path / "wiki.test.tokens"
    data.write_text(excerpt, encoding="utf-8")
    result = run_eval(tmp_path, model_dir, "--task", "ppl", "--data", data, "--detokenize", "wikitext")
    natural = DETOKENIZERS["wikitext"].detokenize(excerpt)
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(str(export_hf(model_dir, tmp_path / "hf"))).eval()
    nll, count = reference_perplexity_nll(hf_model, reference_ids(model_dir, natural), BLOCK, BLOCK // 2)
    assert result["tokens"] == count and result["words"] == len(excerpt.split()) != len(natural.split())
    assert result["word_ppl"] == pytest.approx(math.exp(nll / len(excerpt.split())), rel=1e-4)


def test_max_tokens_bounds_a_quick_look(model_dir, tmp_path):
    data = tmp_path / "mixed.txt"
    data.write_text(mixed_text(), encoding="utf-8")
    result = run_eval(tmp_path, model_dir, "--task", "ppl", "--data", data, "--max-tokens", "40")
    assert result["tokens"] == 40 and result["truncated"] is True and "word_ppl" not in result
    lambada = tmp_path / "lambada_test.jsonl"
    lambada.write_text("\n".join(lambada_lines(correct=8, wrong=0)) + "\n", encoding="utf-8")
    whole = run_eval(tmp_path, model_dir, "--task", "lambada", "--data", lambada)
    first = run_eval(tmp_path, model_dir, "--task", "lambada", "--data", lambada, "--max-tokens", "3")
    assert whole["examples"] == 8 and whole["truncated"] is False
    assert 1 <= first["examples"] < 8 and (first["tokens"] <= 3 or first["examples"] == 1) and first["truncated"] is True


def test_the_suite_runs_the_present_files_beside_the_paper_and_the_contamination(model_dir, tmp_path, capsys):
    data_dir = tmp_path / "paper-data"
    data_dir.mkdir()
    (data_dir / "lambada_test.jsonl").write_text("\n".join(lambada_lines(correct=4, wrong=0)) + "\n")
    (data_dir / "wikitext-2").mkdir()
    (data_dir / "wikitext-2" / "wiki.test.tokens").write_text(" = Apple = \n \n apple brick , cloud dune . \n")
    run = Path(json.loads((model_dir / "meta.json").read_text())["run"])
    (run / RUN_CONTAMINATION).parent.mkdir(parents=True)
    (run / RUN_CONTAMINATION).write_text(json.dumps({"ngram": 8, "eval_sets": {
        "lambada": {"path": str(data_dir / "lambada_test.jsonl"), "share_in_corpus": 0.0125,
                    "share_after_decontamination": 0.0}}}))
    try:
        record = run_eval(tmp_path, model_dir, "--suite", "gpt2-paper", "--data-dir", data_dir)
    finally:
        shutil.rmtree(run)
    table = capsys.readouterr().out
    by_name = {r["name"]: r for r in record["results"]}
    assert set(by_name) == {"lambada", "wikitext-2"}
    assert by_name["lambada"]["accuracy"] == 1.0 and by_name["lambada"]["published"] == {"ppl": 35.13, "accuracy": 0.4599}
    assert by_name["lambada"]["contamination"]["share_in_corpus"] == 0.0125 and "contamination" not in by_name["wikitext-2"]
    assert by_name["wikitext-2"]["detokenize"] == "wikitext" and by_name["wikitext-2"]["words"] == 9
    assert {a["name"] for a in record["absent"]} == {"cbt-cn", "cbt-ne", "ptb", "enwik8", "text8", "wikitext-103", "1bw"}
    assert "45.99%" in table and "29.41" in table and "1.25% of 8-grams" in table and "absent" in table


def test_bad_eval_input_is_one_line_and_exit_2(model_dir, tmp_path, caplog):
    data = tmp_path / "lambada_test.jsonl"
    data.write_text(json.dumps({"text": "apple brick cloud"}) + "\n{not json\n")
    assert main(["eval", str(model_dir), "--task", "lambada", "--data", str(data), "--device", "cpu"]) == 2
    assert f"{data}:2: not JSON" in caplog.text
    assert main(["eval", str(model_dir), "--task", "ppl", "--device", "cpu"]) == 2
    assert "--task ppl needs --data FILE" in caplog.text
    cbt = tmp_path / "cbt.txt"
    cbt.write_text("1 apple brick .\n21 apple XXXXX .\tbrick\t\tcloud|dune\n")
    assert main(["eval", str(model_dir), "--task", "cbt", "--data", str(cbt), "--device", "cpu"]) == 2
    assert f"{cbt}:2: not a CBT question" in caplog.text
    assert main(["eval", str(model_dir), "--task", "ppl", "--data", str(tmp_path / "absent.txt"), "--device", "cpu"]) == 2
    assert "absent.txt: no such file" in caplog.text
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9 au lait"}\n')
    assert main(["eval", str(model_dir), "--task", "lambada", "--data", str(tmp_path / "latin1.jsonl")]) == 2
    assert "latin1.jsonl: not UTF-8 text" in caplog.text


def test_eval_modules_import_only_what_train_may():
    import subprocess
    import sys

    probe = ("import sys, webtext.train.eval_tasks, webtext.train.detokenize, webtext.train.evaluate\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'transformers', 'apache_beam', 'datasketch'}),"
             " [m for m in sys.modules if m.startswith('webtext.pipeline')])")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[] []"
