"""`Client`: the API key, base URL, timeout and retry policy, and the two resources."""

from __future__ import annotations

import os
from types import TracebackType

import httpx

from client.errors import XModalClientError
from client.files import Files
from client.http import HTTP, RetryPolicy
from client.jobs import Jobs

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
"""Where `xmodal up` listens."""
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class Client:
    """A connection to one xmodal server.

    `base_url` and `api_key` default to the `XMODAL_BASE_URL` and `XMODAL_API_KEY` environment
    variables (the URL then to `xmodal up`'s). `max_retries` bounds the retries of a 429, 502,
    503, 504 or a failed connection. `transport` replaces httpx's (tests, proxies).

        with Client() as xm:
            file = xm.files.upload("dna.npz")
            job = xm.jobs.wait(xm.jobs.create(file.id, "tiny-bert", "orca").id)
            xm.jobs.download(job.id, dest="ckpt.tar")
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, max_retries: int = 2,
                 transport: httpx.BaseTransport | None = None) -> None:
        base_url = base_url or os.environ.get("XMODAL_BASE_URL") or DEFAULT_BASE_URL
        api_key = api_key or os.environ.get("XMODAL_API_KEY")
        if not api_key:
            raise XModalClientError("no API key: set XMODAL_API_KEY or pass one (`xmodal up` prints one; "
                                    "`xmodal keys create --owner NAME` makes one)")
        http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                            headers={"Authorization": f"Bearer {api_key}"})
        self._http = HTTP(http, RetryPolicy(max_retries=max_retries))
        self.files = Files(self._http)
        self.jobs = Jobs(self._http)

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def close(self) -> None:
        self._http.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
