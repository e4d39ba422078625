"""Database writes from a job process that outlive a brief database outage.

A job that trains for hours must not fail because PostgreSQL restarted for a few seconds: each
write runs in its own transaction and is retried with backoff until `give_up_after` seconds have
passed (the lease length: past that the job is lost anyway and the reaper takes over). A commit
whose acknowledgement was lost may be applied twice; an event or metric point shown twice is the
price, and it is rare.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from store.db import TRANSIENT_ERRORS, session_scope

log = logging.getLogger(__name__)

T = TypeVar("T")
FIRST_DELAY_S, MAX_DELAY_S = 0.2, 5.0


def in_session(work: Callable[[Session], T], *, give_up_after: float) -> T:
    """`work(session)` in a committed transaction, retried while the database is unreachable."""
    deadline = time.monotonic() + give_up_after
    delay = FIRST_DELAY_S
    while True:
        try:
            with session_scope() as session:
                return work(session)
        except TRANSIENT_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable (%s); retrying in %.1f s", str(exc).splitlines()[0], delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
