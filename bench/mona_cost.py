"""Cost of one MoNA stage-1 iteration per variant: wall time and peak memory, side by side.

    .venv/bin/python bench/mona_cost.py [--bodies minilm-l6,tiny-bert] [--iterations 3] [--threads 1]

Each (body, variant) runs in its own process so peaks do not mix. Time: mean over `--iterations`
meta-gradient computations after one warm-up. Memory: on CPU, the peak resident set during those
iterations minus the resident set just before them (Linux VmHWM, reset through
/proc/self/clear_refs); on CUDA, torch.cuda.max_memory_allocated minus the memory allocated before;
both over the warm-up and the timed iterations.
`plain` is one forward/backward of the task loss on the same batch, for scale.
Writes bench/results/mona_cost.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = (("plain", 0), ("first_order", 0), ("second_order", 0), ("last_k_layers", 1), ("last_k_layers", 2))


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(body_name: str, variant: str, last_k: int, args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from core.components.meta import meta_gradient, sample_source_batch, source_batch
    from core.proxies.bank import load_source_tokens
    from core.config import TaskType, parse_config
    from core.modeling.model import ModelSpec, build_model

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = parse_config({"method": "mona", "body": {"name": body_name}, "embedder": {"target_seq_len": args.tokens}})
    model, body = build_model(config, ModelSpec(TaskType.classification, (1, args.length), (), 10))
    model.to(device).eval()
    body.source_embedding.to(device)
    bank = load_source_tokens("wordnet", body, 1000, args.tokens, 64, device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 1, args.length, generator=generator).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=generator).to(device)
    index = sample_source_batch(bank.labels, args.source_batch, generator)
    source = source_batch(bank, body, index, device)
    labels = bank.labels[index].to(device)

    def once() -> None:
        if variant == "plain":
            F.cross_entropy(model(x), y).backward()
            model.zero_grad(set_to_none=True)
            return
        meta_gradient(model, body, x, y, F.cross_entropy, source, labels, inner_lr=1e-3, outer_weight=1.0,
                      variant=variant, last_k=last_k or 1)

    if device.type == "cuda":  # the peak covers the warm-up too: pools kept from it would hide it
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set
        base = _rss_kib("VmRSS") * 1024
    once()  # warm-up: allocator pools, lazy inits
    start = time.perf_counter()
    for _ in range(args.iterations):
        once()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.iterations
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _rss_kib("VmHWM") * 1024
    layers = getattr(body.model.config, "num_hidden_layers", None)
    params = sum(p.numel() for p in body.model.parameters())
    return {"seconds": seconds, "peak_mib": (peak - base) / 2**20, "layers": layers, "body_params": params,
            "source_tokens": int(source[0].shape[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bodies", default="minilm-l6,tiny-bert")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16, help="target batch")
    parser.add_argument("--source-batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=256, help="1D target length")
    parser.add_argument("--tokens", type=int, default=64, help="target tokens (embedder.target_seq_len)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "mona_cost.md"))
    parser.add_argument("--worker", nargs=3, metavar=("BODY", "VARIANT", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], int(args.worker[2]), args)))
        return
    rows = []
    for body_name in args.bodies.split(","):
        for variant, k in VARIANTS:
            command = [sys.executable, __file__, "--worker", body_name, variant, str(k),
                       *[f"--{name.replace('_', '-')}={getattr(args, name)}" for name in
                         ("device", "iterations", "threads", "batch", "source_batch", "length", "tokens")]]
            env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
            done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
            if done.returncode:
                raise SystemExit(f"{body_name} {variant}: {done.stderr[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            name = f"{variant} (k={k})" if k else variant
            rows.append((body_name, name, result))
            print(f"{body_name:10s} {name:22s} {result['seconds']:8.3f} s {result['peak_mib']:9.1f} MiB", flush=True)
    lines = ["# MoNA stage-1 cost per iteration", "",
             f"`.venv/bin/python bench/mona_cost.py --bodies {args.bodies} --device {args.device} "
             f"--iterations {args.iterations} --threads {args.threads}`", "",
             f"Device {args.device} ({platform.processor() or platform.machine()}, {args.threads} thread(s), "
             f"{os.cpu_count()} cores visible, shared with other work); target batch {args.batch} x (1, {args.length}) "
             f"-> {args.tokens} tokens; source batch {args.source_batch} WordNet glosses "
             f"(cut to the longest in the batch); 1 warm-up, mean of {args.iterations} iterations. "
             "Memory: peak above the level before the first iteration (CPU: resident set; CUDA: allocated).", "",
             "| body | layers | variant | s / iteration | x plain | peak MiB | x plain |",
             "|---|---|---|---|---|---|---|"]
    plain = {body: r for body, name, r in rows if name == "plain"}
    for body_name, name, r in rows:
        p = plain[body_name]
        lines.append(f"| {body_name} | {r['layers']} | {name} | {r['seconds']:.3f} | {r['seconds'] / p['seconds']:.1f} "
                     f"| {r['peak_mib']:.1f} | {r['peak_mib'] / max(p['peak_mib'], 1e-9):.1f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
