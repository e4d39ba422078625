"""Serving blobs to clients: `ETag` is the blob's sha256, `If-None-Match` answers 304, and one
`Range` resumes an interrupted download (206, or 416 when it lies past the end)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from api.errors import ApiError
from store.blobs import Blobs


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The `[start, end)` of one `bytes=` range of a `size`-byte body.

    None means "ignore the header and send everything", which RFC 9110 allows for a header that is
    malformed or asks for several ranges. Raises a 416 ApiError for a range past the end.
    """
    units, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if units.strip().lower() != "bytes" or not dash or "," in spec or not (first or last):
        return None
    if any(part and not part.isdigit() for part in (first, last)):
        return None
    if not first:  # "bytes=-N": the last N bytes
        start, end = max(0, size - int(last)), size
        satisfiable = int(last) > 0 and size > 0
    else:
        start = int(first)
        if last and int(last) < start:
            return None
        end = min(int(last) + 1, size) if last else size
        satisfiable = start < size
    if not satisfiable:
        raise ApiError(416, "range_not_satisfiable", f"range {spec.strip()!r} is outside the {size} bytes",
                       "Range", headers={"Content-Range": f"bytes */{size}"})
    return start, end


def _etag_matches(if_none_match: str, etag: str) -> bool:
    candidates = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


def _content_disposition(filename: str) -> str:
    quoted = quote(filename)
    return f"attachment; filename*=utf-8''{quoted}" if quoted != filename else f'attachment; filename="{filename}"'


def blob_response(request: Request, blobs: Blobs, sha256: str, media_type: str, filename: str) -> Response:
    """Stream the blob `sha256` from the store, honouring If-None-Match and Range. Only the range
    asked for is read (a ranged GET on object storage), a chunk at a time: nothing is buffered whole."""
    size = blobs.size(sha256)  # a missing blob is lost data: let it surface as a 500 before any header
    etag = f'"{sha256}"'
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Disposition": _content_disposition(filename)}
    if _etag_matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers={"ETag": etag, "Accept-Ranges": "bytes"})
    wanted = request.headers.get("range")
    span = parse_range(wanted, size) if wanted else None
    start, end = span or (0, size)
    headers["Content-Length"] = str(end - start)
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(blobs.read(sha256, start, end), status_code=206 if span else 200, media_type=media_type,
                             headers=headers)
