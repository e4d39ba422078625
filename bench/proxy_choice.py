"""What `alignment.proxy: auto` measures on real rows: every candidate's OTDD, the choice, the seconds.

    OMP_NUM_THREADS=1 .venv/bin/python bench/proxy_choice.py DATA.npz [DATA.npz ...] [--body minilm-l6]
        [--model-root DIR] [--seed 0] [--tokens 64] [--threads 1]

For each dataset: an ORCA run is built (body, embedder, data) as a job would build it, and the
proxy choice runs once, as the first stage does. Each dataset is measured twice in a fresh cache
directory: `cold` embeds and caches the proxy feature banks, `warm` reads them back (the cost on a
worker that has seen the body before). Prints one JSON line per (dataset, pass).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def measure(data: Path, body: str, model_roots: list[Path], seed: int, tokens: int) -> dict:
    import torch

    from core.callbacks import Callback, Event
    from core.config import parse_config
    from core.methods.proxy_setup import proxy_for
    from core.runner import build_run

    class Events(Callback):
        def __init__(self) -> None:
            self.data: list[dict] = []

        def on_event(self, event: Event) -> None:
            self.data.append(event.data)

    events = Events()
    config = parse_config({"method": "orca", "body": {"name": body}, "alignment": {"proxy": "auto"},
                           "training": {"seed": seed}, "embedder": {"target_seq_len": tokens}})
    with tempfile.TemporaryDirectory() as out:
        run = build_run(config, data, Path(out), None, [events], torch.device("cpu"), model_roots)
        start = time.perf_counter()
        chosen = proxy_for(run)
        seconds = time.perf_counter() - start
    skipped = {e["proxy_candidate"]: e["skipped"] for e in events.data if "skipped" in e}
    return {"data": data.stem, "body": body, "seed": seed, "tokens": tokens, "chosen": chosen, "seconds": round(seconds, 2),
            "otdd": {Path(k).name: round(v, 4) for k, v in next(e for e in events.data if "distances" in e)
                     ["distances"].items()},
            "per_candidate_seconds": {Path(e["proxy_candidate"]).name: round(e["seconds"], 2)
                                      for e in events.data if "otdd" in e and "proxy_candidate" in e},
            "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--body", default="minilm-l6")
    parser.add_argument("--model-root", action="append", default=[], type=Path)
    parser.add_argument("--seed", type=int, default=0, help="training.seed: the target embedder's init")
    parser.add_argument("--tokens", type=int, default=64, help="embedder.target_seq_len")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    for data in args.data:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["XMODAL_CACHE_DIR"] = cache
            for label in ("cold", "warm"):
                print(json.dumps({"pass": label, **measure(data, args.body, args.model_root, args.seed, args.tokens)}), flush=True)


if __name__ == "__main__":
    main()
