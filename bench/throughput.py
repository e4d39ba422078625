"""Throughput: fine-tuning samples/s of our loop (`core.run`, method finetune) vs a bare PyTorch loop.

    .venv/bin/python bench/throughput.py [--steps 12] [--repeats 7] [--batch 32] [--threads 1]

Same model (minilm-l6 body, `core.modeling.model.build_model`), same normalised data tensors (from
`core.data.prepare`), same batch size, AdamW at the same lr, cross-entropy, same number of steps.

What is timed:
- ours: `core.run` with `evaluation.validation_fraction: 0`; the clock runs from the first to the
  last `on_progress` callback of the refine stage, i.e. steps 2..N of the loop with everything the
  loop does per step (index a batch, forward, backward, grad-norm clip, AdamW step, LR schedule,
  progress callback, a train-loss point every 10 steps). Model loading, data preparation, the final
  test evaluation and the final checkpoint are outside the clock. The epoch holds exactly N steps,
  so no epoch-end validation or checkpoint falls inside the clock either (checkpoint.every_epochs
  is large; validation is off).
- bare: zero_grad / forward / CE / backward / AdamW step, timed over steps 2..N the same way.
Runs are interleaved (ours, bare, ours, bare, ...); each repeat gives one ratio ours / bare (the two
runs of a repeat share the machine's load of the moment), and the headline is the median of those
per-repeat ratios with their range and every value, so the spread is stated with the ratio.

FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one forward + backward of a batch, divided
by the batch size; achieved FLOP/s = training FLOPs per sample x samples/s, compared with the
measured fp32 matmul rate of this machine at the same thread count (timed in the same run,
before, between and after the loops).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import RESULTS, StageTimer, environment  # noqa: E402


def make_dataset(path: Path, samples: int, channels: int, length: int, seed: int = 0) -> None:
    """One-hot DNA-like (N, C, L) classification data with 2 classes (a small test split for finish())."""
    rng = np.random.default_rng(seed)

    def one_hot(n: int) -> np.ndarray:
        codes = rng.integers(0, channels, size=(n, length))
        return np.eye(channels, dtype=np.float32)[codes].transpose(0, 2, 1).copy()

    np.savez(path, x=one_hot(samples), y=rng.integers(0, 2, samples).astype(np.int64),
             x_test=one_hot(32), y_test=rng.integers(0, 2, 32).astype(np.int64))


def job(args: argparse.Namespace) -> dict:
    return {"method": "finetune", "body": {"name": args.body},
            "embedder": {"target_seq_len": args.seq},
            "training": {"epochs": 1, "batch_size": args.batch, "lr": 1e-4, "seed": 0},
            "evaluation": {"validation_fraction": 0.0},
            "checkpoint": {"every_epochs": 10_000}}


def run_ours(config, data_path: Path) -> tuple[float, int]:
    from core.runner import run

    timer = StageTimer()
    with tempfile.TemporaryDirectory(prefix="xmodal-throughput-") as out:
        result = run(config, data_path, Path(out), callbacks=[timer], device=torch.device("cpu"))
    if result.error is not None:
        raise result.error
    steps, seconds = timer.span("refine")
    return seconds, steps


def build_bare(config, data_path: Path):
    from core.data.prepare import prepare_data
    from core.modeling.model import ModelSpec, build_model

    data = prepare_data(config, data_path)
    spec = ModelSpec(task=data.task, input_shape=data.input_shape, target_shape=data.target_shape,
                     num_classes=data.num_classes)
    torch.manual_seed(config.training.seed)
    model, _ = build_model(config, spec)
    return model, data


def run_bare(config, data_path: Path, steps: int) -> tuple[float, int]:
    model, data = build_bare(config, data_path)
    batch = config.training.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.training.lr,
                                  weight_decay=config.training.weight_decay)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    model.train()
    start = 0.0
    for step in range(steps):
        if step == 1:  # same window as ours: from the end of step 1 to the end of step N
            start = time.perf_counter()
        index = order[step * batch:(step + 1) * batch]
        x, y = data.train.x[index], data.train.y[index]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start, steps - 1


def training_flops_per_sample(config, data_path: Path) -> tuple[float, float]:
    """(forward FLOPs, forward + backward FLOPs) per sample, counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model, data = build_bare(config, data_path)
    batch = config.training.batch_size
    x, y = data.train.x[:batch], data.train.y[:batch]
    with FlopCounterMode(display=False) as counter:
        model(x)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return forward / batch, counter.get_total_flops() / batch


def matmul_rate(n: int = 1024, repeats: int = 5) -> float:
    """Best-of fp32 n x n matmul FLOP/s at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--body", default="minilm-l6")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run (the first is not timed)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved ours/bare pairs (the ratio's spread needs several)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--seq", type=int, default=64, help="embedder.target_seq_len")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 by default: on 2 cores shared with other jobs, 2 threads thrash")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from core.config import parse_config

    config = parse_config(job(args))
    env = environment()
    print(env, flush=True)
    ours, bare, peaks = [], [], [matmul_rate()]
    with tempfile.TemporaryDirectory(prefix="xmodal-throughput-data-") as tmp:
        data_path = Path(tmp) / "train.npz"
        make_dataset(data_path, args.steps * args.batch, args.channels, args.length)
        fwd_flops, train_flops = training_flops_per_sample(config, data_path)
        model, _ = build_bare(config, data_path)
        tokens = model.embedder(torch.zeros(1, args.channels, args.length))[0].shape[1]
        params = sum(p.numel() for p in model.parameters())
        del model
        for repeat in range(args.repeats):
            seconds, steps = run_ours(config, data_path)
            ours.append(steps * args.batch / seconds)
            print(f"repeat {repeat}: ours {ours[-1]:.2f} samples/s ({steps} steps in {seconds:.1f} s)", flush=True)
            seconds, steps = run_bare(config, data_path, args.steps)
            bare.append(steps * args.batch / seconds)
            print(f"repeat {repeat}: bare {bare[-1]:.2f} samples/s ({steps} steps in {seconds:.1f} s)", flush=True)
            peaks.append(matmul_rate())
    pairs = [o / b for o, b in zip(ours, bare)]
    ours_m, bare_m, peak = statistics.median(ours), statistics.median(bare), statistics.median(peaks)
    ratio = statistics.median(pairs)
    quartiles = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else [ratio, ratio, ratio]
    lines = [
        "# Throughput: our fine-tuning loop vs a bare PyTorch loop (CPU)", "",
        f"Command: `.venv/bin/python bench/throughput.py {' '.join(sys.argv[1:])}`  ",
        f"Date: {dt.datetime.now().isoformat(timespec='seconds')}  ",
        f"Environment: {env}", "",
        f"Workload: body {args.body} ({params / 1e6:.1f} M trainable parameters in the model), input "
        f"({args.channels}, {args.length}) one-hot, target_seq_len {args.seq} -> {tokens} tokens, batch {args.batch}, "
        f"{args.steps} optimizer steps per run (steps 2..{args.steps} timed), {args.repeats} interleaved repeats, "
        f"torch threads {args.threads}.", "",
        "| loop | median samples/s | runs (samples/s) |", "|---|---|---|",
        f"| ours (`core.run`, finetune, refine stage only) | {ours_m:.2f} | {', '.join(f'{v:.2f}' for v in ours)} |",
        f"| bare PyTorch (AdamW, CE) | {bare_m:.2f} | {', '.join(f'{v:.2f}' for v in bare)} |", "",
        f"**Ratio ours / bare: median {ratio:.3f}, range {min(pairs):.3f}–{max(pairs):.3f}, interquartile "
        f"{quartiles[0]:.3f}–{quartiles[2]:.3f} over {len(pairs)} repeats** (per repeat "
        f"{', '.join(f'{r:.3f}' for r in pairs)}; ratio of the median rates {ours_m / bare_m:.3f}; "
        f"target >= 0.95).", "",
        "## FLOPs", "",
        f"- forward FLOPs per sample (FlopCounterMode): {fwd_flops / 1e9:.3f} GFLOP; forward + backward: "
        f"{train_flops / 1e9:.3f} GFLOP (ratio {train_flops / fwd_flops:.2f})",
        f"- measured fp32 matmul rate (1024^3, {args.threads} thread(s), median of {len(peaks)} measurements "
        f"taken before/between/after the loops): {peak / 1e9:.1f} GFLOP/s "
        f"(all: {', '.join(f'{p / 1e9:.1f}' for p in peaks)})",
        f"- achieved: ours {ours_m * train_flops / 1e9:.1f} GFLOP/s = {ours_m * train_flops / peak:.0%} of the "
        f"matmul rate; bare {bare_m * train_flops / 1e9:.1f} GFLOP/s = {bare_m * train_flops / peak:.0%}", "",
        "Counted FLOPs are matmul-type ops only (FlopCounterMode ignores elementwise ops, softmax, "
        "LayerNorm, the optimizer step), so the achieved figure understates the work done.", "",
        "What ours does on top of bare, per step: grad-norm clip over all parameters, LambdaLR step, the "
        "progress callback (a few Python calls), a running-loss add, and one `.item()` sync every 10 steps.",
    ]
    path = RESULTS / "throughput.md"
    notes = RESULTS / "throughput_notes.md"
    if notes.exists():
        lines += ["", notes.read_text()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[8:]))
    print(path)


if __name__ == "__main__":
    main()
