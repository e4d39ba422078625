"""One LISTEN connection per API process that wakes its SSE streams when their job's rows change.

On PostgreSQL, triggers (migration 0005) NOTIFY `store.live.JOBS_CHANNEL` with a job's id when one
of its events or metric points is inserted, its status changes or it is deleted, and
`KEYS_CHANNEL` with a key's hash when the key is revoked or deleted. The listener wakes the
streams of that job (or key), and only they read: the database's work follows the rows written,
not the number of open streams. A quiet stream costs nothing, and the streams of one job that a
notification wakes share one read (`read_shared`) where they follow the same rows from the same row.

A notification sent while the connection is down is lost, so every (re)connection wakes every
stream (each re-reads once and re-checks its key), and while the listener is not listening
(SQLite, start-up, a lost connection waiting out its backoff) streams poll every
`stream_poll_seconds`, as they always did. The connection is checked with `SELECT 1` every
`CHECK_S`, so a silently dead one is noticed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import psycopg

from store.live import JOBS_CHANNEL, KEYS_CHANNEL, QUEUE_CHANNEL, notify_conninfo

log = logging.getLogger("xmodal.api.live")
T = TypeVar("T")

CHECK_S = 10.0
"""How often a quiet listener checks its connection (one query per API process, not per stream)."""
CONNECT_TIMEOUT_S = 10
APPLICATION_NAME = "xmodal-stream-listener"
"""How the connection shows in pg_stat_activity."""
BACKOFF_S, MAX_BACKOFF_S = 0.5, 30.0
"""Waits between reconnection attempts: doubling from the first to the second."""


class Waiter:
    """One stream's place at the listener: `wait` returns once its job (or its key) was notified."""

    def __init__(self, job_id: str, key_hash: str) -> None:
        self.job_id, self.key_hash = job_id, key_hash
        self.check_key = False  # set when the key may have been revoked: the stream re-checks it
        self._woken = asyncio.Event()

    def wake(self, check_key: bool = False) -> None:
        self.check_key = self.check_key or check_key
        self._woken.set()

    async def wait(self, timeout: float | None) -> None:
        """Until woken, or `timeout` seconds (None: no limit). A wake that came while the stream was
        reading is kept, so this returns at once and the stream reads again: nothing is missed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout)
        self._woken.clear()

    def take_key_check(self) -> bool:
        check, self.check_key = self.check_key, False
        return check


class Listener:
    """This process's listener; `listening` says whether streams may wait for it instead of polling."""

    def __init__(self) -> None:
        self._by_job: defaultdict[str, set[Waiter]] = defaultdict(set)
        self._by_key: defaultdict[str, set[Waiter]] = defaultdict(set)
        self.reads = JobReads()
        self.queue_changed_at = -math.inf  # monotonic seconds of the latest queue notification
        self._task: asyncio.Task[None] | None = None
        self.listening = False

    def start(self, database_url: str) -> None:
        """Listen in the background on the database's channels; on SQLite there is nothing to
        listen to, and streams poll."""
        conninfo = notify_conninfo(database_url)
        if conninfo is not None and self._task is None:
            self._task = asyncio.create_task(self._run(conninfo), name="xmodal-stream-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.listening = False

    @contextlib.contextmanager
    def subscribed(self, job_id: str, key_hash: str) -> Iterator[Waiter]:
        """A waiter for one stream, woken by its job's and its key's notifications while it lasts."""
        waiter = Waiter(job_id, key_hash)
        self._by_job[job_id].add(waiter)
        self._by_key[key_hash].add(waiter)
        try:
            yield waiter
        finally:
            _discard(self._by_job, job_id, waiter)
            _discard(self._by_key, key_hash, waiter)
            if job_id not in self._by_job:
                self.reads.forget(job_id)  # its streams' pages go with the last of them

    async def read_shared(self, job_id: str, key: Hashable, read: Callable[[], Awaitable[T]],
                          fresh: Callable[[T], bool] = lambda _: True, servable: Callable[[T], bool] = lambda _: False
                          ) -> T:
        """`read()`'s result, shared by every caller that asks about the job with the same `key` until
        the job's next notification (`JobReads`); while not listening there are no notifications to go
        by, and each caller reads for itself."""
        if not self.listening:
            return await read()
        return await self.reads.get(job_id, key, read, fresh, servable)

    async def _run(self, conninfo: str) -> None:
        backoff = BACKOFF_S
        while True:
            try:
                await self._listen(conninfo)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("stream listener: no database connection (%s); SSE streams poll until it is "
                            "back, retrying in %.1f s", exc, backoff)
            except Exception:  # a bug here must not end live updates for good: say so, and go on
                log.exception("stream listener failed; SSE streams poll until it is back")
            if self.listening:  # it had worked: streams switch to polling, and the retry comes soon
                self.listening = False
                self._wake_all()
                backoff = BACKOFF_S
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _listen(self, conninfo: str) -> None:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                                         application_name=APPLICATION_NAME) as conn:
            for channel in (JOBS_CHANNEL, KEYS_CHANNEL, QUEUE_CHANNEL):
                await conn.execute(f"LISTEN {channel}")
            self.listening = True
            log.info("stream listener is listening on %s, %s and %s", JOBS_CHANNEL, KEYS_CHANNEL, QUEUE_CHANNEL)
            self._wake_all()  # whatever was written while nobody listened
            while True:
                async for note in conn.notifies(timeout=CHECK_S):
                    self._dispatch(note.channel, note.payload)
                await asyncio.wait_for(conn.execute("SELECT 1"), CHECK_S)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == JOBS_CHANNEL:
            self.reads.supersede(payload)  # its rows changed: reads before this are stale
            for waiter in list(self._by_job.get(payload, ())):
                waiter.wake()
        elif channel == QUEUE_CHANNEL:
            self.queue_changed_at = time.monotonic()  # queued jobs' answers read before this are stale
        elif channel == KEYS_CHANNEL:
            for waiter in list(self._by_key.get(payload, ())):
                waiter.wake(check_key=True)

    def _wake_all(self) -> None:
        self.reads.clear()  # a notification may have gone unheard: no read before now may be shared
        for waiters in list(self._by_job.values()):
            for waiter in list(waiters):
                waiter.wake(check_key=True)  # a revocation may have gone unheard too


class JobReads:
    """Results of reads about jobs, each shared until its job's next notification: the SSE streams of
    a job that a notification wakes share one read, and polled job GETs are answered without the
    database until the job changes (api/routes/jobs.py).

    A read started after the job's latest notification sees every row that notification announced,
    so its result serves later callers as well as a read of their own would. A notification
    supersedes the job's results: the next caller starts a new read. A read still running when its
    job is notified serves only those already waiting for it; it is not kept. A failed read, a None
    result (nothing found: the job may be created later) and a result that `fresh` rejects are not
    kept either. A result that aged out of `fresh`, but is still `servable`, answers the callers
    that come while its replacement is read (one read, in the background of their answers). So does
    a superseded one, except to the caller whose question starts the read: it waits, so a lone poller
    sees the change at its first poll after the notification, as a read of its own would show it;
    those that come during that read get the old result. Callers that must see the change (a stream
    woken by it) pass no `servable`, and wait for the read. `forget` (this process changed the job)
    drops results outright: nothing read before it answers again. At most `max_jobs` jobs are held,
    the least recently asked about dropped first.
    """

    def __init__(self, max_jobs: int = 4096) -> None:
        self.max_jobs = max_jobs
        self._by_job: OrderedDict[str, dict[Hashable, _Shared]] = OrderedDict()

    async def get(self, job_id: str, key: Hashable, read: Callable[[], Awaitable[T]],
                  fresh: Callable[[T], bool] = lambda _: True, servable: Callable[[T], bool] = lambda _: False) -> T:
        reads = self._by_job.get(job_id)
        if reads is None:
            reads = self._by_job[job_id] = {}
            while len(self._by_job) > self.max_jobs:
                self._by_job.popitem(last=False)
        else:
            self._by_job.move_to_end(job_id)
        shared = reads.get(key)
        notified = shared is not None and shared.superseded
        if shared is None or notified or (shared.read.done() and not shared.kept(fresh)):
            aged = None if shared is None else shared.latest()
            # a task: one caller going cancels no one's read
            shared = reads[key] = _Shared(asyncio.ensure_future(read()), aged)
            shared.read.add_done_callback(partial(_settle, reads, key, shared, fresh))
            if notified:  # the first to ask after a notification waits for what it announced
                return await asyncio.shield(shared.read)  # type: ignore[no-any-return]
        shared.asked = True
        if shared.stale is not None and not shared.read.done() and servable(shared.stale):
            return shared.stale  # type: ignore[no-any-return]
        return await asyncio.shield(shared.read)  # type: ignore[no-any-return]

    def supersede(self, job_id: str) -> None:
        """The job was notified: its results may be served, where servable, only while new ones are
        read. A question nobody asked since the previous notification is dropped instead (a follower's
        old `after=` page), so a job's answers do not pile up over its life."""
        reads = self._by_job.get(job_id)
        if reads is None:
            return
        for key, shared in list(reads.items()):
            if shared.asked:
                shared.superseded, shared.asked = True, False
            else:
                del reads[key]
        if not reads:
            del self._by_job[job_id]

    def forget(self, job_id: str) -> None:
        self._by_job.pop(job_id, None)

    def clear(self) -> None:
        self._by_job.clear()

    def __len__(self) -> int:
        return sum(len(reads) for reads in self._by_job.values())


@dataclass
class _Shared:
    """One shared read, and the older result it replaces, served until it is in."""

    read: asyncio.Future[Any]
    stale: Any = None
    superseded: bool = False  # its job was notified since the read began
    asked: bool = True  # by a caller since the job's latest notification (its creator asked)

    def result(self) -> Any:
        """The read's result, or None while it runs or when it failed."""
        done = self.read
        return done.result() if done.done() and not done.cancelled() and done.exception() is None else None

    def latest(self) -> Any:
        """The newest result this holds: the read's once in, else the one it replaces."""
        result = self.result()
        return self.stale if result is None else result

    def kept(self, fresh: Callable[[Any], bool]) -> bool:
        result = self.result()
        return result is not None and not self.superseded and fresh(result)


def _settle(reads: dict[Hashable, _Shared], key: Hashable, shared: _Shared, fresh: Callable[[Any], bool],
            _: asyncio.Future[Any]) -> None:
    """A finished read replaces the aged result; one not to be shared on is dropped, so the next
    caller reads again."""
    shared.stale = None
    if reads.get(key) is shared and not shared.kept(fresh):
        del reads[key]


def _discard(index: defaultdict[str, set[Waiter]], name: str, waiter: Waiter) -> None:
    waiters = index.get(name)
    if waiters is not None:
        waiters.discard(waiter)
        if not waiters:
            del index[name]  # a finished job's id holds no memory afterwards
