"""Blob HEAD / GET (with Range) / DELETE."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from dockyard.api.services import services_of
from dockyard.domain.names import validate_digest, validate_name
from dockyard.domain.numbers import MAX_DIGITS, parse_count
from dockyard.errors import RangeInvalid

SMALL_BLOB_BYTES = 64 * 1024
_RANGE_RE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


def parse_range(header: str, size: int) -> tuple[int, int]:
    """RFC 9110 single byte range → inclusive (start, end), clamped to the blob; 416 if unsatisfiable."""
    unsatisfiable = {"Content-Range": f"bytes */{size}"}
    m = _RANGE_RE.fullmatch(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        raise RangeInvalid(f"unsupported Range {header[:100]!r}", headers=unsatisfiable)
    first, last = (parse_count(g) if g else None for g in m.groups())
    if (m.group(1) and first is None) or (m.group(2) and last is None):
        raise RangeInvalid(f"Range numbers must have at most {MAX_DIGITS} digits", headers=unsatisfiable)
    if first is None:  # suffix: last N bytes
        if last == 0:
            raise RangeInvalid("empty suffix range", headers=unsatisfiable)
        return max(size - last, 0), size - 1
    end = last if last is not None else size - 1
    if first >= size or end < first:
        raise RangeInvalid(f"range {header[:100]} not satisfiable for {size} bytes", headers=unsatisfiable)
    return first, min(end, size - 1)


async def blob(request: Request) -> Response:
    services = services_of(request)
    name = validate_name(request.path_params["name"])
    digest = validate_digest(request.path_params["digest"])
    if request.method == "DELETE":
        await services.db.run(services.blobs.unlink, name, digest)
        return Response(status_code=202, headers={"Content-Length": "0"})
    info = await services.blobs.stat(name, digest)
    headers = {"Docker-Content-Digest": digest, "Accept-Ranges": "bytes", "ETag": f'"{digest}"'}
    if request.method == "HEAD":
        headers["Content-Length"] = str(info.size)
        return Response(b"", 200, headers=headers, media_type="application/octet-stream")
    range_header = request.headers.get("range")
    if range_header:
        start, end = parse_range(range_header, info.size)
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
        headers["Content-Length"] = str(end - start + 1)
        return StreamingResponse(
            services.blobs.read(info, start, end - start + 1), 206, headers=headers, media_type="application/octet-stream"
        )
    local = services.blobs.local_file(info)
    if local is not None and info.size <= SMALL_BLOB_BYTES:
        # A small local read costs less than setting up a file send.
        with open(local[0], "rb") as fh:
            return Response(fh.read(), 200, headers=headers, media_type="application/octet-stream")
    if local is not None:
        # Zero-copy where the server supports http.response.pathsend (granian does).
        return FileResponse(local[0], headers=headers, media_type="application/octet-stream", stat_result=local[1])
    headers["Content-Length"] = str(info.size)
    return StreamingResponse(services.blobs.read(info), 200, headers=headers, media_type="application/octet-stream")
