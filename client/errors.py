"""What the client raises: one tree, so callers catch at the level they care about.

    XModalClientError            anything this package raises on purpose
    ├── APIConnectionError       no answer: refused, unreachable, timed out (after retries)
    ├── XModalAPIError           the server answered with {"error": {code, message, param}}
    │   ├── BadRequestError 400, AuthenticationError 401, NotFoundError 404, ConflictError 409,
    │   ├── UnprocessableEntityError 422, RateLimitError 429, ServerError 5xx
    ├── WaitTimeout              jobs.wait() gave up before the job finished
    └── ChecksumError            downloaded bytes do not match the server's sha256
"""

from __future__ import annotations

import email.utils
import time
from http import HTTPStatus
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from client.types import Job


class XModalClientError(Exception):
    """Base of every error the client raises on purpose."""


class APIConnectionError(XModalClientError):
    """The request got no HTTP answer (connection refused, DNS, timeout), even after retries."""

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(f"cannot reach {base_url}: {reason}")
        self.base_url = base_url
        self.reason = reason


class XModalAPIError(XModalClientError):
    """An error response. `code` is stable (`job_not_found`, `rate_limited`, …); `param` names the
    offending field when there is one."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{message} ({status} {code})")
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after = retry_after


class BadRequestError(XModalAPIError):
    """400: e.g. an invalid dataset, a file that is not ready."""


class AuthenticationError(XModalAPIError):
    """401: missing, invalid or revoked API key."""


class NotFoundError(XModalAPIError):
    """404: no such object, or another owner's."""


class ConflictError(XModalAPIError):
    """409: e.g. cancelling a job that already finished."""


class UnprocessableEntityError(XModalAPIError):
    """422: an invalid parameter (the config, a reused Idempotency-Key, …)."""


class RateLimitError(XModalAPIError):
    """429: too many requests or too many active jobs; `retry_after` says when to try again."""


class ServerError(XModalAPIError):
    """5xx: the server failed or is briefly unavailable."""


class WaitTimeout(XModalClientError):
    """The job was still unfinished when `jobs.wait()` ran out of time; `job` is its last state."""

    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(f"job {job.id} still {job.status} after {timeout:g} s")
        self.job = job
        self.timeout = timeout


class ChecksumError(XModalClientError):
    """A download's sha256 differs from the ETag the server sent; the bytes were discarded."""

    def __init__(self, url: str, expected: str, actual: str) -> None:
        super().__init__(f"download of {url} is corrupt: sha256 {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual


_BY_STATUS: dict[int, type[XModalAPIError]] = {
    400: BadRequestError, 401: AuthenticationError, 404: NotFoundError, 409: ConflictError,
    422: UnprocessableEntityError, 429: RateLimitError,
}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds from now (it may be a number or an HTTP date); None if absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def error_from_response(response: httpx.Response) -> XModalAPIError:
    """The error shape parsed into its exception; a body that is not the shape (a proxy's HTML page)
    still gives the status, with the reason phrase as the code."""
    status = response.status_code
    try:
        detail = response.json()["error"]
        code, message, param = str(detail["code"]), str(detail["message"]), detail.get("param")
    except (ValueError, KeyError, TypeError):
        code = _phrase(status).lower().replace(" ", "_").replace("-", "_")
        message = response.text.strip()[:200] or _phrase(status)
        param = None
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else XModalAPIError)
    return kind(status, code, message, param, retry_after_seconds(response))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "http error"
