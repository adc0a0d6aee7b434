"""The GPT-2 paper's zero-shot protocols: sliding-window perplexity (per token, per word, bits per byte), LAMBADA,
the Children's Book Test, and the suite beside the published GPT-2 117M figures."""
from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import checkpoint as ckpt
from .config_flags import option, positive_int
from .detokenize import DETOKENIZERS, detokenizer, original_words
from .model import GPT, ConfigError
from .shard_format import RUN_CONTAMINATION
from .trainer import attention_backends, autocast

log = logging.getLogger(__name__)

TASKS = ("shards", "ppl", "bpb", "lambada", "cbt")
SUITES = ("gpt2-paper",)
LOGIT_ROWS = 4096  # positions whose logits are materialised at once (rows x vocabulary x 4 bytes)
PROGRESS_SECONDS = 30.0


@dataclass
class EvalConfig:
    """`webtext eval`: each field is also its command-line flag (see config_flags.option)."""

    model: str = option(help="a checkpoint or training directory of ours, or a Hugging Face GPT-2 directory",
                        metavar="MODEL")
    task: str = option("shards", "shards: mean loss of non-overlapping windows of RUN/shards (or --text); ppl: "
                       "sliding-window perplexity of --data; bpb: bits per byte of --data; lambada; cbt",
                       choices=TASKS)
    data: str | None = option(None, "the evaluation file of --task (ppl, bpb, lambada, cbt)", metavar="FILE")
    suite: str | None = option(None, "run every task of the suite whose file is in --data-dir", choices=SUITES)
    data_dir: str | None = option(None, "the folder of the suite's files (see the README for their names)",
                                  metavar="DIR")
    stride: int | None = option(None, "tokens predicted per window after the first (default: half the context)",
                                type=positive_int)
    detokenize: str = option("none", "invertible de-tokeniser applied to the text the model sees (ppl, bpb)",
                             choices=tuple(DETOKENIZERS))
    max_tokens: int | None = option(None, "a quick look: score at most this many tokens (lambada, cbt: the first "
                                    "examples up to that; ppl, bpb: no per-word or per-byte figure then)",
                                    type=positive_int, metavar="N")
    out: str | None = option(None, "write the figures as JSON to this file", metavar="FILE.json")
    micro_batch: int = option(8, "sequences per forward pass", type=positive_int)
    device: str | None = option(None, "cpu or cuda (default: cuda when there is one)", choices=("cpu", "cuda"))
    tokenizer: str | None = option(None, "tokenizer.json (default: the model's, or its run's)")
    run: str | None = option(None, "the run of the model: its shards (--task shards) and its contamination report "
                             "(default: the checkpoint's run)")
    split: str = option("val", "the split of RUN/shards (--task shards)")
    text: str | None = option(None, "--task shards on this UTF-8 text file instead of the shards")
    batches: int | None = option(None, "--task shards: at most this many batches (default: all windows)",
                                 type=positive_int)


def check_config(config: EvalConfig) -> None:
    if config.suite and config.task != "shards":
        raise ConfigError("--suite runs its own tasks; leave out --task")
    if config.suite and not config.data_dir:
        raise ConfigError(f"--suite {config.suite} needs --data-dir DIR")
    if config.data_dir and not config.suite:
        raise ConfigError("--data-dir goes with --suite")
    if not config.suite and config.task != "shards" and not config.data:
        raise ConfigError(f"--task {config.task} needs --data FILE")
    if config.task != "shards" and config.text:
        raise ConfigError("--text is the file of --task shards; give --data FILE with --task " + config.task)
    if config.detokenize != "none" and config.task not in ("ppl", "bpb"):
        raise ConfigError("--detokenize applies to --task ppl and bpb")


# -- the model and its tokenizer ---------------------------------------------------------------------------------------


@dataclass
class EvalModel:
    model: GPT
    tokenizer: object  # tokenizers.Tokenizer
    eot_id: int | None
    source: str
    run: Path | None
    step: int | None

    @property
    def block_size(self) -> int:
        return self.model.config.block_size

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def prefix(self) -> list[int]:
        """Every text starts after an end-of-text token, as documents do in training (none when it is unknown)."""
        return [] if self.eot_id is None else [self.eot_id]


def is_hf_directory(path: Path) -> bool:
    return (path / "config.json").is_file() and not ckpt.is_checkpoint(path) and not ckpt.list_checkpoints(path)


def hf_tokenizer(hf_dir: Path, explicit: str | None):
    """tokenizer.json, else vocab.json + merges.txt as GPT-2's byte-level BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from .generate import load_tokenizer

    if explicit or (hf_dir / "tokenizer.json").is_file():
        return load_tokenizer(Path(explicit) if explicit else hf_dir / "tokenizer.json")
    vocab, merges = hf_dir / "vocab.json", hf_dir / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise FileNotFoundError(f"{hf_dir}: no tokenizer.json, nor vocab.json + merges.txt; pass --tokenizer")
    tokenizer = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    if tokenizer.token_to_id("<|endoftext|>") is not None:
        tokenizer.add_special_tokens(["<|endoftext|>"])
    tokenizer.encode_special_tokens = True
    return tokenizer


def load_eval_model(path: str | Path, device: torch.device, tokenizer: str | None = None,
                    run: str | None = None) -> EvalModel:
    """Our checkpoint (or training directory), or a Hugging Face GPT-2 directory read by import-hf's reader."""
    from .generate import eot_id_of, find_tokenizer, load_tokenizer
    from .hf import import_hf

    path = Path(path)
    if is_hf_directory(path):
        with tempfile.TemporaryDirectory(prefix="webtext-eval-") as scratch:
            model, meta = ckpt.load_model(import_hf(path, Path(scratch) / "imported"), device)
        loaded = hf_tokenizer(path, tokenizer)
        source, meta = path, {**meta, "step": None}
    else:
        source = ckpt.resolve_checkpoint(path)
        model, meta = ckpt.load_model(source, device)
        loaded = load_tokenizer(find_tokenizer(source, meta, tokenizer))
    if loaded.get_vocab_size() > model.config.vocab_size:
        raise ConfigError(f"{path}: the tokenizer has {loaded.get_vocab_size()} tokens, the model "
                          f"{model.config.vocab_size}; pass the model's own --tokenizer")
    run_dir = run or meta.get("run")
    return EvalModel(model=model, tokenizer=loaded, eot_id=eot_id_of(loaded, meta), source=str(source),
                     run=Path(run_dir) if run_dir else None, step=meta.get("step"))


# -- scoring -------------------------------------------------------------------------------------------------------------


@dataclass
class Scored:
    """A continuation's summed log-probability (nats), its tokens, and whether greedy decoding gives every one."""

    logprob: float
    tokens: int
    greedy: bool


class Progress:
    """An INFO line every PROGRESS_SECONDS while a long task runs."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.last = label, total, time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            log.info("%s: %d/%d sequences scored (%.0f%%)", self.label, done, self.total, 100.0 * done / self.total)
            self.last = now


@torch.no_grad()
def score_continuations(model: GPT, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], micro_batch: int,
                        device: torch.device, label: str = "scoring") -> list[Scored]:
    """Log-probability of each continuation after its context; a context longer than the model's is cut from the left."""
    model.eval()
    limit = model.config.block_size + 1  # block_size inputs predict block_size targets
    progress = Progress(label, len(pairs))
    results: list[Scored] = []
    for first in range(0, len(pairs), micro_batch):
        rows = [_row(context, continuation, limit) for context, continuation in pairs[first:first + micro_batch]]
        results.extend(_score_rows(model, rows, device))
        progress.update(len(results))
    return results


def _row(context: Sequence[int], continuation: Sequence[int], limit: int) -> tuple[np.ndarray, int]:
    scored = len(continuation)
    if scored == 0:
        raise ConfigError("an empty continuation has nothing to score")
    if scored >= limit:
        raise ConfigError(f"a continuation of {scored} tokens does not fit the model's context of {limit - 1}")
    ids = np.concatenate([np.asarray(context, dtype=np.int64), np.asarray(continuation, dtype=np.int64)])[-limit:]
    if len(ids) == scored:
        raise ConfigError("a continuation needs at least one token before it (the model has no end-of-text id)")
    return ids, scored


def _score_rows(model: GPT, rows: list[tuple[np.ndarray, int]], device: torch.device) -> list[Scored]:
    width = max(len(ids) for ids, _ in rows) - 1
    inputs = torch.zeros((len(rows), width), dtype=torch.long)
    row_index, positions, targets = [], [], []
    for i, (ids, scored) in enumerate(rows):
        inputs[i, : len(ids) - 1] = torch.from_numpy(ids[:-1])  # right padding: causal attention never sees it
        row_index.append(np.full(scored, i))
        positions.append(np.arange(len(ids) - 1 - scored, len(ids) - 1))
        targets.append(ids[-scored:])
    with autocast(device), attention_backends(device):
        hidden = model.hidden_states(inputs.to(device))
    picked = hidden[torch.from_numpy(np.concatenate(row_index)).to(device),
                    torch.from_numpy(np.concatenate(positions)).to(device)]
    target = torch.from_numpy(np.concatenate(targets)).to(device)
    logprobs, hits = [], []
    for start in range(0, len(target), LOGIT_ROWS):
        with autocast(device):
            logits = model.logits(picked[start:start + LOGIT_ROWS]).float()
        chunk = target[start:start + LOGIT_ROWS]
        logprobs.append(torch.log_softmax(logits, dim=-1).gather(1, chunk[:, None])[:, 0])
        hits.append(logits.argmax(dim=-1) == chunk)
    logprob = torch.cat(logprobs).double().cpu().numpy()
    hit = torch.cat(hits).cpu().numpy()
    results, start = [], 0
    for _, scored in rows:
        results.append(Scored(float(logprob[start:start + scored].sum()), scored, bool(hit[start:start + scored].all())))
        start += scored
    return results


def sliding_windows(n_tokens: int, block_size: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, scored) per window stream[begin:end] of up to block_size tokens, starting every `stride` tokens;
    of each window the tokens not predicted by an earlier one are scored (the first window: all but its first),
    so every token but the stream's first is predicted exactly once, after at least block_size - stride others."""
    if n_tokens < 2:
        raise ConfigError("needs at least 2 tokens to evaluate")
    if not 0 < stride < block_size:
        raise ConfigError(f"--stride must be between 1 and the context - 1 ({block_size - 1}), got {stride}")
    windows, previous_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + block_size, n_tokens)
        windows.append((begin, end, end - max(previous_end, begin + 1)))
        previous_end = end
        if end == n_tokens:
            break
    return windows


# -- tasks -----------------------------------------------------------------------------------------------------------------


def _loss_figures(scored: list[Scored]) -> tuple[float, int]:
    total = -sum(s.logprob for s in scored)
    return total, sum(s.tokens for s in scored)


def eval_perplexity(em: EvalModel, path: Path, task: str, detokenize: str, stride: int | None, micro_batch: int,
                    device: torch.device, max_tokens: int | None = None) -> dict:
    """Sliding-window perplexity of a whole file: per token; per original word (ppl) or bits per byte (bpb)."""
    raw = path.read_bytes()
    original = raw.decode("utf-8", errors="replace")
    stream = np.asarray(em.prefix() + em.encode(detokenizer(detokenize)(original)), dtype=np.int64)
    if len(stream) < 2:
        raise ConfigError(f"{path}: too short to evaluate (needs at least 2 tokens)")
    truncated = max_tokens is not None and len(stream) - 1 > max_tokens
    if truncated:
        stream = stream[: max_tokens + 1]
    stride = stride or max(1, em.block_size // 2)
    windows = sliding_windows(len(stream), em.block_size, stride)
    pairs = [(stream[begin:end - scored], stream[end - scored:end]) for begin, end, scored in windows]
    total, tokens = _loss_figures(score_continuations(em.model, pairs, micro_batch, device, f"{task} {path.name}"))
    result = {"task": task, "data": str(path), "detokenize": detokenize, "stride": stride, "windows": len(windows),
              "tokens": tokens, "loss": total / tokens, "ppl": math.exp(min(total / tokens, 700.0)),
              "truncated": truncated}
    if truncated:
        return result  # a prefix of the stream: no exact word or byte count goes with it
    if task == "ppl":
        words = original_words(original)
        result.update(words=words, word_ppl=math.exp(min(total / words, 700.0)) if words else None)
    else:
        result.update(bytes=len(raw), characters=len(original), bpb=total / math.log(2) / len(raw),
                      bpc=total / math.log(2) / len(original))
    return result


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None


def read_lambada(path: Path) -> list[str]:
    """OpenAI's lambada_test.jsonl: one {"text": ...} per line."""
    texts = []
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise ConfigError(f"{path}:{line_no}: not JSON ({error})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str) or " " not in record["text"].strip():
            raise ConfigError(f"{path}:{line_no}: wants {{\"text\": \"... last-word\"}} with at least two words")
        texts.append(record["text"].strip())
    if not texts:
        raise ConfigError(f"{path}: no examples")
    return texts


def _first_examples(groups: list[list], max_tokens: int | None) -> list[list]:
    """The first examples (each a group of (context, continuation) pairs) whose continuations hold max_tokens."""
    if max_tokens is None:
        return groups
    kept, tokens = [], 0
    for group in groups:
        if kept and tokens + sum(len(c) for _, c in group) > max_tokens:
            break
        kept.append(group)
        tokens += sum(len(c) for _, c in group)
    return kept


def eval_lambada(em: EvalModel, path: Path, micro_batch: int, device: torch.device,
                 max_tokens: int | None = None) -> dict:
    """Accuracy of greedily predicting every token of the last word, and the perplexity of those tokens."""
    examples = []
    for text in read_lambada(path):
        context, _, word = text.rpartition(" ")
        examples.append([(em.prefix() + em.encode(context), em.encode(" " + word))])
    pairs = [pair for group in _first_examples(examples, max_tokens) for pair in group]
    scored = score_continuations(em.model, pairs, micro_batch, device, f"lambada {path.name}")
    total, tokens = _loss_figures(scored)
    return {"task": "lambada", "data": str(path), "examples": len(scored),
            "accuracy": sum(s.greedy for s in scored) / len(scored),
            "tokens": tokens, "loss": total / tokens, "ppl": math.exp(min(total / tokens, 700.0)),
            "truncated": len(pairs) < len(examples)}


@dataclass(frozen=True)
class CBTQuestion:
    context: list[str]
    query: str  # with XXXXX where the answer goes
    answer: str
    candidates: list[str]


CBT_BLANK = "XXXXX"
CBT_QUERY = re.compile(r"^21 (?P<query>.*?)\t(?P<answer>[^\t]*)\t\t(?P<candidates>[^\t]*)$")


def read_cbt(path: Path) -> list[CBTQuestion]:
    """The Children's Book Test files: 20 numbered context lines, then `21 query<TAB>answer<TAB><TAB>c1|...|c10`."""
    questions, context = [], []
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        number, _, sentence = line.partition(" ")
        if number == "21":
            match = CBT_QUERY.match(line.rstrip("\n"))
            candidates = match["candidates"].split("|") if match else []
            if not match or CBT_BLANK not in match["query"] or match["answer"] not in candidates or not context:
                raise ConfigError(f"{path}:{line_no}: not a CBT question (20 context lines, then "
                                  f"'21 query with {CBT_BLANK}<TAB>answer<TAB><TAB>candidate|candidate|...')")
            questions.append(CBTQuestion(context, match["query"], match["answer"], candidates))
            context = []
        elif number.isdigit():
            context.append(sentence)
        else:
            raise ConfigError(f"{path}:{line_no}: a CBT line starts with its number")
    if not questions:
        raise ConfigError(f"{path}: no CBT questions")
    return questions


def eval_cbt(em: EvalModel, path: Path, micro_batch: int, device: torch.device, max_tokens: int | None = None) -> dict:
    """The candidate whose completed query (from the candidate to the sentence's end) is most probable, as the paper."""
    all_questions = read_cbt(path)
    groups = []
    for question in all_questions:
        before, _, after = question.query.partition(CBT_BLANK)
        context = em.prefix() + em.encode(" ".join(question.context + ([before.rstrip()] if before.strip() else [])))
        groups.append([(context, em.encode(" " + candidate + after)) for candidate in question.candidates])
    groups = _first_examples(groups, max_tokens)
    questions = all_questions[: len(groups)]
    pairs = [pair for group in groups for pair in group]
    scored = score_continuations(em.model, pairs, micro_batch, device, f"cbt {path.name}")
    correct, start = 0, 0
    for question in questions:
        options = scored[start:start + len(question.candidates)]
        start += len(question.candidates)
        best = max(range(len(options)), key=lambda i: (options[i].logprob, -i))
        correct += question.candidates[best] == question.answer
    total, tokens = _loss_figures(scored)
    return {"task": "cbt", "data": str(path), "examples": len(questions), "accuracy": correct / len(questions),
            "tokens": tokens, "loss": total / tokens, "ppl": math.exp(min(total / tokens, 700.0)),
            "truncated": len(questions) < len(all_questions)}


def run_task(em: EvalModel, task: str, path: Path, config: EvalConfig, device: torch.device) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (--data)")
    if task in ("ppl", "bpb"):
        result = eval_perplexity(em, path, task, config.detokenize, config.stride, config.micro_batch, device,
                                 config.max_tokens)
    elif task == "lambada":
        result = eval_lambada(em, path, config.micro_batch, device, config.max_tokens)
    elif task == "cbt":
        result = eval_cbt(em, path, config.micro_batch, device, config.max_tokens)
    else:
        raise ConfigError(f"unknown task {task!r}")
    overlap = contamination(em.run, path)
    if overlap is not None:
        result["contamination"] = overlap
    return result


# -- the run's contamination report ----------------------------------------------------------------------------------------


def contamination(run: Path | None, data: Path) -> dict | None:
    """The dedup stage's n-gram overlap for this eval file (same path, else same file name), when the run has one."""
    if run is None or not (run / RUN_CONTAMINATION).is_file():
        return None
    report_path = run / RUN_CONTAMINATION
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        entries = report["eval_sets"].items()
    except (OSError, ValueError, KeyError, AttributeError) as error:
        log.warning("%s: unreadable contamination report (%s); scores are shown without it", report_path, error)
        return None
    same_path = [(n, e) for n, e in entries if _resolved(e.get("path")) == data.resolve()]
    same_name = [(n, e) for n, e in entries if Path(str(e.get("path"))).name == data.name]
    if not (same_path or same_name):
        return None
    name, entry = (same_path or same_name)[0]
    return {"eval_set": name, "path": entry.get("path"), "ngram": report.get("ngram"),
            "share_in_corpus": entry.get("share_in_corpus"),
            "share_after_decontamination": entry.get("share_after_decontamination"), "report": str(report_path)}


def _resolved(path: str | None) -> Path | None:
    return Path(path).resolve() if path and "://" not in path else None


# -- the paper's suite ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteEntry:
    name: str
    task: str
    detokenize: str
    files: tuple[str, ...]  # looked for under --data-dir, first found wins
    published: dict  # the GPT-2 117M figures of the paper's table 3 (accuracy as a fraction)


GPT2_PAPER_SUITE = (
    SuiteEntry("lambada", "lambada", "none", ("lambada_test.jsonl",), {"ppl": 35.13, "accuracy": 0.4599}),
    SuiteEntry("cbt-cn", "cbt", "none", ("cbtest_CN_test_2500ex.txt", "CBTest/data/cbtest_CN_test_2500ex.txt"),
               {"accuracy": 0.8765}),
    SuiteEntry("cbt-ne", "cbt", "none", ("cbtest_NE_test_2500ex.txt", "CBTest/data/cbtest_NE_test_2500ex.txt"),
               {"accuracy": 0.834}),
    SuiteEntry("wikitext-2", "ppl", "wikitext", ("wikitext-2/wiki.test.tokens", "wikitext-2_test.txt"),
               {"word_ppl": 29.41}),
    SuiteEntry("ptb", "ppl", "ptb", ("ptb.test.txt",), {"word_ppl": 65.85}),
    SuiteEntry("enwik8", "bpb", "none", ("enwik8_test.txt",), {"bpb": 1.16}),
    SuiteEntry("text8", "bpb", "none", ("text8_test.txt",), {"bpc": 1.17}),
    SuiteEntry("wikitext-103", "ppl", "wikitext", ("wikitext-103/wiki.test.tokens", "wikitext-103_test.txt"),
               {"word_ppl": 37.50}),
    SuiteEntry("1bw", "ppl", "none", ("1bw_test.txt", "news.en.heldout-00000-of-00050"), {"word_ppl": 75.20}),
)


def run_suite(em: EvalModel, data_dir: Path, config: EvalConfig, device: torch.device) -> dict:
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such folder (--data-dir)")
    results, absent = [], []
    for entry in GPT2_PAPER_SUITE:
        found = next((data_dir / name for name in entry.files if (data_dir / name).is_file()), None)
        if found is None:
            absent.append({"name": entry.name, "looked_for": [str(data_dir / name) for name in entry.files]})
            continue
        log.info("suite: %s on %s", entry.name, found)
        task_config = EvalConfig(**{**config.__dict__, "detokenize": entry.detokenize})
        result = run_task(em, entry.task, found, task_config, device)
        results.append({"name": entry.name, **result, "published": entry.published})
    return {"suite": config.suite, "model": em.source, "step": em.step, "results": results, "absent": absent}


# -- the table -------------------------------------------------------------------------------------------------------------


HEADLINES = {"ppl": [("word_ppl", "ppl/word"), ("ppl", "ppl/token")], "bpb": [("bpb", "bits/byte"), ("bpc", "bits/char")],
             "lambada": [("accuracy", "accuracy"), ("ppl", "ppl/token")], "cbt": [("accuracy", "accuracy")]}


def _figure(key: str, value) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" if key == "accuracy" else f"{value:.2f}" if key.endswith("ppl") else f"{value:.3f}"


def table(results: list[dict], absent: Sequence[dict] = ()) -> str:
    """One line per headline figure: ours, the paper's GPT-2 117M where known, tokens, and the 8-gram overlap."""
    lines = [f"{'task':<14}{'figure':<12}{'ours':>10}{'GPT-2 117M':>12}{'tokens':>12}  overlap"]
    for result in results:
        overlap = result.get("contamination")
        share = f"{overlap['share_in_corpus']:.2%} of {overlap['ngram']}-grams" if overlap and \
            isinstance(overlap.get("share_in_corpus"), (int, float)) else ""
        for key, label in HEADLINES[result["task"]]:
            if key not in result:
                continue
            published = result.get("published", {}).get(key)
            name = result.get("name", result["task"]) + ("*" if result.get("truncated") else "")
            lines.append(f"{name:<14}{label:<12}{_figure(key, result[key]):>10}"
                         f"{_figure(key, published) if published is not None else '':>12}{result['tokens']:>12,}  {share}")
    for missing in absent:
        lines.append(f"{missing['name']:<14}absent: none of {', '.join(missing['looked_for'])}")
    if any(result.get("truncated") for result in results):
        lines.append("* --max-tokens: the first tokens (or examples) only")
    return "\n".join(line.rstrip() for line in lines)
