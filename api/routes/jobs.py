"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel; a job's events, metrics and checkpoints,
and streams that follow its events and metrics (server-sent events).

Cancel: a queued job is `cancelled` at once; a running one gets `cancel_requested` and stays
`running` until its worker stops at the next step (keeping its last checkpoint); cancelling a
cancelled job returns it unchanged; a succeeded or failed job answers 409.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse

from api.deps import BlobsDep, Credentials, CurrentOwner, IdempotencyKeyHeader, LimitDep, SessionDep, SettingsDep, read_only
from api.answers import forget, shared_answer
from api.downloads import blob_response
from api.errors import ApiError, not_found
from api.idempotency import Once, create_once
from api.schemas.common import ErrorBody, ListResponse
from api.schemas.jobs import CheckpointObject, EventObject, JobCreate, JobObject, MetricObject
from api.streams import Feed, Reader, event_stream
from api.submission import enqueue, record_job, reserve_job_slots, validated_config
from store.models import Job, Owner
from store.repositories import checkpoints, events, idempotency, jobs, keys, metrics
from store.settings import Settings

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"])
ENDPOINT = "fine_tuning.jobs"
"""This route's name among idempotency keys (migration 0002 wrote it too)."""

CURSOR_MAX, STEP_MAX = 2**63 - 1, 2**31 - 1  # the BIGINT id and INTEGER step columns
JobStatusFilter = Annotated[str | None, Query(pattern="^(queued|running|succeeded|failed|cancelled)$")]


def _job_or_404(session: Session, owner: Owner, job_id: str) -> Job:
    row = jobs.get(session, owner.id, job_id)
    if row is None:
        raise not_found("job", job_id)
    return row


def _404_unless_owned(session: Session, owner: Owner, job_id: str) -> None:
    """The check before listing a job's children: a 404, not an empty list, for a job the owner
    cannot see; the job's id is read, not the whole row (its config is the bulk of it)."""
    if not jobs.is_owned(session, owner.id, job_id):
        raise not_found("job", job_id)


@router.post("", response_model=JobObject,
             responses={429: {"description": "Too many of the owner's jobs are queued or running"}})
def create_job(body: JobCreate, session: SessionDep, owner: CurrentOwner, settings: SettingsDep,
               idempotency_key: IdempotencyKeyHeader = None) -> JobObject:
    """Validate the config with core's schema, record the job `queued`, then wake a worker.

    With `Idempotency-Key`, repeating the request returns the job the first one created.
    """
    once = None if idempotency_key is None else Once(
        owner.id, ENDPOINT, idempotency_key, idempotency.fingerprint(body.model_dump(mode="json")),
        settings.idempotency_ttl_seconds)
    job, created = create_once(session, once, lambda: _create(session, owner, body, settings),
                               lambda job_id: jobs.get(session, owner.id, job_id))
    if created:
        enqueue(session, owner, [job], once, settings)
    return _job_objects(session, settings, [job])[0]


def _create(session: Session, owner: Owner, body: JobCreate, settings: Settings) -> Job:
    config = validated_config(session, owner, body, settings, body.seed)
    reserve_job_slots(session, owner, settings, wanted=1)
    return record_job(session, owner, body, config, settings, suffix=body.suffix, metadata=body.metadata)


def _job_objects(session: Session, settings: Settings, rows: list[Job]) -> list[JobObject]:
    """The rows as job objects, with the queued ones' queue slots found for all of them at once."""
    slots = jobs.queue_slots(session, [row.id for row in rows if row.status == "queued"], settings.lease_seconds)
    return [JobObject.from_row(row, slots.get(row.id)) for row in rows]


@router.get("", response_model=ListResponse[JobObject])
async def list_jobs(owner: CurrentOwner, settings: SettingsDep, limit: LimitDep,
                    after: Annotated[str | None, Query(max_length=64, description="id of the last job seen")] = None,
                    status: JobStatusFilter = None) -> ListResponse[JobObject]:
    """Newest first."""

    def read(session: Session) -> ListResponse[JobObject]:
        page = jobs.list_jobs(session, owner.id, after=after, limit=limit, status=status)
        return ListResponse[JobObject].of(_job_objects(session, settings, page.items), page.has_more)

    return await read_only(read)


@router.get("/{job_id}", response_model=JobObject)
async def get_job(job_id: str, request: Request, owner: CurrentOwner, settings: SettingsDep) -> Response:
    """The route every client polls: one statement (two for a queued job) on a Core row, in one
    thread-pool hop (bench/results/api_get_paths.md), and on PostgreSQL answered from memory until
    the job changes (api.answers)."""

    def read(session: Session) -> JobObject | None:
        found = jobs.get_with_slot(session, owner.id, job_id, settings.lease_seconds)
        return None if found is None else JobObject.from_row(*found)

    answer = await shared_answer(request, job_id, ("job", owner.id), read, ages=lambda job: job.status == "queued")
    if answer is None:
        raise not_found("job", job_id)
    return answer


@router.post("/{job_id}/cancel", response_model=JobObject, responses={409: {"description": "Already finished"}})
def cancel_job(job_id: str, request: Request, session: SessionDep, owner: CurrentOwner) -> JobObject:
    job = _job_or_404(session, owner, job_id)
    if job.status in ("succeeded", "failed"):
        raise ApiError(409, "job_already_finished", f"job {job_id!r} already {job.status}; nothing to cancel")
    job = jobs.request_cancel(session, owner.id, job_id) or job
    session.commit()
    forget(request, job_id)
    return JobObject.from_row(job)


@router.get("/{job_id}/events", response_model=ListResponse[EventObject])
async def list_events(job_id: str, request: Request, owner: CurrentOwner, limit: LimitDep,
                      after: Annotated[int | None, Query(ge=0, le=CURSOR_MAX, description="id of the last event seen")] = None,
                      ) -> Response:
    """Oldest first: poll with `after` = the last id seen to follow a running job. Pollers caught up
    with a job ask the same page: on PostgreSQL it is answered from memory until the job changes."""

    def read(session: Session) -> ListResponse[EventObject]:
        _404_unless_owned(session, owner, job_id)
        page = events.list_events(session, owner.id, job_id, after=after, limit=limit)
        return ListResponse[EventObject].of([EventObject.from_row(row) for row in page.items], page.has_more)

    answer = await shared_answer(request, job_id, ("events", owner.id, after, limit), read)
    assert answer is not None  # a page, possibly empty, or the 404 raised by the read
    return answer


@router.get("/{job_id}/metrics", response_model=ListResponse[MetricObject])
async def list_metrics(job_id: str, owner: CurrentOwner, limit: LimitDep,
                       key: Annotated[str | None, Query(max_length=128)] = None,
                       split: Annotated[str | None, Query(max_length=32)] = None,
                       min_step: Annotated[int | None, Query(ge=0, le=STEP_MAX)] = None,
                       max_step: Annotated[int | None, Query(ge=0, le=STEP_MAX)] = None,
                       after: Annotated[int | None, Query(ge=0, le=CURSOR_MAX, description="id of the last point seen")] = None,
                       ) -> ListResponse[MetricObject]:
    """Metric history in write order, filtered by key, split and inclusive step range."""

    def read(session: Session) -> ListResponse[MetricObject]:
        _404_unless_owned(session, owner, job_id)
        page = metrics.list_metrics(session, owner.id, job_id, key=key, split=split, min_step=min_step,
                                    max_step=max_step, after=after, limit=limit)
        return ListResponse[MetricObject].of([MetricObject.from_row(row) for row in page.items], page.has_more)

    return await read_only(read)


@router.get("/{job_id}/checkpoints", response_model=ListResponse[CheckpointObject])
async def list_checkpoints(job_id: str, owner: CurrentOwner) -> ListResponse[CheckpointObject]:
    """Newest first; a job keeps a handful, so one page holds them all."""

    def read(session: Session) -> ListResponse[CheckpointObject]:
        _404_unless_owned(session, owner, job_id)
        rows = checkpoints.list_checkpoints(session, owner.id, job_id)
        return ListResponse[CheckpointObject].of([CheckpointObject.from_row(row) for row in rows], False)

    return await read_only(read)


@router.get("/{job_id}/checkpoints/{checkpoint_id}/content", response_class=Response,
            responses={200: {"content": {"application/x-tar": {}}}, 206: {}, 304: {}, 416: {}})
def download_checkpoint(job_id: str, checkpoint_id: str, request: Request, session: SessionDep,
                        owner: CurrentOwner, blobs: BlobsDep) -> Response:
    """The checkpoint directory as an uncompressed tar; `ETag` is its sha256."""
    row = checkpoints.get(session, owner.id, job_id, checkpoint_id)
    if row is None:
        raise not_found("checkpoint", checkpoint_id)
    return blob_response(request, blobs, row.sha256, "application/x-tar", f"{row.id}.tar")


# --- streams: server-sent events (api.streams) ---------------------------------------------------

StreamAfter = Annotated[int | None, Query(ge=0, le=CURSOR_MAX, description="id of the last row seen")]
LastEventId = Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=CURSOR_MAX,
                                           description="id of the last SSE event received (wins over `after`)")]
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}},
          "description": "SSE: `event` = event | metric | end | error (the key was revoked), `id` = row id, "
                         "`data` = JSON"},
    429: {"model": ErrorBody, "description": "Too many streams open with this key, or on this server"}}


def _stream(request: Request, session: Session, owner: Owner, credentials: HTTPAuthorizationCredentials | None,
            job_id: str, feed: Feed, after: int | None, settings: Settings) -> EventSourceResponse:
    """Scoped like the list routes, and a 404 before anything streams. The request's session is
    closed here: the stream reads with short sessions of its own for as long as it lasts. A
    stream is one request for the rate limit, however long it stays open, so it also takes one of
    the key's stream slots (api.slots) until it ends."""
    _404_unless_owned(session, owner, job_id)
    owner_id = owner.id
    session.close()
    assert credentials is not None  # current_owner refused the request otherwise
    slot = request.app.state.stream_slots.acquire(keys.hash_key(credentials.credentials),
                                                  settings.max_streams_per_key, settings.max_streams)
    return event_stream(Reader(owner_id, credentials.credentials, job_id, feed), after, settings, slot,
                        request.app.state.stream_listener)


@router.get("/{job_id}/events/stream", response_class=EventSourceResponse, responses=STREAM_RESPONSES)
def stream_events(job_id: str, request: Request, session: SessionDep, owner: CurrentOwner, credentials: Credentials,
                  settings: SettingsDep, after: StreamAfter = None, last_event_id: LastEventId = None
                  ) -> EventSourceResponse:
    """Follow the job's events: each is `event: event` with the event object as `data`; `event: end`
    with the job object closes the stream once the job has ended and every event was sent."""
    feed = Feed("event", events.list_events, EventObject.from_row)
    return _stream(request, session, owner, credentials, job_id, feed,
                   last_event_id if last_event_id is not None else after, settings)


@router.get("/{job_id}/metrics/stream", response_class=EventSourceResponse, responses=STREAM_RESPONSES)
def stream_metrics(job_id: str, request: Request, session: SessionDep, owner: CurrentOwner,
                   credentials: Credentials, settings: SettingsDep,
                   key: Annotated[str | None, Query(max_length=128)] = None,
                   split: Annotated[str | None, Query(max_length=32)] = None,
                   after: StreamAfter = None, last_event_id: LastEventId = None) -> EventSourceResponse:
    """Follow the job's metric points (filtered by key and split): `event: metric` with the metric
    object as `data`, then `event: end` with the job object once the job has ended."""
    feed = Feed("metric", partial(metrics.list_metrics, key=key, split=split), MetricObject.from_row)
    return _stream(request, session, owner, credentials, job_id, feed,
                   last_event_id if last_event_id is not None else after, settings)
