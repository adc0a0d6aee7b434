"""Command line of the trainer: `train`, `sample`, `eval`, `export-hf`, `import-hf` (`webtext` passes argv here;
also `python -m webtext.train`, under torchrun for DDP). CKPT may be a training directory: its latest checkpoint."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .config_flags import DefaultsHelpFormatter, add_arguments, from_namespace, positive_int

log = logging.getLogger("webtext.train")

COMMANDS = ("train", "sample", "eval", "export-hf", "import-hf")


def _add_train(sub) -> None:
    from .trainer import TrainConfig

    p = sub.add_parser("train", help="train GPT-2 on RUN/shards, writing RUN/train/NAME/",
                       formatter_class=DefaultsHelpFormatter)
    add_arguments(p, TrainConfig)


def _add_sample(sub) -> None:
    from .generate import SamplingConfig

    p = sub.add_parser("sample", help="generate text from a checkpoint",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint, or a training directory (its latest)")
    p.add_argument("--prompt", default="", help="text to continue (default: empty, starting from end-of-text)")
    add_arguments(p, SamplingConfig)
    p.add_argument("--num-samples", type=positive_int, default=1, help="continuations of the prompt")
    p.add_argument("--tokenizer", help="tokenizer.json (default: the checkpoint's or its run's)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="cpu or cuda (default: cuda when there is one)")
    p.add_argument("--json", action="store_true", help="print one JSON object per sample")


def _add_eval(sub) -> None:
    from .eval_tasks import EvalConfig

    p = sub.add_parser("eval", help="the GPT-2 paper's zero-shot tasks (perplexity, LAMBADA, CBT, the suite), or the "
                       "loss on shards or a text file", formatter_class=DefaultsHelpFormatter)
    add_arguments(p, EvalConfig)


def _add_import(sub) -> None:
    from .hf import DEFAULT_MAX_PARAMETERS

    p = sub.add_parser("import-hf", help="make a checkpoint from a Hugging Face GPT-2 directory",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("hf_dir", metavar="HF_DIR", help="a Hugging Face GPT-2 folder (config.json and its weights)")
    p.add_argument("checkpoint", metavar="CKPT", help="the checkpoint folder to write")
    p.add_argument("--max-parameters", type=positive_int, default=DEFAULT_MAX_PARAMETERS,
                   help="refuse a config.json declaring a larger model, before anything is allocated")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webtext", description="GPT-2 training, sampling, evaluation and HF conversion")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_sample(sub)
    _add_eval(sub)
    p = sub.add_parser("export-hf", help="write a Hugging Face GPT-2 directory from a checkpoint")
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint, or a training directory (its latest)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write")
    p.add_argument("--tokenizer", metavar="PATH", default=None,
                   help="tokenizer.json to ship with the weights (default: the checkpoint's, its training "
                        "directory's, else its run's RUN/tokenizer/tokenizer.json)")
    _add_import(sub)
    return parser


def _device(name: str | None):
    import torch

    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def run_train(args: argparse.Namespace) -> int:
    from .trainer import TrainConfig, train

    result = train(from_namespace(TrainConfig, args))
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
    settings = from_namespace(gen.SamplingConfig, args)
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
    from . import evaluate
    from .eval_tasks import EvalConfig

    record, table = evaluate.run_eval(from_namespace(EvalConfig, args))
    if args.out:
        evaluate.write_json(record, args.out)
    print(table if table is not None else json.dumps(record))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .hf import export_hf

    print(json.dumps({"hf_dir": str(export_hf(args.checkpoint, args.out_dir, args.tokenizer))}))
    return 0


def run_import(args: argparse.Namespace) -> int:
    from .hf import import_hf

    print(json.dumps({"checkpoint": str(import_hf(args.hf_dir, args.checkpoint, args.max_parameters))}))
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
    from .atomic import DiskError, refusal
    from .checkpoint import CheckpointError
    from .dirlock import LockHeld
    from .hf import HFConversionError
    from .model import ConfigError
    from .safetensors_io import SafetensorsError
    from .shard_format import ShardFormatError

    from .trainer import TrainingStopped

    try:
        return HANDLERS[args.command](args)
    except TrainingStopped as stopped:
        log.error("%s", stopped)
        return stopped.exit_code
    except (CheckpointError, ConfigError, ShardFormatError, HFConversionError, SafetensorsError,
            FileNotFoundError, DiskError, LockHeld) as error:  # the user's mistakes; anything else is a bug and keeps its traceback
        log.error("%s", error)
        return 2
    except OSError as error:
        reason = refusal(error)  # a full or read-only disk outside an atomic write (a directory, a log line)
        if reason is None:
            raise
        log.error("%s: %s", reason, error.filename or error)
        return 2
