"""Large request bodies on the management API, streamed to a temporary file instead of memory.

Every other /api/v1 body is capped at a few KiB by the HTTP surface (api/surface.py) before routing;
the paths in STREAMED_PATHS are exempt from that and read here, after the handler has authorized the
caller, so an anonymous client can never make the server spool anything.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Request

from dockyard.errors import InvalidRequest, RequestTooLarge

STREAMED_PATHS = frozenset({"/api/v1/system/vulndb/import"})
STALE_SECONDS = 24 * 3600  # a spool file untouched this long was left by a killed server, not a live upload


@asynccontextmanager
async def receive_to_file(request: Request, data_dir: Path, limit: int) -> AsyncIterator[tuple[Path, str, int]]:
    """(path, sha256, size) of the whole body, written under `data_dir` (not a RAM-backed /tmp);
    the file is removed on exit. Refuses an empty body, and one above `limit` as soon as it shows."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"the upload is larger than {limit} bytes", detail={"limit": limit})
    spool = data_dir / "tmp"
    spool.mkdir(parents=True, exist_ok=True)
    _remove_stale(spool)
    fd, name = tempfile.mkstemp(prefix="upload-", dir=spool)
    path = Path(name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(f"the upload is larger than {limit} bytes", detail={"limit": limit})
                digest.update(chunk)
                fh.write(chunk)
        if size == 0:
            raise InvalidRequest("the request has no body: send the file as the body")
        yield path, digest.hexdigest(), size
    finally:
        path.unlink(missing_ok=True)


def _remove_stale(spool: Path) -> None:
    """The `finally` below cannot run when the process is killed mid-upload; the next upload removes
    what such a crash left (up to the upload cap each), so the data directory's disk comes back."""
    cutoff = time.time() - STALE_SECONDS
    for leftover in spool.glob("upload-*"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except FileNotFoundError:
            pass  # another upload removed it first
