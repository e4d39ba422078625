"""Streaming multipart uploads: the file part goes straight into the blob store, hashed as it
arrives, and reading stops as soon as it passes the size limit. Nothing is spooled whole, in
memory or on disk, before the limit is checked (FastAPI's `UploadFile` would spool it all first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from api.bodies import BodyReader
from api.errors import ApiError
from store.blobs import BlobRef, Blobs, BlobTooLarge, Writer

FIELD_MAX_BYTES = 1024
"""Text fields (`purpose`) are short; a longer one is a client mistake, not something to buffer."""
OVERHEAD_MAX_BYTES = 64 * 1024
"""Boundaries, part headers and text fields allowed on top of the file's own limit."""
BATCH_BYTES = 1024 * 1024
"""Body bytes gathered on the event loop before one trip to a thread parses, hashes and writes them:
fewer, larger trips than one per (often 64 KiB) chunk, whose hand-off cost dominated."""


@dataclass(frozen=True)
class Upload:
    blob: BlobRef
    filename: str | None  # None: the request had no file part under the expected name
    fields: dict[str, str]


@dataclass
class _Parts:
    """python-multipart callbacks: the file part's bytes queue up for the blob writer; text fields are kept."""

    file_field: str
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    pending: list[bytes] = field(default_factory=list)
    complete: bool = False  # the closing boundary was seen
    _header_name: bytes = b""
    _header_value: bytes = b""
    _disposition: bytes = b""
    _name: str = ""
    _in_file: bool = False
    _text: bytearray = field(default_factory=bytearray)

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value_data, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end, "on_end": self._end,
        }

    def drain(self) -> Iterator[bytes]:
        chunks, self.pending = self.pending, []
        yield from chunks

    def _part_begin(self) -> None:
        self._disposition, self._name, self._in_file, self._text = b"", "", False, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise ApiError(400, "invalid_multipart", "a multipart part has no name in its Content-Disposition")
        self._name = options[b"name"].decode("utf-8", "replace")
        if self._name == self.file_field and b"filename" in options:
            if self.filename is not None:
                raise ApiError(400, "invalid_multipart", f"more than one '{self.file_field}' part", self.file_field)
            self.filename = options[b"filename"].decode("utf-8", "replace") or "upload"
            self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.pending.append(bytes(data[start:end]))
            return
        self._text += data[start:end]
        if len(self._text) > FIELD_MAX_BYTES:
            hint = " (send it as a file part, with a filename)" if self._name == self.file_field else ""
            message = f"field {self._name!r} is longer than {FIELD_MAX_BYTES} bytes{hint}"
            raise ApiError(400, "invalid_multipart", message, self._name)

    def _part_end(self) -> None:
        if not self._in_file:
            self.fields[self._name] = self._text.decode("utf-8", "replace")

    def _end(self) -> None:
        self.complete = True


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "file_too_large", f"the file exceeds the upload limit of {max_bytes} bytes", "file")


async def receive_upload(request: Request, blobs: Blobs, max_bytes: int, file_field: str = "file",
                         read_timeout: float = 30.0, min_rate: int = 0,
                         before_commit: Callable[[str], None] | None = None) -> Upload:
    """Parse a multipart/form-data body, streaming the `file_field` part into `blobs`.

    The body is read on the event loop (a stalled client holds no thread); only parsing, hashing and
    writing a batch go to a thread, once the batch is here. Raises ApiError: 413 past `max_bytes`
    (checked on Content-Length first, then on the bytes themselves), 408 when the body stalls (see
    BodyReader), 400 for a body that is not well-formed multipart. A failed upload leaves no temp file.
    """
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(415, "unsupported_media_type", "send the file as multipart/form-data")
    body_limit = max_bytes + OVERHEAD_MAX_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise too_large(max_bytes)

    parts = _Parts(file_field)
    parser = MultipartParser(params[b"boundary"], parts.callbacks())  # type: ignore[arg-type]
    body = BodyReader(request.receive, read_timeout, min_rate)

    def store(batch: bytes, writer: Writer) -> None:
        """On a thread: the bounded CPU and disk work of one batch."""
        parser.write(batch)
        for data in parts.drain():
            writer.write(data)

    writer = await run_in_threadpool(blobs.writer, max_bytes)
    try:
        # never ask for more than it takes to cross the file limit, so an oversized body stops early
        while batch := await body.read(max(1, min(BATCH_BYTES, max_bytes + 1 - writer.size))):
            if body.received > body_limit:
                raise too_large(max_bytes)
            await run_in_threadpool(store, batch, writer)
        parser.finalize()
        if not parts.complete:
            raise ApiError(400, "invalid_multipart", "the multipart body ended before its closing boundary")
        await run_in_threadpool(store, b"", writer)
        blob = await run_in_threadpool(writer.commit, before_commit)  # before_commit(sha256) precedes the blob
    except BlobTooLarge:
        raise too_large(max_bytes) from None
    except MultipartParseError as exc:
        raise ApiError(400, "invalid_multipart", f"malformed multipart body: {exc}") from None
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away mid-upload") from None
    finally:
        # on the event loop, so a cancelled request cleans up too (on object storage: one abort request); a
        # no-op after commit
        writer.discard()
    return Upload(blob, parts.filename, parts.fields)
