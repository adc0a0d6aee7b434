"""Training throughput of our GPT-2 trainer against transformers' GPT2LMHeadModel, and checks of the CUDA paths.

On a GPU machine, one call does everything (logs and JSON under $OUT, a table at the end):
    bash benchmarks/gpu_session.sh
The pieces:
    python benchmarks/train_gpu.py --check                  CUDA paths against references (transformers, eager, fp32)
    python benchmarks/train_gpu.py --sweep --budget-s 360   configurations in priority order, each in a fresh process
    python benchmarks/train_gpu.py --system ours --batch-size 32 [--compile-mode M] [--attention A] [--loss-chunk N]
    python benchmarks/train_gpu.py --sweep --smoke          a tiny CPU sweep: checks that the script works

Every configuration trains GPT-2 124M at T=1024 on the same batches from our loader (RUN/shards with --run, else a
synthetic shard of random tokens): bf16 autocast, fused AdamW, gradient clipping, torch.compile unless the mode is
"none". Throughput is timed over whole groups of steps (one synchronisation per group), median of the groups.
Needs torch, numpy, pyarrow and safetensors; transformers for the baseline.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_loader import write_synthetic  # noqa: E402

from webtext.train import shard_format  # noqa: E402
from webtext.train.data import PrefetchingLoader, TrainBatches, WindowIndex, open_split  # noqa: E402
from webtext.train.model import GPT, GPTConfig, named_config, parameter_groups  # noqa: E402
from webtext.train.trainer import (Distributed, attention_backends, autocast, enable_fast_math,  # noqa: E402
                                   optimizer_step, peak_flops)

VOCAB_SIZE = 50257


@dataclass(frozen=True)
class Spec:
    """One configuration to time."""
    system: str  # ours | transformers
    batch_size: int = 32
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune-no-cudagraphs | max-autotune | none
    attention: str = "cudnn"  # the SDPA backend tried first: cudnn | flash | efficient | auto
    loss_chunk: int = 8192  # ours: rows per loss chunk (0: the plain loss inside the compiled graph)
    loss_chunk_compiled: bool = True  # ours: each chunk's arithmetic as one compiled graph

    @property
    def label(self) -> str:
        parts = [self.system, f"B={self.batch_size}", f"compile={self.compile_mode}", f"attn={self.attention}"]
        if self.system == "ours":
            parts.append(f"loss={'plain' if self.loss_chunk == 0 else f'chunk{self.loss_chunk}'}"
                         + ("" if self.loss_chunk == 0 or self.loss_chunk_compiled else "-eager"))
        return " ".join(parts)


@dataclass
class Result:
    spec: dict
    label: str
    tokens_per_s: float | None = None
    tokens_per_s_groups: list[float] = field(default_factory=list)
    step_ms: float | None = None
    mfu: float | None = None
    peak_memory_gib: float | None = None
    first_step_s: float | None = None  # includes compilation
    final_loss: float | None = None
    wall_s: float | None = None
    note: str = ""


# --------------------------------------------------------------------------------------------
# Data and models


def synthetic_run(root: Path, vocab_size: int, tokens: int) -> Path:
    """A run whose train split is random tokens (train_loader's synthetic shards), for machines without a run."""
    (root / shard_format.RUN_SHARDS).mkdir(parents=True)
    write_synthetic(root / shard_format.RUN_SHARDS, tokens, vocab_size)
    return root


class HFAdapter(torch.nn.Module):
    """transformers' GPT2LMHeadModel behind our (x, y) -> (None, loss) interface; same inputs, same loss."""

    def __init__(self, hf_model):
        super().__init__()
        self.hf = hf_model

    def forward(self, x, y):
        logits = self.hf(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        return None, loss


def build_hf(config: GPTConfig, device):
    import transformers

    hf_config = transformers.GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size,
                                        n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
                                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                        use_cache=False)  # training: no KV cache objects (the stronger baseline)
    hf_config._attn_implementation = "sdpa"
    return HFAdapter(transformers.GPT2LMHeadModel(hf_config)).to(device)


def build(spec: Spec, config: GPTConfig, device) -> torch.nn.Module:
    if spec.system == "transformers":
        return build_hf(config, device)
    model = GPT(config).to(device)
    model.loss_chunk_rows = spec.loss_chunk
    model.loss_chunk_compiled = spec.loss_chunk_compiled and spec.loss_chunk > 0
    return model


# --------------------------------------------------------------------------------------------
# One configuration


def measure(spec: Spec, config: GPTConfig, index: WindowIndex, device: torch.device, groups: int, group_steps: int,
            warmup_steps: int, peak: float | None) -> Result:
    result = Result(spec=asdict(spec), label=spec.label)
    started = time.perf_counter()
    torch.manual_seed(0)
    model = build(spec, config, device)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95),
                                  fused=device.type == "cuda")
    runner = model if spec.compile_mode == "none" else torch.compile(
        model, mode=None if spec.compile_mode == "default" else spec.compile_mode)
    loader = PrefetchingLoader(TrainBatches(index, spec.batch_size, seed=0), device)
    ctx = Distributed()

    def step():
        loss, _ = optimizer_step(runner, model, optimizer, loader, 1, device, ctx, 1.0, spec.attention)
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        sync()
        first = time.perf_counter()
        step().item()
        result.first_step_s = time.perf_counter() - first
        for _ in range(warmup_steps - 1):
            step()
        sync()
        tokens_per_group = spec.batch_size * config.block_size * group_steps
        for _ in range(groups):
            sync()
            group_start = time.perf_counter()
            for _ in range(group_steps):
                loss = step()
            sync()
            result.tokens_per_s_groups.append(tokens_per_group / (time.perf_counter() - group_start))
        result.final_loss = float(loss)
    except torch.cuda.OutOfMemoryError:
        result.note = "out of memory"
        return result
    finally:
        loader.close()
        result.wall_s = time.perf_counter() - started
    result.tokens_per_s = statistics.median(result.tokens_per_s_groups)
    result.step_ms = spec.batch_size * config.block_size / result.tokens_per_s * 1000
    result.mfu = result.tokens_per_s * flops_per_token(config) / peak if peak else None
    if device.type == "cuda":
        result.peak_memory_gib = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def flops_per_token(config: GPTConfig) -> float:
    """Our count of training FLOPs per token, for both systems (same architecture); no weights are allocated."""
    with torch.device("meta"):
        return GPT(config).flops_per_token(config.block_size)


# --------------------------------------------------------------------------------------------
# Environment figures


def machine_figures(device: torch.device) -> dict:
    figures = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None}
    try:
        import transformers
        figures["transformers"] = transformers.__version__
    except ImportError:
        figures["transformers"] = None
    if device.type != "cuda":
        return figures
    figures["multiprocessors"] = torch.cuda.get_device_properties(device).multi_processor_count
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(20):
        a @ b
    end.record()
    torch.cuda.synchronize()
    figures["measured_bf16_matmul_tflops"] = 20 * 2 * 8192**3 / (begin.elapsed_time(end) / 1000) / 1e12
    big = torch.empty(2**30, dtype=torch.uint8, device=device).random_()
    copy = torch.empty_like(big)
    copy.copy_(big)
    torch.cuda.synchronize()
    begin.record()
    for _ in range(10):
        copy.copy_(big)
    end.record()
    torch.cuda.synchronize()
    figures["measured_copy_tb_per_s"] = 10 * 2 * 2**30 / (begin.elapsed_time(end) / 1000) / 1e12  # read + write
    del a, b, big, copy
    torch.cuda.empty_cache()
    return figures


def loader_rate(index: WindowIndex, batch_size: int, device: torch.device, seconds: float = 3.0) -> float:
    """Tokens/s our prefetching loader hands to the device (pinned copies included), nothing else running."""
    loader = PrefetchingLoader(TrainBatches(index, batch_size, seed=1), device)
    try:
        loader.next()
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            x, _ = loader.next()
            count += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return count * x.numel() / (time.perf_counter() - started)
    finally:
        loader.close()


# --------------------------------------------------------------------------------------------
# The sweep: configurations in priority order, each in a fresh process, within a time budget


def sweep_plan(batch_sizes: list[int], main_batch: int, smoke: bool):
    """Yields specs in priority order; the driver sends back the fastest 'ours' spec so far (or None)."""
    if smoke:
        yield Spec("transformers", main_batch, compile_mode="none", attention="auto")
        yield Spec("ours", main_batch, compile_mode="none")
        best = (yield Spec("ours", main_batch, compile_mode="none", loss_chunk=0)) or Spec("ours", main_batch)
        for batch in batch_sizes:
            if batch != main_batch:
                yield _with(best, batch_size=batch, compile_mode="none")
        return
    hf = Spec("transformers", main_batch, attention="auto")  # HF as users run it: SDPA in torch's own order
    default = Spec("ours", main_batch)  # the trainer's defaults on CUDA
    yield hf
    yield default
    best = (yield _with(default, loss_chunk=0)) or default  # the largest predicted difference: the loss
    for batch in batch_sizes:  # the batch sizes next, then the smaller effects
        if batch != main_batch:
            yield _with(hf, batch_size=batch)
            yield _with(best, batch_size=batch)
    best = (yield _with(best, attention="flash")) or best
    best = (yield _with(best, compile_mode="reduce-overhead")) or best
    best = (yield _with(best, compile_mode="max-autotune-no-cudagraphs")) or best
    best = (yield _with(best, loss_chunk=2048 if best.loss_chunk else 8192)) or best
    yield _with(hf, attention="cudnn")
    yield _with(best, compile_mode="none")


def _with(spec: Spec, **changes) -> Spec:
    return Spec(**{**asdict(spec), **changes})


def estimated_seconds(spec: Spec) -> float:
    if spec.compile_mode == "none":
        return 25
    return 240 if spec.compile_mode.startswith("max-autotune") else 90


def run_sweep(args, run: Path, device: torch.device, out_json: Path | None) -> list[Result]:
    deadline = time.monotonic() + args.budget_s
    report = {"machine": machine_figures(device), "command": " ".join(sys.argv), "results": []}
    manifest = shard_format.Manifest.load(run / shard_format.RUN_SHARDS)
    index = WindowIndex(open_split(manifest, "train"), args.block_size)
    report["loader_tokens_per_s"] = loader_rate(index, args.main_batch, device, seconds=1.0 if args.smoke else 3.0)
    print(f"# {json.dumps(report['machine'])}", flush=True)
    print(f"# loader alone: {report['loader_tokens_per_s']:,.0f} tokens/s to {device.type} at B={args.main_batch}",
          flush=True)
    plan = sweep_plan(args.batch_sizes, args.main_batch, args.smoke)
    results: list[Result] = []
    best: Spec | None = None
    best_rate = 0.0
    spec = next(plan)
    while True:
        remaining = deadline - time.monotonic()
        if remaining < estimated_seconds(spec) * (0.2 if args.smoke else 1.0):
            print(f"# skipped (budget): {spec.label}", flush=True)
        else:
            result = run_child(spec, args, run, timeout=remaining)
            results.append(result)
            report["results"] = [asdict(r) for r in results]
            if out_json:
                out_json.write_text(json.dumps(report, indent=2))
            print(format_row(result), flush=True)
            if spec.system == "ours" and result.tokens_per_s and spec.batch_size == args.main_batch \
                    and result.tokens_per_s > best_rate:
                best, best_rate = spec, result.tokens_per_s
        try:
            spec = plan.send(best)
        except StopIteration:
            break
    print_summary(results, args.main_batch)
    return results


def run_child(spec: Spec, args, run: Path, timeout: float) -> Result:
    command = [sys.executable, __file__, "--one", json.dumps(asdict(spec)), "--run", str(run),
               "--block-size", str(args.block_size), "--model", args.model, "--groups", str(args.groups),
               "--group-steps", str(args.group_steps), "--warmup-steps", str(args.warmup_steps)]
    if args.device:
        command += ["--device", args.device]
    if args.peak_flops:
        command += ["--peak-flops", str(args.peak_flops)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        _keep_log(args, spec, expired.stderr or "")
        return Result(spec=asdict(spec), label=spec.label, note=f"timed out after {timeout:.0f} s")
    _keep_log(args, spec, done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return Result(spec=asdict(spec), label=spec.label, note=f"failed (exit {done.returncode}): {tail[-400:]}")
    return Result(**json.loads(lines[-1]))


def _keep_log(args, spec: Spec, stderr) -> None:
    if args.child_log:
        text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
        with open(args.child_log, "a", encoding="utf-8") as handle:
            handle.write(f"===== {spec.label}\n{text}\n")


def format_row(result: Result) -> str:
    rate = f"{result.tokens_per_s:,.0f}" if result.tokens_per_s else "-"
    spread = (f"{min(result.tokens_per_s_groups):,.0f}-{max(result.tokens_per_s_groups):,.0f}"
              if result.tokens_per_s_groups else "")
    mfu = f"{result.mfu:.1%}" if result.mfu else "-"
    memory = f"{result.peak_memory_gib:.1f} GiB" if result.peak_memory_gib else "-"
    first = f"{result.first_step_s:.0f} s" if result.first_step_s is not None else "-"
    loss = f"{result.final_loss:.3f}" if result.final_loss is not None else "-"
    return (f"{result.label:<70} {rate:>10} tok/s ({spread})  MFU {mfu:>6}  mem {memory:>9}  "
            f"first step {first:>5}  loss {loss}  {result.note}")


def print_summary(results: list[Result], main_batch: int) -> None:
    print("\n# tokens/s by configuration (median of timed groups)")
    for result in results:
        print(format_row(result))
    baselines = {r.spec["batch_size"]: r for r in results
                 if r.spec["system"] == "transformers" and r.spec["attention"] == "auto" and r.tokens_per_s}
    for batch, baseline in sorted(baselines.items()):
        ours = [r for r in results if r.spec["system"] == "ours" and r.spec["batch_size"] == batch and r.tokens_per_s]
        if ours:
            fastest = max(ours, key=lambda r: r.tokens_per_s)
            print(f"B={batch}: fastest ours / transformers = {fastest.tokens_per_s / baseline.tokens_per_s:.2f}x "
                  f"({fastest.label})")


# --------------------------------------------------------------------------------------------
# Checks of the CUDA paths


def rel_err(value: torch.Tensor, reference: torch.Tensor) -> float:
    value, reference = value.double(), reference.double()
    return float((value - reference).norm() / reference.norm().clamp(min=1e-30))


def run_checks(args, device: torch.device) -> int:
    """Correctness of what the sweep times, on this device; prints one line per check, returns the failures."""
    failures = 0

    def report(name: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)

    small = args.smoke
    config = named_config("tiny" if small else args.model, vocab_size=VOCAB_SIZE,
                          block_size=64 if small else args.block_size)
    batch, T = (2, 64) if small else (4, config.block_size)
    torch.manual_seed(0)
    ours = GPT(config).to(device)
    idx = torch.randint(0, VOCAB_SIZE, (batch, T), device=device)
    targets = torch.randint(0, VOCAB_SIZE, (batch, T), device=device)

    # 1. fp32 logits against transformers with the same weights (TF32 off for this check)
    try:
        from webtext.train.hf import hf_config, to_hf_state
        import transformers
    except ImportError:
        print("SKIP  transformers logits: transformers is not installed")
    else:
        matmul_precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**hf_config(config, None)))
        missing, unexpected = hf.load_state_dict(to_hf_state(ours), strict=False)
        missing = [name for name in missing if name != "lm_head.weight"]  # tied to the embedding
        hf.tie_weights()
        hf = hf.to(device).eval()
        if missing or unexpected:
            report("fp32 logits vs transformers", False, f"weights do not map: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            reference = hf(input_ids=idx).logits.float()
            mine = ours.logits(ours.hidden_states(idx))
        error = rel_err(mine, reference)
        report("fp32 logits vs transformers", error < 1e-4, f"relative error {error:.2e} (limit 1e-4)")
        torch.set_float32_matmul_precision(matmul_precision)
        enable_fast_math(device)
        del hf

    # 2. bf16 autocast: the plain loss, the eager chunked loss and the compiled chunked loss agree, values and grads
    def loss_and_grads(chunk: int, compiled: bool):
        ours.zero_grad(set_to_none=True)
        ours.loss_chunk_rows, ours.loss_chunk_compiled = chunk, compiled
        with autocast(device), attention_backends(device, "cudnn"):
            _, loss = ours(idx, targets)
        loss.backward()
        return loss.detach().float(), torch.cat([p.grad.flatten().float() for p in ours.parameters()])

    plain_loss, plain_grads = loss_and_grads(0, False)
    for label, chunk, compiled in (("eager chunks", 1000, False), ("compiled chunks", 1000, True)):
        loss, grads = loss_and_grads(chunk, compiled)
        loss_error, grad_error = rel_err(loss, plain_loss), rel_err(grads, plain_grads)
        report(f"{'bf16' if device.type == 'cuda' else 'fp32'} loss, {label} vs plain", loss_error < 1e-2 and grad_error < 3e-2 and bool(torch.isfinite(grads).all()),
               f"loss {loss.item():.4f} vs {plain_loss.item():.4f} (rel {loss_error:.1e}), grads rel {grad_error:.1e}")

    # 3. every SDPA backend this device runs gives the math backend's attention
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        q, k, v = (torch.randn(batch, config.n_head, T, config.head_dim, device=device, dtype=torch.bfloat16)
                   for _ in range(3))
        with sdpa_kernel([SDPBackend.MATH]):
            reference = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
        for name in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
            try:
                with sdpa_kernel([getattr(SDPBackend, name)]):
                    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            except RuntimeError as error:
                print(f"SKIP  attention {name}: not available here ({str(error).splitlines()[0][:120]})")
                continue
            error = rel_err(out.float(), reference)
            report(f"attention {name} vs math (fp32)", error < 2e-2, f"relative error {error:.1e}")

    # 4. greedy decoding with the KV cache equals recomputing the whole prefix each step
    from webtext.train.generate import SamplingConfig, generate

    ours.eval()
    prompt = idx[0, :16].tolist()
    with autocast(device):
        cached = prompt + generate(ours, prompt, SamplingConfig(max_new_tokens=24, temperature=0.0, seed=0,
                                                                stop_at_eot=False))[0]
    with torch.no_grad(), autocast(device):
        ids = torch.tensor([prompt], device=device)
        for _ in range(24):
            logits = ours.logits(ours.hidden_states(ids))[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    recomputed = ids[0].tolist()
    matching = sum(a == b for a, b in zip(cached, recomputed))
    report("KV-cache greedy decoding vs recompute", matching >= len(recomputed) - 4,
           f"{matching}/{len(recomputed)} tokens equal (bf16 may flip a near-tie late)")
    ours.train()

    # 5. the trainer on this device, compiled: stopped at step 3 and resumed, it continues the uninterrupted run
    from webtext.train.trainer import TrainConfig, train

    with tempfile.TemporaryDirectory() as temp:
        run = synthetic_run(Path(temp), VOCAB_SIZE, tokens=200_000)
        settings = dict(run=str(run), model="tiny", block_size=64, micro_batch=4, batch_tokens=2 * 4 * 64,
                        max_steps=6, warmup=2, lr=3e-3, ckpt_every=3, device=device.type, compile=not small,
                        seed=7)
        started = time.perf_counter()
        full = train(TrainConfig(name="full", **settings))
        train(TrainConfig(name="parts", stop_after=3, **settings))
        resumed = train(TrainConfig(name="parts", resume=True, **settings))
        differences = [abs(resumed.losses[step] - full.losses[step]) / full.losses[step] for step in (4, 5, 6)]
        finite = all(math.isfinite(loss) for loss in full.losses.values())
        report("trainer stop at 3 + resume vs uninterrupted", finite and max(differences) < 1e-3,
               f"losses {[round(full.losses[s], 4) for s in (4, 5, 6)]} vs {[round(resumed.losses[s], 4) for s in (4, 5, 6)]}"
               f" (max rel {max(differences):.1e}; bit-equal: {differences == [0.0] * 3}), "
               f"{time.perf_counter() - started:.0f} s with compile={not small}")
    return failures


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a run directory with RUN/shards (default: a synthetic shard)")
    parser.add_argument("--model", default="gpt2")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--batch-sizes", default="16,32,64", help="the sweep's batch sizes")
    parser.add_argument("--main-batch", type=int, default=32, help="the batch size the sweep compares variants at")
    parser.add_argument("--groups", type=int, default=3, help="timed groups of steps per configuration")
    parser.add_argument("--group-steps", type=int, default=10, help="steps per timed group")
    parser.add_argument("--warmup-steps", type=int, default=8, help="untimed steps first (compilation, autotuning)")
    parser.add_argument("--peak-flops", type=float, help="bf16 peak for MFU when the device is not in the table")
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--check", action="store_true", help="check the CUDA paths against references")
    parser.add_argument("--sweep", action="store_true", help="time configurations in priority order")
    parser.add_argument("--budget-s", type=float, default=360, help="the sweep starts no configuration after this")
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the CPU: checks the script works")
    parser.add_argument("--json", help="write the sweep's report (machine figures and results) to this file")
    parser.add_argument("--child-log", help="append each configuration's stderr to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a Spec as JSON: time it and print a Result as JSON
    single = parser.add_argument_group("one configuration (without --sweep)")
    single.add_argument("--system", choices=["ours", "transformers"], default="ours")
    single.add_argument("--batch-size", type=int, default=32)
    single.add_argument("--compile-mode", default="default")
    single.add_argument("--attention", default="cudnn")
    single.add_argument("--loss-chunk", type=int, default=8192)
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.block_size, args.batch_sizes, args.main_batch = "tiny", 64, "2,4", 2
        args.groups, args.group_steps, args.warmup_steps = 2, 2, 1
        args.device = args.device or "cpu"
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",")] if isinstance(args.batch_sizes, str) \
        else args.batch_sizes
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    enable_fast_math(device)

    if args.check:
        failures = run_checks(args, device)
        print(f"# checks: {failures} failed", flush=True)
        return 1 if failures else 0

    with tempfile.TemporaryDirectory() as temp:
        if args.run:
            run = Path(args.run)
        else:
            tokens = max(args.batch_sizes + [args.main_batch, args.batch_size]) * (args.block_size + 1) * 64
            run = synthetic_run(Path(temp), VOCAB_SIZE, tokens)
        if args.sweep:
            run_sweep(args, run, device, Path(args.json) if args.json else None)
            return 0
        manifest = shard_format.Manifest.load(run / shard_format.RUN_SHARDS)
        config = named_config(args.model, vocab_size=manifest.vocab_size, block_size=args.block_size)
        index = WindowIndex(open_split(manifest, "train"), args.block_size)
        if args.one:
            spec = Spec(**json.loads(args.one))
        else:
            spec = Spec(args.system, args.batch_size, args.compile_mode, args.attention, args.loss_chunk)
        result = measure(spec, config, index, device, args.groups, args.group_steps, args.warmup_steps,
                         peak_flops(device, args.peak_flops))
        if args.one:
            print(json.dumps(asdict(result)), flush=True)
        else:
            print(format_row(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
