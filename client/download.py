"""Resumable downloads: bytes go to `<dest>.part`, a retry or a later run continues it with
`Range: bytes=N-`, and the whole file must hash to the server's `ETag` (its sha256) before it
is renamed to `dest` — so `dest` is never a partial or corrupt file."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import httpx

from client.errors import ChecksumError, XModalClientError
from client.http import HTTP
from client.types import Download

CHUNK_BYTES = 1024 * 1024

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes on disk, total bytes or None) as a download advances."""


def download(http: HTTP, path: str, dest: Path, *, resume: bool = True,
             on_progress: ProgressCallback | None = None) -> Download:
    """GET `path` into `dest`; with `resume`, continue a `<dest>.part` an earlier run left."""
    part = dest.with_name(dest.name + ".part")
    if not resume:
        part.unlink(missing_ok=True)
    transfer = _Transfer(http.http, path, part, on_progress)
    response = http.send(transfer.attempt)
    expected = response.headers.get("etag", "").removeprefix("W/").strip('"')
    actual = _sha256(part)
    if expected and actual != expected:
        part.unlink()
        if transfer.resumed_from:  # the old partial bytes were not this file's: fetch it whole, once
            return download(http, path, dest, resume=False, on_progress=on_progress)
        raise ChecksumError(f"{http.base_url}{path}", expected, actual)
    size = part.stat().st_size
    os.replace(part, dest)
    return Download(dest, size, actual, transfer.resumed_from or 0)


class _Transfer:
    """One download into `part`; each attempt continues from the bytes already there."""

    def __init__(self, http: httpx.Client, path: str, part: Path, on_progress: ProgressCallback | None) -> None:
        self.http, self.path, self.part, self.on_progress = http, path, part, on_progress
        self.resumed_from: int | None = None  # where the first attempt that got bytes started

    def attempt(self) -> httpx.Response:
        offset = self.part.stat().st_size if self.part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self.http.stream("GET", self.path, headers=headers) as response:
            if not (response.status_code == 416 and offset):
                if response.is_error:
                    response.read()  # for the error body
                else:
                    self._write(response, offset)
                return response
        self.part.unlink()  # 416: the partial file is as long as the blob or longer; start over
        return self.attempt()

    def _write(self, response: httpx.Response, offset: int) -> None:
        start = offset if response.status_code == 206 else 0  # a 200 ignored the Range: all bytes follow
        if start and not response.headers.get("content-range", "").startswith(f"bytes {start}-"):
            raise XModalClientError(f"asked {self.path} for bytes {start}- but got "
                                    f"{response.headers.get('content-range')!r}")
        if self.resumed_from is None:
            self.resumed_from = start
        length = response.headers.get("content-length")
        total = start + int(length) if length is not None else None
        done = start
        with self.part.open("ab" if start else "wb") as out:
            for chunk in response.iter_bytes():  # as they arrive: a dropped connection keeps them all
                out.write(chunk)
                done += len(chunk)
                if self.on_progress is not None:
                    self.on_progress(done, total)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
