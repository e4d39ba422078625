"""The directory where every process of one `xmodal serve` writes its Prometheus series, so that
`/metrics` from any of them sums them (prometheus_client's multiprocess mode; api.observability,
api.routes.metrics). Standard library only: `xmodal serve` sets the variable before anything
imports prometheus_client, which picks its storage at import time."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def prometheus_multiprocess_dir() -> Iterator[Path]:
    """Empty at start: files of an earlier server would add its counts to this one's. An
    operator's PROMETHEUS_MULTIPROC_DIR is emptied and kept; else a temporary directory is made
    and removed when the server stops."""
    given = os.environ.get(MULTIPROC_DIR)
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="xmodal-prometheus-"))
    if given:
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    os.environ[MULTIPROC_DIR] = str(path)
    try:
        yield path
    finally:
        if not given:
            os.environ.pop(MULTIPROC_DIR, None)
            shutil.rmtree(path, ignore_errors=True)
