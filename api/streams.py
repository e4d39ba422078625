"""Server-sent event streams that follow a job's events or metric points while they are written.

A stream reads the rows after its cursor in batches: a short read on the thread pool (never on the
event loop, and no connection held between reads). It reads again when there may be more: on
PostgreSQL when this process's listener (api.live) hears its job notified — a quiet stream costs
the database nothing, however many are open — and otherwise (SQLite, or while the listener is not
listening) every `stream_poll_seconds`. Each SSE `id` is the row id, so a client that reconnects
with `Last-Event-ID` (browsers do it on their own) gets exactly the rows it missed. Once the job has
ended and every row is out, an `end` event carries the job object and the stream closes; a
browser's EventSource must close itself on `end`, or it reconnects and gets `end` again.

A stream re-reads its API key when the listener hears it revoked (or reconnects), and when polling
every `stream_key_check_seconds`: once it is revoked an `error` event (the API's error shape,
`invalid_api_key`) ends the stream, as a plain request with that key gets a 401. Each open stream
holds one of its key's slots (api.slots) until it ends, however it ends: a stream is one request
for the rate limit, so one key could open hundreds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from api.live import Listener
from api.observability import OPEN_STREAMS
from api.schemas.common import ErrorBody, ErrorDetail
from api.schemas.jobs import JobObject
from api.slots import Slot
from store.db import session_scope
from store.models import TERMINAL_STATUSES
from store.repositories import jobs, keys
from store.repositories.scoping import Page
from store.settings import Settings

BATCH = 100
"""Rows per read: a reconnect far behind catches up in batches, without pauses between them."""
STREAM_RETRY_AFTER_S = 10
"""A hint only, for a stream refused past its cap: streams end when their job ends or their client goes."""


@dataclass(frozen=True)
class Feed:
    """What a stream follows: its SSE event name, a list function with the list endpoint's owner
    scoping (`read(session, owner_id, job_id, after=, limit=)`), and the list endpoint's item object."""

    event: str
    read: Callable[..., Page[Any]]
    render: Callable[[Any], BaseModel]


@dataclass(frozen=True)
class Reader:
    """Who follows what: the owner and the API key the stream was opened with, and the job."""

    owner_id: str
    api_key: str = field(repr=False)  # never in a log line
    job_id: str
    feed: Feed


@dataclass(frozen=True)
class _Poll:
    items: list[BaseModel]
    has_more: bool
    ended: JobObject | None = None  # the job, once it has ended
    gone: bool = False  # the job no longer exists (its owner was deleted)
    revoked: bool = False  # the stream's API key no longer authenticates its owner


REVOKED = ErrorBody(error=ErrorDetail(code="invalid_api_key", message="the API key of this stream was revoked"))


def _poll(reader: Reader, after: int | None, check_key: bool) -> _Poll:
    with session_scope() as session:
        if check_key and not _key_still_valid(session, reader):
            return _Poll([], False, revoked=True)
        return _read(session, reader, after)


def _key_still_valid(session: Session, reader: Reader) -> bool:
    owner = keys.authenticate(session, reader.api_key)
    return owner is not None and owner.id == reader.owner_id


def _read(session: Session, reader: Reader, after: int | None) -> _Poll:
    # The job before its rows: when it has already ended, the rows read next are all there will be.
    job = jobs.get(session, reader.owner_id, reader.job_id)
    if job is None:
        return _Poll([], False, gone=True)
    page = reader.feed.read(session, reader.owner_id, reader.job_id, after=after, limit=BATCH)
    ended = JobObject.from_row(job) if job.status in TERMINAL_STATUSES else None
    return _Poll([reader.feed.render(row) for row in page.items], page.has_more, ended)


async def follow(reader: Reader, after: int | None, settings: Settings,
                 listener: Listener) -> AsyncIterator[ServerSentEvent]:
    """The job's rows after `after` as SSE events, then `end` once the job has ended, or `error`
    once the stream's key is revoked."""
    with OPEN_STREAMS.track_inprogress(), listener.subscribed(reader.job_id, keys.hash_key(reader.api_key)) as waiter:
        key_checked = anyio.current_time()  # the request's own authentication was the first check
        while True:
            check_key = waiter.take_key_check() or (
                not listener.listening and anyio.current_time() - key_checked >= settings.stream_key_check_seconds)
            if check_key:
                key_checked = anyio.current_time()
                poll = await run_in_threadpool(_poll, reader, after, True)
            else:  # streams of this job woken by the same notification, at the same row, read once
                poll = await listener.read_shared(reader.job_id, (reader.owner_id, _feed_key(reader.feed), after),
                                                  partial(run_in_threadpool, _poll, reader, after, False))
            if poll.revoked:
                yield ServerSentEvent(data=REVOKED.model_dump_json(), event="error")
                return
            for item in poll.items:
                after = item.id  # type: ignore[attr-defined]
                yield ServerSentEvent(data=item.model_dump_json(), id=str(after), event=reader.feed.event)
            if poll.has_more:
                continue
            if poll.gone:
                return
            if poll.ended is not None:
                yield ServerSentEvent(data=poll.ended.model_dump_json(), event="end")
                return
            # Listening, the next notification (or the listener going away) wakes the stream.
            await waiter.wait(None if listener.listening else settings.stream_poll_seconds)


def _feed_key(feed: Feed) -> Hashable:
    """What a feed reads, comparable across requests: its event name and the filters its list
    function was bound with (a metrics stream's `key` and `split`)."""
    filters = feed.read.keywords if isinstance(feed.read, partial) else {}
    return feed.event, tuple(sorted(filters.items()))


class _SlotHoldingResponse(EventSourceResponse):
    """Gives the stream's slot back however the response ends: `end`, a revoked key, the client
    going away, or a failed send."""

    def __init__(self, content: AsyncIterator[ServerSentEvent], slot: Slot, ping: float) -> None:
        super().__init__(content, ping=ping)
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()


def event_stream(reader: Reader, after: int | None, settings: Settings, slot: Slot,
                 listener: Listener) -> EventSourceResponse:
    """The response for one stream, holding `slot` while it lasts: SSE comments keep a quiet
    connection open through proxies; a client that goes away cancels the waiting."""
    return _SlotHoldingResponse(follow(reader, after, settings, listener), slot,
                                ping=settings.stream_keepalive_seconds)
