"""Sending one logical request: retries with backoff, error responses turned into exceptions.

A retry repeats the exact request, headers included, so a create's `Idempotency-Key` is the same
on every attempt and the server answers a retry with the object the first attempt made.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from time import sleep
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from client.errors import APIConnectionError, error_from_response, retry_after_seconds
from client.types import Page

T = TypeVar("T")

log = logging.getLogger("xmodal.client")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Rate limited, or a proxy / the server briefly away; a 500 is a bug and is not retried."""


@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` more attempts after the first, `base_delay * 2**n` seconds apart (capped at
    `max_delay`, times a random factor in [0.5, 1) so clients that failed together spread out).
    A `Retry-After` up to `max_retry_after` seconds is waited out exactly; a longer one is not
    retried: the caller gets the error, with `retry_after`, and decides."""

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def backoff(self, retry: int) -> float:
        return min(self.max_delay, self.base_delay * 2.0**retry) * random.uniform(0.5, 1.0)


class HTTP:
    """An httpx.Client with the API key, and the retry loop every client method goes through."""

    def __init__(self, http: httpx.Client, retry: RetryPolicy) -> None:
        self.http = http
        self.retry = retry

    @property
    def base_url(self) -> str:
        return str(self.http.base_url).rstrip("/")

    def request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return self.send(lambda: self.http.request(method, path, **kwargs))  # type: ignore[arg-type]

    def json(self, method: str, path: str, **kwargs: object) -> dict[str, Any]:
        return dict(self.request(method, path, **kwargs).json())

    def page(self, path: str, build: Callable[[dict[str, Any]], T], **params: object) -> Page[T]:
        """GET one page of a list; parameters that are None are left out."""
        body = self.json("GET", path, params={key: value for key, value in params.items() if value is not None})
        return Page([build(item) for item in body["data"]], body["has_more"], body.get("first_id"),
                    body.get("last_id"))

    def send(self, attempt: Callable[[], httpx.Response]) -> httpx.Response:
        """Call `attempt()` (one HTTP exchange, body read) until it succeeds or may not be retried.

        Returns a response under 400; raises XModalAPIError for an error response and
        APIConnectionError when the server could not be reached.
        """
        retry = 0
        while True:
            try:
                response = attempt()
            except httpx.TransportError as exc:
                if retry >= self.retry.max_retries:
                    raise APIConnectionError(self.base_url, _reason(exc)) from exc
                delay = self.retry.backoff(retry)
                log.info("cannot reach %s: %s; retrying in %.1f s", self.base_url, _reason(exc), delay)
            else:
                if response.status_code < 400:
                    return response
                error = error_from_response(response)
                if response.status_code not in RETRY_STATUSES or retry >= self.retry.max_retries:
                    raise error
                wait = retry_after_seconds(response)
                if wait is not None and wait > self.retry.max_retry_after:
                    raise error
                delay = wait if wait is not None else self.retry.backoff(retry)
                log.info("%s; retrying in %.1f s", error, delay)
            sleep(delay)
            retry += 1


def segment(object_id: str) -> str:
    """An id as one path segment: a stray `/` or `?` in it cannot reach another route."""
    return quote(object_id, safe="")


def _reason(exc: httpx.TransportError) -> str:
    """`[Errno 111] Connection refused` → `connection refused`; a timeout says so."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc).strip()) or type(exc).__name__
    return text[:1].lower() + text[1:]
