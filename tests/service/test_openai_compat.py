"""The official `openai` package, pointed at a real `xmodal serve`, drives files and fine-tuning jobs.

`method` takes our methods as they are: the SDK types it as a TypedDict of OpenAI's own methods,
but passes unknown keys through untouched, so no `extra_body` is needed (a type checker wants a
`type: ignore`). The SDK sends no idempotency header of its own; `extra_headers={"Idempotency-Key":
…}` makes a create safe to retry. No worker runs here, so jobs stay `queued` until cancelled; the
events and checkpoints a worker would write are written straight into the database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from store.db import dispose_engines, session_scope
from store.repositories import checkpoints, events
from store.settings import reset_settings
from tests.service.api_fixtures import QUICK_ORCA, free_port, npz_bytes, running, wait_until_up
from tests.service.conftest import _configure, make_owner_key
from tests.service.test_e2e import XMODAL

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Deployment:
    sdk: openai.OpenAI
    owner_id: str
    dataset: Path

    def upload(self) -> FileObject:
        with self.dataset.open("rb") as content:
            return self.sdk.files.create(file=content, purpose="fine-tune")

    def create_job(self, file_id: str, **options: Any) -> FineTuningJob:
        return self.sdk.fine_tuning.jobs.create(model="tiny-bert", training_file=file_id,
                                                method=QUICK_ORCA, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """`xmodal serve` on SQLite with no worker, and the SDK pointed at it with a fresh key."""
    from migrations import upgrade

    data_dir = tmp_path_factory.mktemp("openai-compat")
    with pytest.MonkeyPatch.context() as monkeypatch:
        upgrade(_configure(monkeypatch, data_dir=str(data_dir)).database_url)
        owner = make_owner_key("openai-sdk")
        dataset = data_dir / "train.npz"
        dataset.write_bytes(npz_bytes())
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with running([*XMODAL, "serve", "--port", str(port)], data_dir / "server.log") as server:
            try:
                wait_until_up(url, server)
            except (RuntimeError, TimeoutError) as exc:
                raise AssertionError(f"{exc}\n{(data_dir / 'server.log').read_text()}") from None
            with openai.OpenAI(base_url=f"{url}/v1", api_key=owner.key, max_retries=0) as sdk:
                yield Deployment(sdk, owner.owner_id, dataset)
        dispose_engines()
        reset_settings()


def recent(timestamp: int) -> bool:
    """OpenAI's timestamps: whole unix seconds."""
    return isinstance(timestamp, int) and abs(time.time() - timestamp) < 600


def test_upload_create_retrieve_and_cancel(deployment: Deployment) -> None:
    sdk = deployment.sdk
    file = deployment.upload()
    assert isinstance(file, FileObject) and file.id.startswith("file-") and file.object == "file"
    assert (file.filename, file.purpose, file.status) == ("train.npz", "fine-tune", "processed")
    assert file.bytes == deployment.dataset.stat().st_size and recent(file.created_at)
    assert sdk.files.retrieve(file.id).id == file.id
    assert file.id in [listed.id for listed in sdk.files.list()]

    job = deployment.create_job(file.id, seed=3, suffix="sdk", metadata={"via": "openai"})
    assert isinstance(job, FineTuningJob) and job.id.startswith("ftjob-")
    assert (job.object, job.status, job.model, job.training_file) == ("fine_tuning.job", "queued", "tiny-bert", file.id)
    assert recent(job.created_at) and job.finished_at is None and job.error is None
    assert (job.organization_id, job.seed, job.metadata) == (deployment.owner_id, 3, {"via": "openai"})
    assert (job.fine_tuned_model, job.result_files, job.trained_tokens, job.validation_file) == (None, [], None, None)
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (1, 8)
    assert job.method is not None and job.method.type == "orca"  # type: ignore[comparison-overlap]
    assert job.method.model_extra and job.method.model_extra["orca"]["training"]["epochs"] == 1
    assert job.model_extra and job.model_extra["queue_position"] >= 1

    retrieved = sdk.fine_tuning.jobs.retrieve(job.id)
    assert (retrieved.id, retrieved.status, retrieved.created_at) == (job.id, "queued", job.created_at)
    cancelled = sdk.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and recent(cancelled.finished_at or 0)
    assert cancelled.model_extra and cancelled.model_extra["queue_position"] is None
    assert sdk.fine_tuning.jobs.cancel(job.id).status == "cancelled"  # cancelling twice changes nothing


def test_job_list_pages_by_limit_and_after(deployment: Deployment) -> None:
    jobs_api = deployment.sdk.fine_tuning.jobs
    file_id = deployment.upload().id
    created = [deployment.create_job(file_id).id for _ in range(5)]
    newest_first = created[::-1]

    first = jobs_api.list(limit=2)
    assert [job.id for job in first.data] == newest_first[:2] and first.has_more and first.has_next_page()
    second = first.get_next_page()
    assert [job.id for job in second.data] == newest_first[2:4]
    assert [job.id for job in jobs_api.list(after=created[2], limit=2).data] == [created[1], created[0]]
    every = [job.id for job in jobs_api.list(limit=2)]  # auto-pagination: follows `after` to the end
    assert every[:5] == newest_first and len(every) == len(set(every))
    for job_id in created:
        jobs_api.cancel(job_id)


def test_events_and_checkpoints_page_through_the_sdk(deployment: Deployment) -> None:
    jobs_api = deployment.sdk.fine_tuning.jobs
    job = deployment.create_job(deployment.upload().id)
    with session_scope() as session:
        for i in range(7):
            events.append(session, job.id, stage="refine", message=f"step {i}", data={"step": i})
        for step in (10, 20):
            checkpoints.create(session, job.id, step=step, epoch=0, stage="refine", sha256="c" * 64, bytes=3,
                               metrics={"valid_loss": 1 / step})

    page = jobs_api.list_events(job.id, limit=3)
    assert len(page.data) == 3 and page.has_more
    # the SDK's cursor is the last event's id (ours are integers): our `after` takes it as it comes
    info = page.next_page_info()
    assert info is not None and info.params == {"after": page.data[-1].id}
    every = list(jobs_api.list_events(job.id, limit=3))
    assert [event.message for event in every] == [f"step {i}" for i in range(7)]  # oldest first
    assert all(isinstance(event, FineTuningJobEvent) and event.object == "fine_tuning.job.event"
               and event.level == "info" and recent(event.created_at) for event in every)
    assert every[-1].data == {"step": 6}

    listed = list(jobs_api.checkpoints.list(job.id, limit=10))
    assert [checkpoint.step_number for checkpoint in listed] == [20, 10]  # newest first
    for checkpoint in listed:
        assert isinstance(checkpoint, FineTuningJobCheckpoint) and checkpoint.object == "fine_tuning.job.checkpoint"
        assert checkpoint.fine_tuning_job_id == job.id and checkpoint.fine_tuned_model_checkpoint == checkpoint.id
        assert recent(checkpoint.created_at) and checkpoint.metrics.valid_loss == 1 / checkpoint.step_number
    jobs_api.cancel(job.id)


def test_idempotency_key_goes_in_extra_headers(deployment: Deployment) -> None:
    file_id = deployment.upload().id
    key = {"Idempotency-Key": f"sdk-{time.time_ns()}"}
    first = deployment.create_job(file_id, extra_headers=key)
    assert deployment.create_job(file_id, extra_headers=key).id == first.id
    sent: list[Any] = []
    with openai.DefaultHttpxClient(event_hooks={"request": [sent.append]}) as watched:
        plain = Deployment(deployment.sdk.with_options(http_client=watched), deployment.owner_id, deployment.dataset)
        unkeyed = [plain.create_job(file_id).id for _ in range(2)]
    assert len({first.id, *unkeyed}) == 3 and len(sent) == 2
    assert not [name for request in sent for name in request.headers if "idempotency" in name.lower()]
    for job_id in (first.id, *unkeyed):
        deployment.sdk.fine_tuning.jobs.cancel(job_id)


def test_errors_become_the_sdks_exceptions_with_our_code_and_param(deployment: Deployment) -> None:
    sdk = deployment.sdk
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.fine_tuning.jobs.retrieve("ftjob-doesnotexist")
    assert missing.value.code == "job_not_found"
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        sdk.fine_tuning.jobs.create(model="tiny-bert", training_file="file-x",
                                    method={"type": "magic"})  # type: ignore[typeddict-item]
    assert (invalid.value.code, invalid.value.param) == ("invalid_config", "method.type")
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        sdk.with_options(api_key="xm-wrong").files.list()
    assert unauthenticated.value.code == "invalid_api_key"
