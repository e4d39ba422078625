"""Reading a request body on the event loop with a deadline, so a client that sends headers and
then stalls (or drips a byte at a time) is cut off instead of holding its connection, and never
holds a thread-pool thread while it waits.
"""

from __future__ import annotations

import time

import anyio
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from api.errors import ApiError


def body_timeout(message: str) -> ApiError:
    """408, and the connection closes: the rest of a stalled body is not worth waiting for."""
    return ApiError(408, "request_timeout", message, headers={"Connection": "close"})


class BodyReader:
    """Pulls an ASGI request body chunk by chunk: each chunk must come within `read_timeout`
    seconds, and once the body is `read_timeout` old it must have averaged `min_rate` bytes a
    second (0: no minimum). Raises ApiError 408 otherwise, ClientDisconnect if the client left."""

    def __init__(self, receive: Receive, read_timeout: float, min_rate: int = 0) -> None:
        self._receive, self._read_timeout, self._min_rate = receive, read_timeout, min_rate
        self._started = time.monotonic()
        self._more = True
        self.received = 0

    async def chunk(self) -> bytes:
        """The next non-empty chunk, or b"" at the end of the body."""
        while self._more:
            with anyio.move_on_after(self._read_timeout) as scope:
                message = await self._receive()
            if scope.cancelled_caught:
                raise body_timeout(f"the request body sent nothing for {self._read_timeout:g} s")
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            self._more = bool(message.get("more_body", False))
            data: bytes = message.get("body", b"")
            if data:
                self.received += len(data)
                self._check_rate()
                return data
        return b""

    async def read(self, want: int) -> bytes:
        """Chunks joined until at least `want` bytes or the end of the body (b"" at the end)."""
        batch: list[bytes] = []
        size = 0
        while size < want and (data := await self.chunk()):
            batch.append(data)
            size += len(data)
        return b"".join(batch)

    def _check_rate(self) -> None:
        elapsed = time.monotonic() - self._started
        if self._min_rate and elapsed > self._read_timeout and self.received < self._min_rate * elapsed:
            raise body_timeout(f"the request body arrived slower than {self._min_rate} bytes a second")
