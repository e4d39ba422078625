"""The worker with the real core.run: a tiny ORCA job from a stored file to a loadable checkpoint."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from core.callbacks import Progress
from store.blobs import BlobStore
from store.db import session_scope
from store.models import Job
from store.repositories import checkpoints, events, jobs, metrics
from store.settings import Settings
from tests.service.test_worker import load, submit
from worker import stopping
from worker.checkpoint_tar import extract_checkpoint
from worker.reports import ProgressWriter
from worker.lifecycle import execute_job

TINY_CONFIG = {"method": "orca", "body": {"name": "tiny-bert"},
               "alignment": {"epochs": 1, "maxsamples": 16, "proxy": "digits"},
               "training": {"epochs": 1, "batch_size": 8}}


def tiny_dataset() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.normal(size=(64, 1, 32)).astype(np.float32), y=rng.integers(0, 2, 64).astype(np.int64))
    return buffer.getvalue()


def set_config(job_id: str, config: dict[str, object]) -> None:
    with session_scope() as s:
        s.get(Job, job_id).config = config  # type: ignore[union-attr]


def test_real_tiny_job_succeeds_with_a_loadable_checkpoint(settings: Settings, tmp_path: Path) -> None:
    owner_id, job_id = submit(settings, data=tiny_dataset())
    set_config(job_id, TINY_CONFIG)
    assert execute_job(job_id, settings) == "succeeded", load(job_id).error
    job = load(job_id)
    assert job.result is not None and job.progress is not None and job.progress["fraction"] == 1.0
    assert "test" in job.result["summary"] or "validation" in job.result["summary"]
    with session_scope() as s:
        final = checkpoints.get(s, owner_id, job_id, job.result["checkpoint"])
        assert final is not None and final.final
        assert metrics.list_metrics(s, owner_id, job_id).items
        assert len(events.list_events(s, owner_id, job_id, limit=500).items) >= 3
    blob = BlobStore(settings.blob_root).path(final.sha256)
    with tarfile.open(blob) as tar:
        assert {"model.safetensors", "manifest.json"} <= set(tar.getnames())
    from core import load_checkpoint

    model = load_checkpoint(extract_checkpoint(blob, tmp_path / "ckpt"))
    predictions = model.predict(np.zeros((3, 1, 32), dtype=np.float32))
    assert len(predictions) == 3


def test_real_job_cancelled_mid_run_keeps_its_checkpoint(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancel through the row as soon as the real loop reports progress: it checkpoints and stops."""
    owner_id, job_id = submit(settings, data=tiny_dataset())
    set_config(job_id, {**TINY_CONFIG, "training": {"epochs": 3, "batch_size": 8}})
    report_progress = ProgressWriter.on_progress

    def cancel_on_progress(self: ProgressWriter, progress: Progress) -> None:
        report_progress(self, progress)
        with session_scope() as s:
            jobs.request_cancel(s, owner_id, job_id)

    monkeypatch.setattr(ProgressWriter, "on_progress", cancel_on_progress)
    monkeypatch.setattr(stopping, "CANCEL_POLL_SECONDS", 0.0)
    assert execute_job(job_id, settings) == "cancelled", load(job_id).error
    job = load(job_id)
    assert job.result is not None and job.result["checkpoint"] is not None
    with session_scope() as s:
        assert checkpoints.get(s, owner_id, job_id, job.result["checkpoint"]) is not None


def test_proxy_auto_reports_every_distance_and_the_choice_in_the_job_events(settings: Settings, tmp_path: Path) -> None:
    """The worker hands its model roots to core: a labelled .npz in <root>/proxies is measured beside the built-ins."""
    root = tmp_path / "models"
    (root / "proxies").mkdir(parents=True)
    custom = root / "proxies" / "own.npz"
    custom.write_bytes(tiny_dataset())
    owner_id, job_id = submit(settings, data=tiny_dataset())
    set_config(job_id, {**TINY_CONFIG, "alignment": {**TINY_CONFIG["alignment"], "proxy": "auto"}})
    assert execute_job(job_id, settings.model_copy(update={"model_roots": [root]})) == "succeeded", load(job_id).error
    with session_scope() as s:
        stored = [e.data for e in events.list_events(s, owner_id, job_id, limit=500).items if e.data]
    measured = {d["proxy_candidate"]: d["otdd"] for d in stored if "otdd" in d and "proxy_candidate" in d}
    assert set(measured) == {"wordnet", "fashion-mnist", "digits", str(custom)}
    [chosen] = [d for d in stored if "distances" in d]
    assert chosen["distances"] == measured and chosen["proxy"] == min(measured, key=measured.__getitem__)
