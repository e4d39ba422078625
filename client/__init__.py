"""Python client for the xmodal API (httpx only: no core, store, api or worker).

    from client import Client
    with Client("http://127.0.0.1:8000", "xm-…") as xm:
        job = xm.jobs.create(xm.files.upload("dna.npz").id, "tiny-bert", "orca")
"""

from client.client import Client
from client.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    ChecksumError,
    ConflictError,
    NotFoundError,
    RateLimitError,
    ServerError,
    UnprocessableEntityError,
    WaitTimeout,
    XModalAPIError,
    XModalClientError,
)
from client.http import RetryPolicy
from client.types import Baseline, Checkpoint, Download, ErrorInfo, Event, File, FileDeleted, Job, JobProgress, Metric, Page

__all__ = [
    "APIConnectionError", "AuthenticationError", "BadRequestError", "Baseline", "Checkpoint", "ChecksumError", "Client",
    "ConflictError", "Download", "ErrorInfo", "Event", "File", "FileDeleted", "Job", "JobProgress", "Metric",
    "NotFoundError", "Page", "RateLimitError", "RetryPolicy", "ServerError", "UnprocessableEntityError",
    "WaitTimeout", "XModalAPIError", "XModalClientError",
]
