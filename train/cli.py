"""Command line of the trainer: `train`, `sample`, `eval`, `export-hf`, `import-hf` (torch-only; `webtext` passes argv here).

Usage: python -m webtext.train train RUN [...], or under torchrun for DDP; CKPT may be a training directory (its latest).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .model import ATTENTION_CHOICES, MODEL_SHAPES

log = logging.getLogger("webtext.train")

COMMANDS = ("train", "sample", "eval", "export-hf", "import-hf")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train GPT-2 on RUN/shards, writing RUN/train/NAME/")
    p.add_argument("run", help="the run directory (reads RUN/shards/manifest.json)")
    p.add_argument("--model", help=f"a named shape: {', '.join(MODEL_SHAPES)} (default gpt2, or the resumed checkpoint's)")
    p.add_argument("--n-layer", type=_positive_int)
    p.add_argument("--n-head", type=_positive_int)
    p.add_argument("--n-embd", type=_positive_int)
    p.add_argument("--block-size", type=_positive_int, help="context length T (default 1024)")
    p.add_argument("--micro-batch", type=_positive_int, default=16, help="sequences per forward pass per rank")
    p.add_argument("--batch-tokens", type=_positive_int,
                   help="tokens per optimizer step over all ranks; accumulates micro-batches to reach it")
    p.add_argument("--max-steps", type=_positive_int, default=1000)
    p.add_argument("--lr", type=float, default=6e-4, help="peak learning rate")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr as a fraction of the peak")
    p.add_argument("--warmup", type=_non_negative_int, default=100, help="linear warmup steps")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
    p.add_argument("--eval-every", type=_positive_int, default=250)
    p.add_argument("--eval-batches", type=_positive_int, default=20)
    p.add_argument("--ckpt-every", type=_positive_int, default=500)
    p.add_argument("--keep", type=_positive_int, default=3, help="keep the last K checkpoints (and the best)")
    p.add_argument("--log-every", type=_positive_int, default=1)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint of RUN/train/NAME")
    p.add_argument("--init-from", metavar="CKPT", help="start from these weights (e.g. an imported HF model), new optimizer")
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--compile-mode", help="torch.compile mode, e.g. reduce-overhead (CUDA graphs) or max-autotune")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--loss-chunk", type=int, help="rows per chunk of the memory-lean loss (0: off; default 8192 on CUDA)")
    p.add_argument("--attention", choices=list(ATTENTION_CHOICES), default="cudnn",
                   help="SDPA backend tried first on CUDA (auto: torch's own order)")
    p.add_argument("--verify-shards", action="store_true", help="check every shard's sha256 and contents first")
    p.add_argument("--peak-flops", type=float, help="peak FLOP/s for MFU when the device is not in the table")
    p.add_argument("--stop-after", type=_positive_int, help="stop after this step, keeping the schedule of --max-steps")
    p.add_argument("--name", help="training name (default: the model name, or lL-hH-eC for a custom shape)")


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint, or a training directory (its latest)")
    p.add_argument("--prompt", default="", help="text to continue (empty: start from end-of-text)")
    p.add_argument("--max-tokens", type=_positive_int, default=100)
    p.add_argument("--temperature", type=float, default=1.0, help="0 picks the most likely token")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--num-samples", type=_positive_int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", help="tokenizer.json (default: the checkpoint's or its run's)")
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--json", action="store_true", help="print one JSON object per sample")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="loss and perplexity of a checkpoint on shards or a text file")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--run", help="evaluate on RUN/shards (default: the checkpoint's run)")
    p.add_argument("--split", default="val")
    p.add_argument("--text", help="evaluate on this UTF-8 text file instead, tokenized with the run's tokenizer")
    p.add_argument("--tokenizer", help="tokenizer.json for --text")
    p.add_argument("--micro-batch", type=_positive_int, default=8)
    p.add_argument("--batches", type=_positive_int, help="at most this many batches (default: all windows)")
    p.add_argument("--device", choices=["cpu", "cuda"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webtext", description="GPT-2 training, sampling, evaluation and HF conversion")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_sample(sub)
    _add_eval(sub)
    p = sub.add_parser("export-hf", help="write a Hugging Face GPT-2 directory from a checkpoint")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p = sub.add_parser("import-hf", help="make a checkpoint from a Hugging Face GPT-2 directory")
    p.add_argument("hf_dir", metavar="HF_DIR")
    p.add_argument("checkpoint", metavar="CKPT")
    return parser


def _device(name: str | None):
    import torch

    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def run_train(args: argparse.Namespace) -> int:
    from .trainer import TrainConfig, train

    config = TrainConfig(
        run=args.run, name=args.name, model=args.model, n_layer=args.n_layer, n_head=args.n_head,
        n_embd=args.n_embd, block_size=args.block_size, micro_batch=args.micro_batch,
        batch_tokens=args.batch_tokens, max_steps=args.max_steps, lr=args.lr, min_lr_ratio=args.min_lr_ratio,
        warmup=args.warmup, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
        eval_every=args.eval_every, eval_batches=args.eval_batches, ckpt_every=args.ckpt_every, keep=args.keep,
        log_every=args.log_every, resume=args.resume, init_from=args.init_from, device=args.device,
        compile=args.compile, compile_mode=args.compile_mode, seed=args.seed, loss_chunk=args.loss_chunk,
        attention=args.attention,
        verify_shards=args.verify_shards, peak_flops=args.peak_flops, stop_after=args.stop_after)
    result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"train_dir": str(result.train_dir), "step": result.step,
                          "loss": result.losses.get(result.step), "val_loss": result.val_losses.get(result.step),
                          "checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None}))
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from . import checkpoint as ckpt
    from . import generate as gen

    source = ckpt.resolve_checkpoint(args.checkpoint)
    model, meta = ckpt.load_model(source, _device(args.device))
    tokenizer = gen.load_tokenizer(gen.find_tokenizer(source, meta, args.tokenizer))
    eot_id = gen.eot_id_of(tokenizer, meta)
    settings = gen.SamplingConfig(max_new_tokens=args.max_tokens, temperature=args.temperature,
                                  top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    prompt_ids = gen.encode_prompt(tokenizer, args.prompt)
    for ids in gen.generate(model, prompt_ids, settings, eot_id=eot_id, num_samples=args.num_samples):
        completion = gen.decode(tokenizer, ids)
        if args.json:
            print(json.dumps({"prompt": args.prompt, "completion": completion, "tokens": len(ids)}, ensure_ascii=False))
        else:
            print(args.prompt + completion)
            print("-" * 40)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from . import checkpoint as ckpt
    from . import evaluate
    from .generate import find_tokenizer, load_tokenizer

    source = ckpt.resolve_checkpoint(args.checkpoint)
    device = _device(args.device)
    model, meta = ckpt.load_model(source, device)
    if args.text:
        tokenizer = load_tokenizer(find_tokenizer(source, meta, args.tokenizer))
        result = evaluate.eval_text(model, tokenizer, Path(args.text), args.micro_batch, device, args.batches)
    else:
        run = args.run or meta.get("run")
        if not run:
            raise SystemExit(f"{source}: no run recorded in the checkpoint; pass --run RUN or --text FILE")
        result = evaluate.eval_shards(model, Path(run), args.split, args.micro_batch, args.batches, device)
    print(json.dumps({"checkpoint": str(source), "step": meta.get("step"), **result.to_dict()}))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .hf import export_hf

    print(json.dumps({"hf_dir": str(export_hf(args.checkpoint, args.out_dir))}))
    return 0


def run_import(args: argparse.Namespace) -> int:
    from .hf import import_hf

    print(json.dumps({"checkpoint": str(import_hf(args.hf_dir, args.checkpoint))}))
    return 0


HANDLERS = {"train": run_train, "sample": run_sample, "eval": run_eval, "export-hf": run_export, "import-hf": run_import}


def main(argv: list[str] | None = None) -> int:
    """Entry point; argv starts with the subcommand, e.g. ["train", "RUN", "--max-steps", "10"]."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        level = logging.DEBUG if args.verbose else logging.INFO
        if int(os.environ.get("RANK", "0")) != 0:
            level = logging.WARNING  # under torchrun, rank 0 reports
        logging.basicConfig(level=level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .checkpoint import CheckpointError
    from .hf import HFConversionError
    from .model import ConfigError
    from .safetensors_io import SafetensorsError
    from .shard_format import ShardFormatError

    try:
        return HANDLERS[args.command](args)
    except (CheckpointError, ConfigError, ShardFormatError, HFConversionError, SafetensorsError,
            FileNotFoundError) as error:  # the user's mistakes; anything else is a bug and keeps its traceback
        log.error("%s", error)
        return 2
