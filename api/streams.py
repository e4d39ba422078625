"""Server-sent event streams that follow a job's events or metric points while they are written.

The database is the only channel from worker to API, so a stream polls it: a short read on the
thread pool (never on the event loop, and no connection held between reads) of the rows after its
cursor, in batches, then a pause. Each SSE `id` is the row id, so a client that reconnects with
`Last-Event-ID` (browsers do it on their own) gets exactly the rows it missed. Once the job has
ended and every row is out, an `end` event carries the job object and the stream closes; a
browser's EventSource must close itself on `end`, or it reconnects and gets `end` again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.observability import OPEN_STREAMS
from api.schemas.jobs import JobObject
from store.db import session_scope
from store.models import TERMINAL_STATUSES
from store.repositories import jobs
from store.repositories.scoping import Page
from store.settings import Settings

BATCH = 100
"""Rows per read: a reconnect far behind catches up in batches, without pauses between them."""


@dataclass(frozen=True)
class Feed:
    """What a stream follows: its SSE event name, a list function with the list endpoint's owner
    scoping (`read(session, owner_id, job_id, after=, limit=)`), and the list endpoint's item object."""

    event: str
    read: Callable[..., Page[Any]]
    render: Callable[[Any], BaseModel]


@dataclass(frozen=True)
class _Poll:
    items: list[BaseModel]
    has_more: bool
    ended: JobObject | None = None  # the job, once it has ended
    gone: bool = False  # the job no longer exists (its owner was deleted)


def _poll(owner_id: str, job_id: str, feed: Feed, after: int | None) -> _Poll:
    with session_scope() as session:
        return _read(session, owner_id, job_id, feed, after)


def _read(session: Session, owner_id: str, job_id: str, feed: Feed, after: int | None) -> _Poll:
    # The job before its rows: when it has already ended, the rows read next are all there will be.
    job = jobs.get(session, owner_id, job_id)
    if job is None:
        return _Poll([], False, gone=True)
    page = feed.read(session, owner_id, job_id, after=after, limit=BATCH)
    ended = JobObject.from_row(job) if job.status in TERMINAL_STATUSES else None
    return _Poll([feed.render(row) for row in page.items], page.has_more, ended)


async def follow(owner_id: str, job_id: str, feed: Feed, after: int | None,
                 poll_seconds: float) -> AsyncIterator[ServerSentEvent]:
    """The job's rows after `after` as SSE events, then `end` once the job has ended."""
    with OPEN_STREAMS.track_inprogress():
        while True:
            poll = await run_in_threadpool(_poll, owner_id, job_id, feed, after)
            for item in poll.items:
                after = item.id  # type: ignore[attr-defined]
                yield ServerSentEvent(data=item.model_dump_json(), id=str(after), event=feed.event)
            if poll.has_more:
                continue
            if poll.gone:
                return
            if poll.ended is not None:
                yield ServerSentEvent(data=poll.ended.model_dump_json(), event="end")
                return
            await anyio.sleep(poll_seconds)


def event_stream(owner_id: str, job_id: str, feed: Feed, after: int | None, settings: Settings) -> EventSourceResponse:
    """The response for one stream: SSE comments keep a quiet connection open through proxies; a
    client that goes away cancels the polling."""
    return EventSourceResponse(follow(owner_id, job_id, feed, after, settings.stream_poll_seconds),
                               ping=settings.stream_keepalive_seconds)
