"""Log lines for the API and the worker: text for people (the default) or, with
`XMODAL_LOG_FORMAT=json`, one JSON object per line for a log pipeline.

A record carries the id of the job it concerns: the worker binds it around a job's run and the
API around a request whose path names a job, so a pipeline can gather one job's lines from every
process. It lives in store because both api and worker use it and neither may import the other.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

current_job_id: ContextVar[str | None] = ContextVar("xmodal_job_id", default=None)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag every record logged inside the block (in this thread or asyncio task) with `job_id`."""
    token = current_job_id.set(job_id)
    try:
        yield
    finally:
        current_job_id.reset(token)


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message"}`, plus `job_id` when known and `exc` for a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or current_job_id.get()
        if job_id is not None:
            entry["job_id"] = job_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def json_logging_config(level: str = "INFO", loggers: tuple[str, ...] = ()) -> dict[str, Any]:
    """A `logging.config.dictConfig` that sends everything to stderr as JSON lines; `loggers` (a
    server's own, say) drop their handlers and propagate to that one."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {name: {"handlers": [], "propagate": True, "level": level} for name in loggers},
    }
