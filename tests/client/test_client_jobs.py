"""`client.jobs` beyond single requests: wait(), cursor paging, checkpoint downloads that resume
with Range and are checked against the ETag."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from client import ChecksumError, WaitTimeout, XModalClientError
from tests.client.fakes import Server, error, job_json, page_json

CONTENT = bytes(range(256)) * 4000  # ~1 MiB: more than one of the client's chunks
SHA = hashlib.sha256(CONTENT).hexdigest()


class Clock:
    """monotonic() and sleep() for wait(): sleeping moves the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("client.jobs.monotonic", lambda: fake.now)
    monkeypatch.setattr("client.jobs.sleep", fake.sleep)
    return fake


def test_wait_returns_the_finished_job_and_reports_every_poll(clock: Clock) -> None:
    server = Server(*(httpx.Response(200, json=job_json(status=status))
                      for status in ("queued", "running", "running", "succeeded")))
    seen: list[str] = []
    job = server.client().jobs.wait("ftjob-1", poll_interval=5, on_update=lambda j: seen.append(j.status))
    assert job.status == "succeeded" and job.finished
    assert seen == ["queued", "running", "running", "succeeded"] and clock.slept == [5, 5, 5]


def test_wait_raises_on_timeout_with_the_last_state(clock: Clock) -> None:
    server = Server(httpx.Response(200, json=job_json(status="running", progress={"stage": "refine", "step": 3,
                                                                                   "total_steps": 10})))
    with pytest.raises(WaitTimeout) as caught:
        server.client().jobs.wait("ftjob-1", poll_interval=2, timeout=5)
    assert caught.value.job.status == "running" and caught.value.job.progress is not None
    assert caught.value.job.progress.step == 3
    assert str(caught.value) == "job ftjob-1 still running after 5 s"
    assert clock.slept == [2, 2, 1]  # the last nap ends at the deadline, and one more poll looks


def test_iter_events_follows_the_cursor_to_the_end() -> None:
    events = [{"id": i, "created_at": 0, "level": "info", "stage": "refine", "message": f"e{i}", "data": None}
              for i in range(1, 6)]
    server = Server(httpx.Response(200, json=page_json(events[:2], has_more=True)),
                    httpx.Response(200, json=page_json(events[2:4], has_more=True)),
                    httpx.Response(200, json=page_json(events[4:])))
    assert [e.message for e in server.client().jobs.iter_events("ftjob-1", after=0)] == [f"e{i}" for i in range(1, 6)]
    assert [r.url.params.get("after") for r in server.requests] == ["0", "2", "4"]
    assert all(r.url.params["limit"] == "100" for r in server.requests)


def test_metrics_sends_only_the_filters_given() -> None:
    point = {"id": 7, "object": "fine_tuning.job.metric", "key": "loss", "value": 0.5, "step": 3, "epoch": 0,
             "split": "train", "created_at": 0, "some_future_field": 1}
    server = Server(httpx.Response(200, json=page_json([point])))
    page = server.client().jobs.metrics("ftjob-1", key="loss", min_step=2)
    assert page.data[0].value == 0.5 and page.last_id == 7 and not page.has_more
    assert dict(server.requests[0].url.params) == {"key": "loss", "min_step": "2"}


def checkpoint_json(**fields: object) -> dict[str, object]:
    return {"id": "ftckpt-1", "object": "fine_tuning.job.checkpoint", "fine_tuning_job_id": "ftjob-1",
            "created_at": 0, "step": 8, "epoch": 1, "stage": "refine", "final": True, "metrics": None,
            "sha256": SHA, "bytes": len(CONTENT), **fields}


def blob(request: httpx.Request, content: bytes = CONTENT, etag: str = SHA) -> httpx.Response:
    """What api/downloads.py answers: the bytes, or one `bytes=N-` range of them as a 206."""
    headers = {"ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
    wanted = request.headers.get("range")
    if wanted is None:
        return httpx.Response(200, content=content, headers=headers)
    start = int(wanted.removeprefix("bytes=").rstrip("-"))
    if start >= len(content):
        return error(416, "range_not_satisfiable", headers={"Content-Range": f"bytes */{len(content)}"})
    headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
    return httpx.Response(206, content=content[start:], headers=headers)


def test_download_resumes_a_partial_file_with_range(tmp_path: Path) -> None:
    dest = tmp_path / "ckpt.tar"
    Path(f"{dest}.part").write_bytes(CONTENT[:300_000])
    server = Server(blob)
    progress: list[tuple[int, int | None]] = []
    result = server.client().jobs.download("ftjob-1", "ftckpt-1", dest, on_progress=lambda *p: progress.append(p))
    assert server.requests[0].headers["range"] == "bytes=300000-"
    assert server.requests[0].url.path == "/v1/fine_tuning/jobs/ftjob-1/checkpoints/ftckpt-1/content"
    assert dest.read_bytes() == CONTENT and not Path(f"{dest}.part").exists()
    assert (result.path, result.bytes, result.sha256, result.resumed_from) == (dest, len(CONTENT), SHA, 300_000)
    assert progress[-1] == (len(CONTENT), len(CONTENT)) and progress[0][0] > 300_000


class Interrupted(httpx.SyncByteStream):
    """The first `cut` bytes of the body, then the connection drops."""

    def __init__(self, content: bytes, cut: int) -> None:
        self.content, self.cut = content, cut

    def __iter__(self) -> Iterator[bytes]:
        yield self.content[:self.cut]
        raise httpx.ReadError("connection reset by peer")


def test_a_connection_dropped_mid_download_is_resumed_by_the_retry(tmp_path: Path, sleeps: list[float]) -> None:
    def drop_midway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Interrupted(CONTENT, 400_000), headers={"ETag": f'"{SHA}"'})

    server = Server(drop_midway, blob)
    result = server.client().jobs.download("ftjob-1", "ftckpt-1", tmp_path)
    assert result.path == tmp_path / "ftckpt-1.tar" and result.path.read_bytes() == CONTENT
    assert "range" not in server.requests[0].headers and server.requests[1].headers["range"] == "bytes=400000-"
    assert result.resumed_from == 0 and len(sleeps) == 1


def test_a_download_that_does_not_match_its_etag_is_discarded(tmp_path: Path) -> None:
    dest = tmp_path / "ckpt.tar"
    server = Server(lambda request: blob(request, etag="0" * 64))
    with pytest.raises(ChecksumError) as caught:
        server.client().jobs.download("ftjob-1", "ftckpt-1", dest)
    assert caught.value.expected == "0" * 64 and caught.value.actual == SHA
    assert not dest.exists() and not Path(f"{dest}.part").exists()


def test_a_partial_file_of_other_bytes_is_replaced_by_a_whole_download(tmp_path: Path) -> None:
    dest = tmp_path / "ckpt.tar"
    Path(f"{dest}.part").write_bytes(b"x" * 1000)  # say, an older checkpoint's start under the same name
    server = Server(blob)
    result = server.client().jobs.download("ftjob-1", "ftckpt-1", dest)
    assert dest.read_bytes() == CONTENT and result.resumed_from == 0
    assert [r.headers.get("range") for r in server.requests] == ["bytes=1000-", None]


def test_a_partial_file_as_long_as_the_blob_starts_over_after_416(tmp_path: Path) -> None:
    dest = tmp_path / "ckpt.tar"
    Path(f"{dest}.part").write_bytes(CONTENT)  # a run killed between the last byte and the rename
    server = Server(blob)
    server.client().jobs.download("ftjob-1", "ftckpt-1", dest)
    assert dest.read_bytes() == CONTENT
    assert [r.headers.get("range") for r in server.requests] == [f"bytes={len(CONTENT)}-", None]


def test_resume_false_ignores_a_partial_file(tmp_path: Path) -> None:
    dest = tmp_path / "ckpt.tar"
    Path(f"{dest}.part").write_bytes(CONTENT[:10])
    server = Server(blob)
    server.client().jobs.download("ftjob-1", "ftckpt-1", dest, resume=False)
    assert "range" not in server.requests[0].headers and dest.read_bytes() == CONTENT


def test_download_without_a_checkpoint_id_takes_the_jobs_result(tmp_path: Path) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/content"):
            return blob(request)
        return httpx.Response(200, json=job_json(status="succeeded", result={"checkpoint": "ftckpt-9"}))

    server = Server(route)
    assert server.client().jobs.download("ftjob-1", dest=tmp_path).path == tmp_path / "ftckpt-9.tar"


def test_download_without_a_result_takes_the_newest_checkpoint_or_says_there_is_none(tmp_path: Path) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/checkpoints"):
            return httpx.Response(200, json=page_json([checkpoint_json(id="ftckpt-3"), checkpoint_json()]))
        if request.url.path.endswith("/content"):
            return blob(request)
        return httpx.Response(200, json=job_json(status="running"))

    assert Server(route).client().jobs.download("ftjob-1", dest=tmp_path).path.name == "ftckpt-3.tar"
    empty = Server(httpx.Response(200, json=job_json(status="queued")), httpx.Response(200, json=page_json([])))
    with pytest.raises(XModalClientError, match="job ftjob-1 has no checkpoint yet"):
        empty.client().jobs.download("ftjob-1", dest=tmp_path)
