"""Polled reads answered from this process's memory until their job changes.

Clients poll a job GET and its events. On PostgreSQL this process's listener (api.live) hears every
change to a job's row, events and metric points (migrations 0005 and 0007), so an answer read once
serves every poll after it until the job is next notified, kept as the JSON bytes sent: a repeated
poll costs no query, no thread-pool hop and no serialisation (bench/results/profile_job_get.md,
fourth step). A queued job's answer also goes stale when the queue changes (`xmodal_queue`: its
position and estimated start move when other jobs start and finish, which notifies those jobs, not
this one) and, as its estimate drifts with time, after `QUEUED_MAX_AGE_S`. After ageing, the old
answer (if under `SERVABLE_S` old) serves the polls that come while one read replaces it; after a
notification too, except to the poll that starts that read, which waits for it. A running job is
notified every second or so, and each notification used to make all of its pollers wait on that one
read (bench/results/profile_job_get.md, fifth step).
Without a listener (SQLite, or while its connection is down) every poll reads, as before.

Across API processes an answer follows a write by the time its notification takes to arrive
(milliseconds) plus one read; in the process that made the write, at once (`forget`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.deps import read_only
from api.live import Listener

QUEUED_MAX_AGE_S, SERVABLE_S = (5.0, 10.0), 30.0
"""A queued job's answer is read again after any queue notification (a job's status changed: positions
and the pace may have moved), and otherwise once it is 5 to 10 s old, as its estimated start drifts
with time (drawn per answer, so that answers read together are not all read again together). Until
the new one is in, the old one answers (after its job's notification too), if it is under 30 s old."""


@dataclass(frozen=True)
class Answer:
    """A read's answer as sent, and when it was read."""

    body: bytes
    read_at: float
    ages: bool  # true (a queued job): it also goes stale when the queue changes, and with time
    max_age: float = field(default_factory=lambda: random.uniform(*QUEUED_MAX_AGE_S))

    def fresh(self, queue_changed_at: float) -> bool:
        return not self.ages or (self.read_at > queue_changed_at and time.monotonic() - self.read_at < self.max_age)

    def servable(self) -> bool:
        return time.monotonic() - self.read_at < SERVABLE_S

    def response(self) -> Response:
        return Response(self.body, media_type="application/json")


def listener_of(request: Request) -> Listener:
    listener: Listener = request.app.state.stream_listener
    return listener


M = TypeVar("M", bound=BaseModel)


async def shared_answer(request: Request, job_id: str, key: Hashable, read: Callable[[Session], M | None],
                        ages: Callable[[M], bool] = lambda _: False) -> Response | None:
    """The answer of `read(session)` (None: nothing found, and nothing kept) about `job_id`, shared
    with every request that asks with the same `key` until the job is notified, or until it `ages`
    out. `key` must hold everything the answer depends on besides the job: the owner, the query."""

    async def read_answer() -> Answer | None:
        read_at = time.monotonic()

        def work(session: Session) -> Answer | None:
            model = read(session)
            return None if model is None else Answer(model.model_dump_json().encode(), read_at, ages(model))

        return await read_only(work)

    listener = listener_of(request)
    answer = await listener.read_shared(job_id, key, read_answer, lambda kept: kept.fresh(listener.queue_changed_at),
                                        Answer.servable)
    return None if answer is None else answer.response()


def forget(request: Request, job_id: str) -> None:
    """After this process changed the job: its next poll here reads, whatever the notification's delay."""
    listener_of(request).reads.forget(job_id)
