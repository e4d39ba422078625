"""`client.files`: dataset uploads."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from client.http import HTTP, segment
from client.types import File, FileDeleted, Page


class Files:
    def __init__(self, http: HTTP) -> None:
        self._http = http

    def upload(self, path: str | Path, purpose: str = "fine-tune", *, idempotency_key: str | None = None) -> File:
        """Stream the `.npz` at `path` to the server, which validates it before answering.

        Every attempt re-reads the file from the start under one `Idempotency-Key`, so a retry
        after a lost answer returns the file the first attempt stored instead of a second copy.
        """
        path = Path(path)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}

        def attempt() -> httpx.Response:
            with path.open("rb") as content:  # an unreadable file raises OSError: the caller's to fix
                return self._http.http.post("/v1/files", files={"file": (path.name, content)},
                                            data={"purpose": purpose}, headers=headers)

        return File.from_dict(self._http.send(attempt).json())

    def list(self, *, after: str | None = None, limit: int | None = None, purpose: str | None = None) -> Page[File]:
        """Newest first."""
        return self._http.page("/v1/files", File.from_dict, after=after, limit=limit, purpose=purpose)

    def get(self, file_id: str) -> File:
        return File.from_dict(self._http.json("GET", f"/v1/files/{segment(file_id)}"))

    def delete(self, file_id: str) -> FileDeleted:
        """Hides the file; jobs that already use it keep their data."""
        return FileDeleted.from_dict(self._http.json("DELETE", f"/v1/files/{segment(file_id)}"))
