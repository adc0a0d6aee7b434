"""The training loop of `webtext train`: AdamW, warmup + cosine, accumulation, evaluation, logging, checkpoints;
on one CPU, one GPU, or under torchrun with DDP (gloo on CPU, NCCL on GPUs), where only rank 0 writes."""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from . import checkpoint as ckpt
from .data import LoaderState, PrefetchingLoader, TrainBatches, WindowIndex, eval_window_ids, open_windows
from .dirlock import LOCK_NAME, DirLock, LockHeld
from .model import (ATTENTION_CHOICES, GPT, ConfigError, GPTConfig, MODEL_SHAPES, named_config,
                    parameter_groups)
from .config_flags import non_negative_int, option, positive_int
from .shard_format import RUN_SHARDS, RUN_TOKENIZER, RUN_TRAINING, Manifest, ShardFormatError, sha256_file, verify

log = logging.getLogger(__name__)

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, matched against the device name.
PEAK_BF16_FLOPS = [
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("B200", 2250e12),
    ("A100", 312e12), ("A10G", 125e12), ("A10", 125e12), ("L40S", 362e12), ("L4", 121e12),
    ("RTX 4090", 165e12), ("RTX 3090", 71e12), ("V100", 125e12), ("T4", 65e12),
]
LOG_FIELDS = ["step", "loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "mfu", "tokens", "elapsed_s"]
DEFAULT_MODEL = "gpt2"


@dataclass
class TrainConfig:
    """Everything `webtext train` takes; each field is also its command-line flag (see options.option)."""

    run: str = option(help="the run directory (reads RUN/shards/manifest.json)", metavar="RUN")
    name: str | None = option(None, "training name (default: the model name, or lL-hH-eC for a custom shape)")
    model: str | None = option(None, f"a named shape: {', '.join(MODEL_SHAPES)} (default: {DEFAULT_MODEL}, "
                                     "or the resumed checkpoint's)")
    n_layer: int | None = option(None, "transformer blocks (default: the model's)", type=positive_int)
    n_head: int | None = option(None, "attention heads (default: the model's)", type=positive_int)
    n_embd: int | None = option(None, "embedding width (default: the model's)", type=positive_int)
    block_size: int | None = option(None, "context length T (default: 1024, or the checkpoint's)", type=positive_int)
    micro_batch: int = option(16, "sequences per forward pass per rank", type=positive_int)
    batch_tokens: int | None = option(None, "tokens per optimizer step over all ranks; accumulates micro-batches "
                                            "to reach it (default: one micro-batch per rank)", type=positive_int)
    max_steps: int = option(1000, "optimizer steps; the lr schedule ends here", type=positive_int)
    lr: float = option(6e-4, "peak learning rate", min=0)
    min_lr_ratio: float = option(0.1, "final lr as a fraction of the peak", min=0, max=1)
    warmup: int = option(100, "linear warmup steps", type=non_negative_int)
    weight_decay: float = option(0.1, "AdamW weight decay of the matrices", min=0)
    beta1: float = option(0.9, "AdamW beta1", min=0, max=1)
    beta2: float = option(0.95, "AdamW beta2", min=0, max=1)
    grad_clip: float = option(1.0, "max gradient norm (0: no clipping)", min=0)
    eval_every: int = option(250, "steps between validation losses", type=positive_int)
    eval_batches: int = option(20, "micro-batches per rank in each validation", type=positive_int)
    ckpt_every: int = option(500, "steps between checkpoints", type=positive_int)
    keep: int = option(3, "keep the last K checkpoints (and the best)", type=positive_int)
    log_every: int = option(1, "steps between log records", type=positive_int)
    resume: bool = option(False, "continue from the latest checkpoint of RUN/train/NAME")
    init_from: str | None = option(None, "start from these weights (e.g. an imported HF model), new optimizer "
                                         "(default: random weights, seeded by --seed)",
                                   metavar="CKPT")
    device: str | None = option(None, "cpu or cuda (default: cuda when there is one)", choices=["cpu", "cuda"])
    compile: bool = option(False, "torch.compile the model")
    compile_mode: str | None = option(None, "torch.compile mode, e.g. reduce-overhead (CUDA graphs) or "
                                         "max-autotune (default: torch's own)")
    seed: int = option(1337, "seed of the initial weights and the batch order")
    loss_chunk: int | None = option(None, "rows per chunk of the memory-lean loss (0: off; default: 8192 on CUDA, "
                                          "off on CPU)")
    attention: str = option("cudnn", "SDPA backend tried first on CUDA (auto: torch's own order)",
                            choices=list(ATTENTION_CHOICES))
    verify_shards: bool = option(False, "check every shard's sha256 and contents, and the run's tokenizer, before "
                                        "training (always checked: totals at open, token ids per batch, sha256 "
                                        "in the background before the first checkpoint)")
    peak_flops: float | None = option(None, "peak FLOP/s for MFU when the device is not in the table "
                                          "(default: the table's figure for a CUDA device; no MFU without one)", min=0)
    stop_after: int | None = option(None, "stop after this step, keeping the schedule of --max-steps "
                                          "(default: run to --max-steps)",
                                    type=positive_int)

    @property
    def train_dir(self) -> Path:
        return Path(self.run) / RUN_TRAINING / (self.name or self.default_name())

    def default_name(self) -> str:
        """The model name, or l{n_layer}-h{n_head}-e{n_embd} when the flags change its shape."""
        base = self.model or DEFAULT_MODEL
        named = MODEL_SHAPES.get(base)
        overrides = {"n_layer": self.n_layer, "n_head": self.n_head, "n_embd": self.n_embd}
        if named is None or all(v is None or v == named[k] for k, v in overrides.items()):
            return base
        shape = {**named, **{k: v for k, v in overrides.items() if v is not None}}
        return f"l{shape['n_layer']}-h{shape['n_head']}-e{shape['n_embd']}"


@dataclass
class TrainResult:
    train_dir: Path
    step: int
    losses: dict[int, float]
    val_losses: dict[int, float]
    last_checkpoint: Path | None
    model: GPT | None = None  # the trained model (unwrapped), on its device


class TrainingStopped(Exception):
    """SIGTERM or SIGINT stopped training at a step boundary, after a checkpoint of that step."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        saved = f"checkpoint {checkpoint} written" if checkpoint else "no checkpoint written (not rank 0)"
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; {saved}; "
                         "the same command with --resume continues from it")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequest:
    """Notes SIGTERM/SIGINT so that the loop stops at the next step boundary (every rank at the same one); a second
    signal stops at once (checkpoints are written atomically, so the last one stays whole)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # where Python delivers signals
            self._previous = {signum: signal.signal(signum, self._note) for signum in self.SIGNALS}

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _note(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} again")
        self.signum = signum
        log.warning("%s received: stopping after this step, with a checkpoint", signal.Signals(signum).name)

    def agreed(self, ctx: Distributed, device: torch.device) -> bool:
        """Whether any rank was asked to stop."""
        if not ctx.enabled:
            return self.signum is not None
        flag = torch.tensor(0.0 if self.signum is None else 1.0, device=device)
        return bool(ctx.mean(flag).item() > 0)


# --------------------------------------------------------------------------------------------
# Pieces


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The lr of optimizer step `step` (1-based): linear warmup reaching the peak at step `warmup` (at step 1
    without warmup), then cosine decay to min_lr_ratio * lr, reached at step max_steps."""
    if step < cfg.warmup:
        return cfg.lr * step / cfg.warmup
    peak_step = max(cfg.warmup, 1)
    progress = min(1.0, max(0.0, (step - peak_step) / max(1, cfg.max_steps - peak_step)))
    min_lr = cfg.lr * cfg.min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS:
        if key in name:
            return flops
    log.warning("no bf16 peak known for %s; MFU not reported (pass --peak-flops)", name)
    return None


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def from_main(self, value):
        """Rank 0's `value` (any picklable object), on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.world_size
        return value


def setup_distributed(device_kind: str) -> Distributed:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    ctx = Distributed(rank=int(os.environ["RANK"]), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                      world_size=world_size)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return ctx


def pick_device(requested: str | None, ctx: Distributed) -> torch.device:
    kind = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for, but torch sees no CUDA device")
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    if kind != "cpu":
        raise ConfigError(f"--device must be cpu or cuda, got {kind!r}")
    return torch.device("cpu")


def enable_fast_math(device: torch.device) -> None:
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls
        torch.backends.cudnn.allow_tf32 = True


def attention_backends(device: torch.device, first: str = "cudnn"):
    """On CUDA, try SDPA's `first` backend before the others (auto: torch's own order); a no-op elsewhere."""
    if first not in ATTENTION_CHOICES:
        raise ConfigError(f"attention must be one of {', '.join(ATTENTION_CHOICES)}, got {first!r}")
    if device.type != "cuda" or first == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION}
    preferred = [order[first]] + [backend for name, backend in order.items() if name != first]
    return sdpa_kernel(preferred + [SDPBackend.MATH], set_priority=True)


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()  # fp32 on CPU


class MetricsLog:
    """log.jsonl (one object per logged step), log.csv, and TensorBoard when it is installed."""

    def __init__(self, train_dir: Path, resume_step: int | None):
        self.jsonl = train_dir / "log.jsonl"
        self.csv = train_dir / "log.csv"
        if resume_step is None:
            for path in (self.jsonl, self.csv):
                path.unlink(missing_ok=True)
        else:
            self._truncate_after(resume_step)
        self.tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            pass
        else:
            # after a resume, TensorBoard hides the earlier run's events from the resumed step on
            self.tensorboard = SummaryWriter(str(train_dir / "tensorboard"),
                                             purge_step=None if resume_step is None else resume_step + 1)

    def _truncate_after(self, step: int) -> None:
        """Drop records of steps after the checkpoint we resume from: the resumed run writes them again."""
        kept = []
        if self.jsonl.exists():
            for line in self.jsonl.read_text(encoding="utf-8").splitlines():
                if line.strip() and json.loads(line)["step"] <= step:
                    kept.append(json.loads(line))
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        with open(self.csv, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)

    def write(self, record: dict) -> None:
        with open(self.jsonl, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        new_csv = not self.csv.exists() or self.csv.stat().st_size == 0
        with open(self.csv, "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS, extrasaction="ignore")
            if new_csv:
                writer.writeheader()
            writer.writerow(record)
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


@torch.no_grad()
def evaluate(model: torch.nn.Module, index: WindowIndex, micro_batch: int, max_batches: int | None,
             device: torch.device, ctx: Distributed, attention: str = "cudnn") -> float:
    """Mean loss over a fixed set of validation windows, averaged over ranks."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device)
    batches = eval_window_ids(index, micro_batch, max_batches, ctx.rank, ctx.world_size)
    for window_ids in batches:
        rows = torch.from_numpy(index.gather(window_ids)).to(device)
        with autocast(device), attention_backends(device, attention):
            _, loss = model(rows[:, :-1], rows[:, 1:])
        total += loss.float()
    model.train(was_training)
    return ctx.mean(total / len(batches)).item()


def optimizer_step(model: torch.nn.Module, raw_model: GPT, optimizer: torch.optim.Optimizer, loader,
                   accum: int, device: torch.device, ctx: Distributed, grad_clip: float,
                   attention: str = "cudnn") -> tuple[torch.Tensor, torch.Tensor]:
    """One update: `accum` micro-batches (gradients synced across ranks on the last only), clip, step.
    grad_clip <= 0 turns clipping off. Returns the summed micro-batch losses and the gradient norm
    (before clipping), as tensors (no host sync)."""
    ddp = getattr(model, "_orig_mod", model)  # under torch.compile, the DDP module it wraps
    loss_sum = torch.zeros((), device=device)
    for micro in range(accum):
        x, y = loader.next()
        if ctx.enabled:
            ddp.require_backward_grad_sync = micro == accum - 1
        with autocast(device), attention_backends(device, attention):
            _, loss = model(x, y)
        (loss / accum).backward()
        loss_sum += loss.detach().float()
    grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm


# --------------------------------------------------------------------------------------------
# Setup


def resolve_model_config(cfg: TrainConfig, manifest: Manifest, stored: GPTConfig | None, source: str) -> GPTConfig:
    """The model shape: from the checkpoint when resuming or initialising (refusing conflicting flags), else from flags."""
    requested = {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd, "block_size": cfg.block_size}
    if stored is None:
        return named_config(cfg.model or DEFAULT_MODEL, vocab_size=manifest.vocab_size, **requested)
    if cfg.model is not None:  # the named shape, with explicit flags taking precedence
        named_config(cfg.model)  # refuses unknown names
        requested = {**MODEL_SHAPES[cfg.model], **{k: v for k, v in requested.items() if v is not None}}
    conflicts = [f"{key}={value} (checkpoint has {getattr(stored, key)})"
                 for key, value in requested.items() if value is not None and getattr(stored, key) != value]
    if conflicts:
        raise ckpt.CheckpointError(f"{source}: the checkpoint is from another model config; refusing "
                                   + ", ".join(conflicts))
    if stored.vocab_size != manifest.vocab_size:
        raise ckpt.CheckpointError(f"{source}: the checkpoint has vocab_size {stored.vocab_size}, "
                                   f"the shards {manifest.vocab_size}")
    return stored


def accumulation_steps(cfg: TrainConfig, block_size: int, world_size: int) -> int:
    per_micro_step = cfg.micro_batch * block_size * world_size
    batch_tokens = cfg.batch_tokens or per_micro_step
    if batch_tokens % per_micro_step:
        raise ConfigError(f"--batch-tokens {batch_tokens} is not a multiple of micro_batch x block_size x ranks "
                          f"= {cfg.micro_batch} x {block_size} x {world_size} = {per_micro_step}")
    return batch_tokens // per_micro_step


def copy_tokenizer(run: Path, train_dir: Path) -> None:
    source = run / RUN_TOKENIZER
    if source.is_file():
        shutil.copyfile(source, train_dir / "tokenizer.json")


# --------------------------------------------------------------------------------------------
# The loop


def train(cfg: TrainConfig) -> TrainResult:
    device_kind = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ctx = setup_distributed(device_kind)
    try:
        return _train(cfg, ctx, pick_device(cfg.device, ctx))
    finally:
        if ctx.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, ctx: Distributed, device: torch.device) -> TrainResult:
    enable_fast_math(device)
    attention_backends(device, cfg.attention)  # refuses an unknown choice before anything is read
    if cfg.keep < 1 or cfg.warmup < 0:
        raise ConfigError(f"keep must be at least 1 and warmup at least 0, got keep={cfg.keep} warmup={cfg.warmup}")
    if cfg.model is not None:
        named_config(cfg.model)  # an unknown name fails before anything is read or written
    if "://" in str(cfg.run):
        raise ConfigError(f"{cfg.run}: training reads a local run directory (the shards are memory-mapped); copy "
                          f"RUN/shards and RUN/tokenizer first, e.g. gsutil -m cp -r {cfg.run}/shards {cfg.run}/tokenizer "
                          "run/, then train on run/")
    run = Path(cfg.run)
    manifest = Manifest.load(run / RUN_SHARDS)
    if cfg.verify_shards:  # rank 0 reads the shards; every rank fails with its message, none waits at a barrier
        problem = None
        if ctx.is_main:
            tokenizer = run / RUN_TOKENIZER
            try:
                verify(manifest, splits=["train"], tokenizer_sha256=sha256_file(tokenizer) if tokenizer.is_file() else None)
            except ShardFormatError as error:
                problem = str(error)
        problem = ctx.from_main(problem)
        if problem is not None:
            raise ShardFormatError(problem)
    train_dir = cfg.train_dir
    with training_lock(train_dir, ctx):
        return _train_in(cfg, ctx, device, run, manifest, train_dir)


@contextlib.contextmanager
def training_lock(train_dir: Path, ctx: Distributed):
    """One writer per training directory: rank 0 holds TRAIN_DIR/_LOCK; when another process has it, every rank fails."""
    lock = DirLock(train_dir / LOCK_NAME, f"the training directory {train_dir.name}")
    problem = None
    if ctx.is_main:
        try:
            lock.acquire()
        except LockHeld as error:
            problem = str(error)
    problem = ctx.from_main(problem)
    if problem is not None:
        raise LockHeld(problem)
    try:
        yield
    finally:
        lock.release()


def _train_in(cfg: TrainConfig, ctx: Distributed, device: torch.device, run: Path, manifest: Manifest,
              train_dir: Path) -> TrainResult:
    if ctx.is_main:
        ckpt.remove_stale_temps(train_dir)
    ctx.barrier()

    existing = ckpt.list_checkpoints(train_dir)
    if cfg.resume and not existing:
        raise ckpt.CheckpointError(f"--resume: no checkpoint in {train_dir} to resume from; "
                                   "leave out --resume to start a new run")
    if existing and not cfg.resume:
        raise ckpt.CheckpointError(f"{train_dir} already holds checkpoints (latest {existing[-1].name}); "
                                   "pass --resume to continue that run, or --name NAME to start a new one")
    resume_from = existing[-1] if cfg.resume else None
    source = resume_from or (ckpt.resolve_checkpoint(cfg.init_from) if cfg.init_from else None)
    stored = ckpt.checkpoint_config(source) if source else None
    model_config = resolve_model_config(cfg, manifest, stored, str(source))
    if source is not None:
        meta = ckpt.read_meta(source)
        stored_tokenizer = meta.get("tokenizer_sha256")
        if stored_tokenizer and stored_tokenizer != manifest.tokenizer_sha256:
            raise ckpt.CheckpointError(f"{source}: trained with tokenizer {stored_tokenizer[:12]}…, "
                                       f"the shards use {manifest.tokenizer_sha256[:12]}…")

    torch.manual_seed(cfg.seed)
    model = GPT(model_config)
    if source is not None:
        ckpt.load_weights(model, source)
    model.to(device)
    model.loss_chunk_rows = cfg.loss_chunk if cfg.loss_chunk is not None else (8192 if device.type == "cuda" else 0)
    model.loss_chunk_compiled = device.type == "cuda"  # eager, each chunk would be ~10 passes over its logits
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=device.type == "cuda")

    start_step, loader_state, best_val = 0, LoaderState(seed=cfg.seed), None
    if resume_from is not None:
        optimizer_state, trainer_state = ckpt.load_training_state(resume_from, map_location=device)
        optimizer.load_state_dict(optimizer_state)
        start_step = int(trainer_state["step"])
        loader_state = LoaderState.from_dict(trainer_state["loader"])
        ckpt.RngState.restore(trainer_state["rng"])
        best_val = trainer_state.get("best_val_loss")
        log.info("resuming from %s (step %d)", resume_from, start_step)

    block_size = model_config.block_size
    accum = accumulation_steps(cfg, block_size, ctx.world_size)
    checksums = not cfg.verify_shards  # verified in full above otherwise
    train_index = open_windows(manifest, "train", block_size, ctx.rank, ctx.world_size, checksums)
    val_index = open_windows(manifest, "val", block_size, ctx.rank, ctx.world_size, checksums) \
        if manifest.split("val") else None
    batches = TrainBatches(train_index, cfg.micro_batch, ctx.rank, ctx.world_size, state=loader_state)
    loader = PrefetchingLoader(batches, device)

    raw_model = model
    if ctx.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model, mode=cfg.compile_mode)
    flops_per_step = raw_model.flops_per_token(block_size) * cfg.micro_batch * block_size * accum * ctx.world_size
    peak = peak_flops(device, cfg.peak_flops)
    tokens_per_step = cfg.micro_batch * block_size * accum * ctx.world_size

    metrics = None
    if ctx.is_main:
        train_dir.mkdir(parents=True, exist_ok=True)
        copy_tokenizer(run, train_dir)
        (train_dir / "config.json").write_text(json.dumps(
            {"train": asdict(cfg), "model": model_config.to_dict(), "world_size": ctx.world_size,
             "accumulation_steps": accum, "tokens_per_step": tokens_per_step}, indent=2) + "\n")
        metrics = MetricsLog(train_dir, start_step if resume_from is not None else None)
        log.info("model %s: %.2fM parameters; %d tokens per step (%d micro-batches of %d x %d on %d ranks)",
                 cfg.model or "custom", raw_model.num_parameters() / 1e6, tokens_per_step, accum,
                 cfg.micro_batch, block_size, ctx.world_size)

    def save(step: int, val_loss: float | None) -> Path | None:
        for index in (train_index, val_index):  # no checkpoint of training on shards whose sha256 is wrong
            if index is not None:
                index.confirm()
        path = None
        if ctx.is_main:
            state = {"step": step, "loader": loader.state_dict(), "rng": ckpt.RngState.capture().to_dict(),
                     "best_val_loss": best_val}
            meta = {"val_loss": val_loss, "tokenizer_sha256": manifest.tokenizer_sha256, "eot_id": manifest.eot_id,
                    "run": str(run.resolve()),
                    "train": asdict(cfg), "tokens": step * tokens_per_step}
            path = ckpt.save_checkpoint(train_dir, step, raw_model, meta, optimizer, state)
            ckpt.prune_checkpoints(train_dir, cfg.keep)
            log.info("checkpoint %s", path)
        ctx.barrier()
        return path

    losses, val_losses, last_checkpoint = {}, {}, None
    end_step = cfg.max_steps if cfg.stop_after is None else min(cfg.max_steps, cfg.stop_after)
    model.train()
    started, interval_start, interval_steps = time.time(), time.time(), 0
    stop = StopRequest()
    try:
        stop.install()
        for step in range(start_step + 1, end_step + 1):
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum, grad_norm = optimizer_step(model, raw_model, optimizer, loader, accum, device, ctx, cfg.grad_clip,
                                                 cfg.attention)
            interval_steps += 1

            stopping = stop.agreed(ctx, device)
            checkpoint_due = step % cfg.ckpt_every == 0 or step == end_step or stopping
            eval_due = val_index is not None and not stopping and (step % cfg.eval_every == 0 or checkpoint_due)
            if not (step % cfg.log_every == 0 or eval_due or checkpoint_due):
                continue
            step_loss = ctx.mean(loss_sum / accum).item()
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.time() - interval_start  # the training steps only: eval and save come after
            val_loss = evaluate(raw_model, val_index, cfg.micro_batch, cfg.eval_batches, device, ctx,
                                cfg.attention) if eval_due else None
            losses[step] = step_loss
            tokens_per_s = tokens_per_step * interval_steps / elapsed
            record = {"step": step, "loss": step_loss, "lr": lr, "grad_norm": float(grad_norm),
                      "tokens_per_s": tokens_per_s,
                      "mfu": flops_per_step * interval_steps / elapsed / peak if peak else None,
                      "tokens": step * tokens_per_step, "elapsed_s": time.time() - started}
            if val_loss is not None:
                record["val_loss"] = val_loss
                val_losses[step] = val_loss
            if metrics is not None:
                metrics.write(record)
                log.info("step %d loss %.4f%s lr %.2e grad %.2f %.0f tok/s%s", step, step_loss,
                         f" val {val_loss:.4f}" if val_loss is not None else "", lr, float(grad_norm),
                         tokens_per_s, f" mfu {record['mfu']:.1%}" if record["mfu"] else "")
            if val_loss is not None and (best_val is None or val_loss < best_val):
                best_val = val_loss
            if checkpoint_due:
                last_checkpoint = save(step, val_loss) or last_checkpoint
            if stopping:
                raise TrainingStopped(stop.signum or signal.SIGTERM, step, last_checkpoint if ctx.is_main else None)
            interval_start, interval_steps = time.time(), 0
    finally:
        stop.restore()
        loader.close()
        if metrics is not None:
            metrics.close()
    return TrainResult(train_dir=train_dir, step=max(start_step, end_step), losses=losses,
                       val_losses=val_losses, last_checkpoint=last_checkpoint, model=raw_model)
