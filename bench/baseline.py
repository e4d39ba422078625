"""The classical baseline every job reports (`core.baseline`), measured on fetched datasets.

    OMP_NUM_THREADS=1 .venv/bin/python bench/baseline.py [--rows digits,gunpoint,dna-oct4-mafk]
        [--validation-fraction 0.1] [--seconds 60] [--data-dir /tmp/xmodal-bench-data]

Each row goes through the job's own data path (`core.data.prepare.prepare_data` with the default job
config, so the same validation hold-out and train-only normalisation a job gets), then
`core.baseline.fit_baseline` with the job's default time cap. Prints one JSON line per row: the
chosen method, its validation and test metrics, seconds, rows and features used, and its notes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from core.baseline import fit_baseline
from core.config import parse_config
from core.data.fetch import fetch_dataset
from core.data.prepare import prepare_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="digits,gunpoint,dna-oct4-mafk")
    parser.add_argument("--validation-fraction", type=float, default=None, help="default: the job config's")
    parser.add_argument("--seconds", type=float, default=None, help="default: the job config's baseline_seconds")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/xmodal-bench-data"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    evaluation = {key: value for key, value in (("validation_fraction", args.validation_fraction),
                                                ("baseline_seconds", args.seconds)) if value is not None}
    config = parse_config({"evaluation": evaluation})
    args.data_dir.mkdir(parents=True, exist_ok=True)
    for name in filter(None, args.rows.split(",")):
        path = args.data_dir / f"{name}.npz"
        if not path.exists():
            fetch_dataset(name, path)
        data = prepare_data(config, path)
        result = fit_baseline(data, config.evaluation.baseline_seconds, seed=config.training.seed).as_dict()
        print(json.dumps({"dataset": name, **{key: result[key] for key in (
            "method", "params", "selection", "validation", "test", "seconds", "train_rows", "train_rows_used",
            "features_used", "notes")}}))


if __name__ == "__main__":
    main()
