"""Does the proxy `auto` picks do better downstream? One method on one quality row, per proxy and seed.

    OMP_NUM_THREADS=1 .venv/bin/python bench/proxy_downstream.py DATA.npz --row gunpoint
        [--method orca] [--proxies auto,wordnet,digits] [--seeds 0,1] [--scale 1]

The job is bench/quality.py's `job_config(row, method, scale, seed)` with `alignment.proxy` replaced.
Prints one JSON line per (seed, proxy): the test metrics, the steps, the wall seconds, and with `auto`
the event that names the choice and every distance.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--row", required=True, help="a bench/quality.py row: its settings shape the job")
    parser.add_argument("--method", default="orca")
    parser.add_argument("--proxies", default="auto,wordnet,digits")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    import torch

    import core
    from bench.quality import job_config
    from core.callbacks import Callback, Event
    from core.config import parse_config

    class Choice(Callback):
        def __init__(self) -> None:
            self.event: dict | None = None

        def on_event(self, event: Event) -> None:
            if "distances" in event.data:
                self.event = event.data

    torch.set_num_threads(1)
    for seed in (int(s) for s in args.seeds.split(",")):
        for proxy in args.proxies.split(","):
            config = job_config(args.row, args.method, args.scale, seed)
            config["alignment"]["proxy"] = proxy
            choice, start = Choice(), time.perf_counter()
            with tempfile.TemporaryDirectory() as out:
                result = core.run(parse_config(config), args.data, Path(out), callbacks=[choice])
            print(json.dumps({"row": args.row, "method": args.method, "seed": seed, "proxy": proxy,
                              "reason": result.reason, "error": str(result.error) if result.error else None,
                              "test": result.summary.get("test"), "steps": result.step,
                              "seconds": round(time.perf_counter() - start, 1), "auto": choice.event}), flush=True)


if __name__ == "__main__":
    main()
