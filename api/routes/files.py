"""`/v1/files`: dataset uploads, validated on arrival.

An upload that is not a usable dataset (pickled or truncated `.npz`, NaN, wrong shapes, …) is
answered 400 with the error shape and leaves no file behind — like the OpenAI API rejecting a
malformed training file at upload, and so a client learns of the problem before it makes a job.
Every stored file is therefore `processed`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import BlobsDep, Credentials, CurrentOwner, IdempotencyKeyHeader, LimitDep, SessionDep, SettingsDep
from api.downloads import blob_response
from api.errors import ApiError, not_found
from api.idempotency import Once, create_once
from api.schemas.common import ListResponse
from api.schemas.files import PURPOSES, FileDeleted, FileObject, FilePurpose
from api.slots import Slots
from api.uploads import Upload, receive_upload
from core.data.validate import DatasetInfo, DatasetLimits, validate_npz
from core.errors import DatasetError
from store.blobs import BlobRef, Blobs
from store.db import session_scope
from store.models import File, Owner
from store.repositories import blob_reservations, files, idempotency, keys, quotas
from store.settings import Settings

router = APIRouter(prefix="/files", tags=["files"])
ENDPOINT = "files"
"""This route's name among idempotency keys."""

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "an .npz dataset (x, y; see the docs)"},
                "purpose": {"type": "string", "enum": list(PURPOSES), "default": PURPOSES[0]},
            },
        }}},
    }
}


FILENAME_MAX_CHARS = 255  # the column's width


@router.post("", response_model=FileObject, openapi_extra=_UPLOAD_BODY,
             responses={408: {"description": "The body stalled or came too slowly"},
                        413: {"description": "Larger than the upload limit or the owner's storage quota"},
                        415: {"description": "Not multipart/form-data"},
                        429: {"description": "Too many uploads in progress for this key or this server"}})
async def upload_file(request: Request, session: SessionDep, owner: CurrentOwner, settings: SettingsDep,
                      blobs: BlobsDep, credentials: Credentials,
                      idempotency_key: IdempotencyKeyHeader = None) -> FileObject:
    """Stream the upload into the blob store (hashing as it goes), validate it, record it.

    With `Idempotency-Key`, repeating the upload (same bytes, purpose and filename) returns the
    file the first one created; the key is checked once the bytes are in, since it covers them.
    An upload holds one of the key's upload slots until it is recorded, validation included, so
    uploads never take more than `max_uploads` of the thread pool the other routes share.
    From just before its blob is renamed into place until its file row exists, an upload holds the
    blob (a reservation row), so a refused upload of the same bytes cannot delete it meanwhile.
    """
    assert credentials is not None  # current_owner refused the request otherwise
    slots: Slots = request.app.state.upload_slots
    with slots.acquire(keys.hash_key(credentials.credentials), settings.max_uploads_per_key, settings.max_uploads):
        hold = BlobHold()
        try:
            upload = await receive_upload(request, blobs, settings.max_upload_bytes,
                                          read_timeout=settings.body_read_timeout_seconds,
                                          min_rate=settings.body_min_bytes_per_second, before_commit=hold.take)
            return await run_in_threadpool(_record_upload, session, owner, settings, blobs, upload, idempotency_key,
                                           hold)
        finally:
            if hold.id is not None:  # recorded (the file row holds the blob now) or failed otherwise
                await run_in_threadpool(hold.release)


def _record_upload(session: Session, owner: Owner, settings: Settings, blobs: Blobs, upload: Upload,
                   idempotency_key: str | None, hold: BlobHold) -> FileObject:
    try:
        filename = upload.filename
        if filename is None:
            raise ApiError(422, "missing_parameter", "file: a file part named 'file' is required", "file")
        if len(filename) > FILENAME_MAX_CHARS or any(ord(char) < 0x20 for char in filename):
            raise ApiError(422, "invalid_parameter", f"file: the filename must be at most {FILENAME_MAX_CHARS} "
                                                     "characters with no control characters", "file")
        purpose = upload.fields.get("purpose", PURPOSES[0])
        if purpose not in PURPOSES:
            raise ApiError(422, "invalid_parameter", f"purpose: expected one of {', '.join(PURPOSES)}", "purpose")
        request = {"sha256": upload.blob.sha256, "purpose": purpose, "filename": filename}
        once = None if idempotency_key is None else Once(
            owner.id, ENDPOINT, idempotency_key, idempotency.fingerprint(request), settings.idempotency_ttl_seconds)
        row, _ = create_once(session, once,
                             lambda: _create(session, owner, settings, blobs, upload.blob, filename, purpose),
                             lambda file_id: files.get(session, owner.id, file_id))
    except (ApiError, DatasetError):
        session.rollback()  # end its transaction first: on SQLite an open one could block the discard's write
        _discard_unreferenced(blobs, upload.blob.sha256, hold)
        raise
    return FileObject.from_row(row)


def _create(session: Session, owner: Owner, settings: Settings, blobs: Blobs, blob: BlobRef, filename: str,
            purpose: str) -> File:
    """Validate the dataset (against the deployment's upload limit, not core's default), check the quota, record."""
    info = _validate(settings, blobs, blob)
    if settings.max_storage_bytes:
        _require_storage(session, owner, settings.max_storage_bytes, blob.size)
    return files.create(session, owner_id=owner.id, filename=filename, purpose=purpose, bytes=blob.size,
                        sha256=blob.sha256, status="processed", info=info.as_dict())


def _validate(settings: Settings, blobs: Blobs, blob: BlobRef) -> DatasetInfo:
    """Core's validator reads a local, seekable file (an .npz is a zip: its index is at the end). A
    local store links the blob; object storage downloads it to scratch, deleted right after."""
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.work_dir, prefix="validate-") as scratch:
        path = blobs.fetch(blob.sha256, Path(scratch) / "upload.npz")
        return validate_npz(path, DatasetLimits(max_file_bytes=settings.max_upload_bytes))


def _require_storage(session: Session, owner: Owner, quota: int, size: int) -> None:
    quotas.lock(session, owner.id)
    used = quotas.stored_bytes(session, owner.id)
    if used + size > quota:
        raise ApiError(413, "storage_quota_exceeded", f"this file ({size} bytes) would take your files past the "
                       f"storage quota of {quota} bytes ({used} in use); delete files you no longer need", "file")


@dataclass
class BlobHold:
    """An upload's reservation of its blob, once taken (see store.repositories.blob_reservations).
    Each step is its own short transaction, so no connection is held while the body streams in."""

    id: str | None = None

    def take(self, sha256: str) -> None:
        """Reserve the blob; `receive_upload` calls this just before renaming it into place."""
        with session_scope() as session:
            self.id = blob_reservations.reserve(session, sha256)

    def release(self) -> None:
        assert self.id is not None
        with session_scope() as session:
            blob_reservations.release(session, self.id)
        self.id = None


def _discard_unreferenced(blobs: Blobs, sha256: str, hold: BlobHold) -> None:
    """Drop a rejected upload's blob unless something else holds the same bytes: a file or
    checkpoint row, or another upload still on its way to its file row."""
    with session_scope() as session:
        blob_reservations.lock(session, sha256)
        if hold.id is not None:
            blob_reservations.release(session, hold.id)
        if not blob_reservations.in_use(session, sha256):
            blobs.delete(sha256)  # under the lock: no reservation of these bytes can be written meanwhile
    hold.id = None


@router.get("", response_model=ListResponse[FileObject])
def list_files(session: SessionDep, owner: CurrentOwner, limit: LimitDep,
               after: Annotated[str | None, Query(max_length=64, description="id of the last file seen")] = None,
               purpose: FilePurpose | None = None) -> ListResponse[FileObject]:
    """Newest first."""
    page = files.list_files(session, owner.id, after=after, limit=limit, purpose=purpose)
    return ListResponse[FileObject].of([FileObject.from_row(row) for row in page.items], page.has_more)


def _file_or_404(session: Session, owner: Owner, file_id: str) -> File:
    row = files.get(session, owner.id, file_id)
    if row is None:
        raise not_found("file", file_id)
    return row


@router.get("/{file_id}", response_model=FileObject)
def get_file(file_id: str, session: SessionDep, owner: CurrentOwner) -> FileObject:
    return FileObject.from_row(_file_or_404(session, owner, file_id))


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(file_id: str, session: SessionDep, owner: CurrentOwner) -> FileDeleted:
    """Hide the file; jobs that already use it keep their data (the blob stays)."""
    if files.delete(session, owner.id, file_id) is None:
        raise not_found("file", file_id)
    session.commit()
    return FileDeleted(id=file_id)


@router.get("/{file_id}/content", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 304: {}, 416: {}})
def download_file(file_id: str, request: Request, session: SessionDep, owner: CurrentOwner,
                  blobs: BlobsDep) -> Response:
    row = _file_or_404(session, owner, file_id)
    return blob_response(request, blobs, row.sha256, "application/octet-stream", row.filename)
