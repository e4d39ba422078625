"""A stand-in server for the client's unit tests: httpx.MockTransport with recorded requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from client import Client

BASE_URL = "http://xmodal.test"

Handler = Callable[[httpx.Request], httpx.Response]


class Server:
    """Answers each request with the next of `responses` (the last one repeats); keeps the requests."""

    def __init__(self, *responses: httpx.Response | Handler) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()  # keep the body: an upload's stream is closed once the exchange ends
        self.requests.append(request)
        answer = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        return answer(request) if callable(answer) else answer

    def client(self, **kwargs: Any) -> Client:
        return Client(BASE_URL, "xm-test", transport=httpx.MockTransport(self), **kwargs)


def error(status: int, code: str, message: str = "nope", param: str | None = None,
          headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, "param": param}},
                          headers=headers)


def job_json(**fields: Any) -> dict[str, Any]:
    """A JobObject as the API serialises it."""
    return {
        "id": "ftjob-1", "object": "fine_tuning.job", "status": "queued", "model": "tiny-bert",
        "method": {"type": "orca", "orca": {}}, "training_file": "file-1", "validation_file": None, "seed": 0,
        "suffix": None, "metadata": None, "progress": None, "attempt": 1, "max_attempts": 3,
        "cancel_requested": False, "created_at": 1_700_000_000, "started_at": None, "finished_at": None,
        "error": None, "result": None, **fields,
    }


def file_json(**fields: Any) -> dict[str, Any]:
    return {"id": "file-1", "object": "file", "bytes": 1234, "created_at": 1_700_000_000, "filename": "train.npz",
            "purpose": "fine-tune", "status": "processed", "sha256": "ab" * 32, "info": {"samples": 64},
            "error": None, **fields}


def page_json(items: list[dict[str, Any]], has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": items, "has_more": has_more,
            "first_id": items[0]["id"] if items else None, "last_id": items[-1]["id"] if items else None}
