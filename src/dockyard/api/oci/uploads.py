"""Blob uploads: POST (start, single-shot, mount), PATCH, PUT, status GET, cancel DELETE."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from dockyard.api.services import services_of
from dockyard.api.http import content_length
from dockyard.domain.names import validate_digest, validate_name
from dockyard.domain.uploads import owner_key
from dockyard.domain.numbers import MAX_DIGITS, parse_count
from dockyard.errors import DigestInvalid, DockyardError, RangeInvalid

_CONTENT_RANGE_RE = re.compile(r"(?:bytes[ =])?([0-9]+)-([0-9]+)(?:/([0-9]+|\*))?")




def _created(name: str, digest: str) -> Response:
    return Response(
        status_code=201,
        headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest, "Content-Length": "0"},
    )


async def start(request: Request) -> Response:
    services = services_of(request)
    name = validate_name(request.path_params["name"])
    query = request.query_params
    if "mount" in query:
        digest = validate_digest(query["mount"])
        source = query.get("from")
        can, pull_gate, gate = request.state.can, services.pull_gate, services.gate

        def may_read(repository: str) -> bool:
            # A mount is a copy: a source whose project gates pulls lends its blobs only to accounts that
            # may push to it (the pull gate's own exemption); everyone else uploads the bytes they have.
            if not can("repository", repository, "pull"):
                return False
            return not pull_gate.gates(repository) or gate.request_may_push(request, repository)

        if await services.db.run(services.blobs.mount, name, digest, validate_name(source) if source else None, may_read):
            return _created(name, digest)
    digest = query.get("digest")
    if digest is not None:
        validate_digest(digest)
    upload = await services.db.run(services.uploads.start, name, owner_key(request.state.principal))
    if digest is not None:
        await _append_and_finish(services, upload, request, digest)
        return _created(name, digest)
    return Response(status_code=202, headers={**services.uploads.progress_headers(upload), "Content-Length": "0"})


async def _append_and_finish(services, upload, request: Request, digest: str, start=None, end=None) -> None:
    try:
        upload = await services.uploads.append(
            upload, request.stream(), start=start, end=end, content_length=content_length(request), digest=digest
        )
        await services.db.run(services.uploads.finish, upload, digest)
    except RangeInvalid:
        raise  # the session stays alive so the client can resume
    except DockyardError:
        await services.db.run(services.uploads.cancel, upload)
        raise


def _parse_content_range(request: Request) -> tuple[int | None, int | None]:
    raw = request.headers.get("content-range")
    if raw is None:
        return None, None
    m = _CONTENT_RANGE_RE.fullmatch(raw.strip())
    if not m:
        raise RangeInvalid(f"malformed Content-Range {raw[:100]!r}; expected <start>-<end>")
    start, end = parse_count(m.group(1)), parse_count(m.group(2))
    total = m.group(3)
    if start is None or end is None or (total not in (None, "*") and parse_count(total) is None):
        raise RangeInvalid(f"Content-Range numbers must have at most {MAX_DIGITS} digits")
    return start, end


async def session(request: Request) -> Response:
    services = services_of(request)
    name = validate_name(request.path_params["name"])
    # Only the account that opened a session may see or touch it; to anyone else it does not exist.
    owner = owner_key(request.state.principal)
    upload = await services.db.run(services.uploads.get, name, request.path_params["upload_id"], owner)
    method = request.method
    if method == "GET":
        return Response(status_code=204, headers=services.uploads.progress_headers(upload))
    if method == "DELETE":
        await services.db.run(services.uploads.cancel, upload)
        return Response(status_code=204)
    try:
        start, end = _parse_content_range(request)
    except RangeInvalid as exc:
        exc.headers = services.uploads.progress_headers(upload)
        raise
    if method == "PATCH":
        upload = await services.uploads.append(
            upload, request.stream(), start=start, end=end, content_length=content_length(request)
        )
        return Response(status_code=202, headers={**services.uploads.progress_headers(upload), "Content-Length": "0"})
    digest = request.query_params.get("digest")
    if not digest:
        raise DigestInvalid("PUT must carry ?digest=<digest> of the whole blob")
    validate_digest(digest)
    await _append_and_finish(services, upload, request, digest, start, end)
    return _created(name, digest)
