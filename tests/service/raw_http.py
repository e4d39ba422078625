"""Raw HTTP/1.1 over a socket, for the attacks an HTTP client library will not make: headers and
then a stalled body, a body that drips, a body far larger than what the server should read."""

from __future__ import annotations

import re
import socket
import time
from urllib.parse import urlsplit

import httpx


BODY_PIECE = 64 * 1024


def open_request(url: str, method: str, path: str, headers: dict[str, str], body_start: bytes = b"") -> socket.socket:
    """A connection that has sent the request line, `headers` and `body_start`, and nothing more.

    `body_start` goes in pieces and stops once the server has answered: a server that refuses
    early may close while it is still being sent (a broken pipe on our side, which is the behaviour
    under test, not a failure), and the answer is then read from the socket as usual."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    sock.sendall(head.encode())
    for start in range(0, len(body_start), BODY_PIECE):
        if answered(sock):
            break
        try:
            sock.sendall(body_start[start:start + BODY_PIECE])
        except (BrokenPipeError, ConnectionResetError):
            break  # the server answered and closed
    return sock


def read_response(sock: socket.socket, timeout: float) -> tuple[int, bytes]:
    """The status and body of the response on `sock`, read until the server closes or the body
    (by Content-Length) is complete; raises TimeoutError when none comes within `timeout` s."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if _ and length and len(body) >= int(length.group(1)):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete response within {timeout} s (got {data[:200]!r})")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        data += chunk
    status = re.match(rb"HTTP/1\.1 (\d{3})", data)
    if status is None:
        raise ConnectionError(f"the server closed the connection without a response (got {data[:200]!r})")
    return int(status.group(1)), data.partition(b"\r\n\r\n")[2]


def answered(sock: socket.socket) -> bool:
    """Whether the server has sent something (or closed) on `sock`, without waiting."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)  # b"" (closed) counts too
        return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def server_rss_bytes(http: httpx.Client) -> float:
    """The API process's resident memory, as its own /metrics reports it."""
    text = http.get("/metrics").text
    match = re.search(r"(?m)^process_resident_memory_bytes ([0-9.e+]+)$", text)
    assert match, "the API's /metrics has no process_resident_memory_bytes"
    return float(match.group(1))
