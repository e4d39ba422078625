"""`client.jobs`: fine-tuning jobs and what they produce (events, metrics, checkpoints)."""

from __future__ import annotations

import builtins
import math
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from time import monotonic, sleep
from typing import Any, TypeVar

from client.download import ProgressCallback, download
from client.errors import WaitTimeout, XModalClientError
from client.http import HTTP, segment
from client.types import Checkpoint, Download, Event, Job, Metric, Page

T = TypeVar("T")
PAGE_SIZE = 100
"""The server's default `api_page_limit`: the largest page the iterators ask for."""


class Jobs:
    def __init__(self, http: HTTP) -> None:
        self._http = http

    def create(self, training_file: str, model: str, method: str | dict[str, Any] | None = None, *,
               seed: int | None = None, validation_file: str | None = None, suffix: str | None = None,
               metadata: dict[str, str] | None = None, idempotency_key: str | None = None) -> Job:
        """Submit a job. `method` is a name (`"orca"`, its defaults) or the API's
        `{"type": "orca", "orca": {<sections of a YAML job file>}}`.

        One `Idempotency-Key` covers every retry of this call, so at most one job is made.
        """
        body = {"training_file": training_file, "model": model,
                "method": {"type": method} if isinstance(method, str) else method, "seed": seed,
                "validation_file": validation_file, "suffix": suffix, "metadata": metadata}
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return Job.from_dict(self._http.json("POST", "/v1/fine_tuning/jobs", headers=headers,
                                             json={key: value for key, value in body.items() if value is not None}))

    def list(self, *, after: str | None = None, limit: int | None = None, status: str | None = None) -> Page[Job]:
        """Newest first."""
        return self._http.page("/v1/fine_tuning/jobs", Job.from_dict, after=after, limit=limit, status=status)

    def get(self, job_id: str) -> Job:
        return Job.from_dict(self._http.json("GET", _job_path(job_id)))

    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one stops at its next step (`cancel_requested`)."""
        return Job.from_dict(self._http.json("POST", f"{_job_path(job_id)}/cancel"))

    def wait(self, job_id: str, *, poll_interval: float = 2.0, timeout: float | None = None,
             on_update: Callable[[Job], None] | None = None) -> Job:
        """Poll until the job has finished (succeeded, failed or cancelled) and return it.

        Raises WaitTimeout (holding the last state seen) once `timeout` seconds have passed.
        `on_update` sees every state polled, for progress displays.
        """
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_update is not None:
                on_update(job)
            if job.finished:
                return job
            left = math.inf if deadline is None else deadline - monotonic()
            if left <= 0:
                raise WaitTimeout(job, timeout or 0.0)
            sleep(min(poll_interval, left))

    def events(self, job_id: str, *, after: int | None = None, limit: int | None = None) -> Page[Event]:
        """Oldest first; pass the last id seen as `after` to follow a running job."""
        return self._http.page(f"{_job_path(job_id)}/events", Event.from_dict, after=after, limit=limit)

    def iter_events(self, job_id: str, *, after: int | None = None) -> Iterator[Event]:
        """Every event after `after`, page by page."""
        return _all_pages(lambda cursor: self.events(job_id, after=cursor, limit=PAGE_SIZE), after)

    def metrics(self, job_id: str, *, key: str | None = None, split: str | None = None,
                min_step: int | None = None, max_step: int | None = None, after: int | None = None,
                limit: int | None = None) -> Page[Metric]:
        """Metric points in write order, filtered by key, split and an inclusive step range."""
        return self._http.page(f"{_job_path(job_id)}/metrics", Metric.from_dict, key=key, split=split,
                               min_step=min_step, max_step=max_step, after=after, limit=limit)

    def iter_metrics(self, job_id: str, *, key: str | None = None, split: str | None = None,
                     min_step: int | None = None, max_step: int | None = None,
                     after: int | None = None) -> Iterator[Metric]:
        return _all_pages(lambda cursor: self.metrics(job_id, key=key, split=split, min_step=min_step,
                                                      max_step=max_step, after=cursor, limit=PAGE_SIZE), after)

    def checkpoints(self, job_id: str) -> builtins.list[Checkpoint]:
        """Newest first; a job keeps only a handful."""
        return self._http.page(f"{_job_path(job_id)}/checkpoints", Checkpoint.from_dict).data

    def download(self, job_id: str, checkpoint_id: str | None = None, dest: str | Path = ".", *,
                 resume: bool = True, on_progress: ProgressCallback | None = None) -> Download:
        """Download a checkpoint tar, verified against its sha256; returns where it is.

        `checkpoint_id` None picks the job's result (its final checkpoint, or the last one a
        cancelled job kept), else its newest. `dest` may be a directory (`<checkpoint>.tar` goes
        in it). A `<dest>.part` left by an interrupted run is continued unless `resume` is false.
        """
        checkpoint_id = checkpoint_id or self._default_checkpoint(job_id)
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / f"{checkpoint_id}.tar"
        path = f"{_job_path(job_id)}/checkpoints/{segment(checkpoint_id)}/content"
        return download(self._http, path, dest, resume=resume, on_progress=on_progress)

    def _default_checkpoint(self, job_id: str) -> str:
        result = self.get(job_id).result or {}
        if result.get("checkpoint"):
            return str(result["checkpoint"])
        checkpoints = self.checkpoints(job_id)
        if not checkpoints:
            raise XModalClientError(f"job {job_id} has no checkpoint yet")
        return checkpoints[0].id


def _job_path(job_id: str) -> str:
    return f"/v1/fine_tuning/jobs/{segment(job_id)}"


def _all_pages(fetch: Callable[[Any], Page[T]], after: Any) -> Iterator[T]:
    while True:
        page = fetch(after)
        yield from page.data
        if not page.has_more or page.last_id is None:
            return
        after = page.last_id
