"""Manifests (HEAD/GET/PUT/DELETE), tag listing and the referrers API."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from dockyard.api.services import services_of
from dockyard.api.http import content_length, json_response
from dockyard.api.oci.base import link_header
from dockyard.domain.listings import parse_page_size
from dockyard.domain.manifests import OCI_INDEX
from dockyard.domain.names import is_tag, looks_like_digest, validate_digest, validate_name, validate_reference
from dockyard.errors import ManifestUnknown


async def manifest(request: Request) -> Response:
    services = services_of(request)
    name = validate_name(request.path_params["name"])
    reference = request.path_params["reference"]
    method = request.method
    if method != "PUT" and not looks_like_digest(reference) and not is_tag(reference):
        # Nothing can be stored under an invalid tag, so reading or deleting it is simply "unknown".
        raise ManifestUnknown(f"manifest {reference[:200]} is not in repository {name}", detail={"reference": reference[:200]})
    tag, digest = validate_reference(reference)
    if method in ("GET", "HEAD"):
        stored = await services.manifests.get(name, tag, digest)
        headers = {"Docker-Content-Digest": stored.digest, "ETag": f'"{stored.digest}"'}
        if method == "HEAD":
            headers["Content-Length"] = str(len(stored.payload))
            return Response(b"", 200, headers=headers, media_type=stored.media_type)
        principal = getattr(request.state, "principal", None)
        await services.pull_gate.check(
            name, stored.digest, stored.media_type, stored.payload, principal.name if principal else None,
            pusher=lambda: services.gate.request_may_push(request, name),
        )
        services.pulls.record(name, stored.digest)  # a dict assignment; flushed in batches (domain/pulls.py)
        return Response(stored.payload, 200, headers=headers, media_type=stored.media_type)
    if method == "DELETE":
        await services.db.run(services.manifests.delete, name, tag, digest)
        return Response(status_code=202, headers={"Content-Length": "0"})
    declared = content_length(request)
    if declared is not None:
        services.manifests.check_size(declared)
    payload = await _read_limited(request, services.manifests)
    extra_tags = tuple(request.query_params.getlist("tag")) if digest else ()
    parsed = await services.db.run(
        services.manifests.put, name, tag, digest, payload, request.headers.get("content-type"), extra_tags
    )
    # Scan on push and the pull gate's cache react to the change feed (jobs/feed_consumers.py).
    headers = {
        "Location": f"/v2/{name}/manifests/{parsed.digest}",
        "Docker-Content-Digest": parsed.digest,
        "Content-Length": "0",
    }
    if parsed.subject:
        headers["OCI-Subject"] = parsed.subject
    response = Response(status_code=201, headers=headers)
    for extra in dict.fromkeys(extra_tags):
        response.headers.append("OCI-Tag", extra)
    return response


async def _read_limited(request: Request, manifests) -> bytes:
    """Read the body but stop as soon as it passes the limit, whatever Content-Length claimed."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        manifests.check_size(len(body))
    return bytes(body)


async def tags_list(request: Request) -> Response:
    services = services_of(request)
    name = validate_name(request.path_params["name"])
    n = parse_page_size(request.query_params.get("n"))
    page = await services.db.run(services.listings.tags, name, n, request.query_params.get("last"))
    return json_response({"name": name, "tags": page.items}, headers=link_header(f"/v2/{name}/tags/list", page))


async def referrers(request: Request) -> Response:
    services = services_of(request)
    name = validate_name(request.path_params["name"])
    subject = validate_digest(request.path_params["digest"])
    artifact_type = request.query_params.get("artifactType")
    index = await services.db.run(services.listings.referrers, name, subject, artifact_type)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    return json_response(index, headers=headers, media_type=OCI_INDEX)
