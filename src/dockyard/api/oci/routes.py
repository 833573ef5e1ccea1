"""Route table for /v2 and /token. Each /v2 route declares the access it needs; api/access_gate.py enforces it."""

from __future__ import annotations

from starlette.routing import Route

from dockyard.api import token
from dockyard.api.access_gate import guarded
from dockyard.api.oci import base, blobs, manifests, uploads

PULL = {"GET": "pull", "HEAD": "pull"}
PUSH = {"POST": "push", "PATCH": "push", "PUT": "push", "GET": "push", "DELETE": "push"}

# (path, endpoint, methods, access by method, resource kind).
# Upload routes precede blob routes: both live under /blobs/.
ROUTES = [
    ("/v2/", base.ping, ["GET", "HEAD"], None, "base"),
    ("/v2/_catalog", base.catalog, ["GET"], None, "catalog"),
    ("/v2/{name:path}/tags/list", manifests.tags_list, ["GET"], PULL, "repository"),
    (
        "/v2/{name:path}/manifests/{reference}",
        manifests.manifest,
        ["GET", "HEAD", "PUT", "DELETE"],
        {**PULL, "PUT": "push", "DELETE": "delete"},
        "repository",
    ),
    ("/v2/{name:path}/blobs/uploads/", uploads.start, ["POST"], PUSH, "repository"),
    ("/v2/{name:path}/blobs/uploads", uploads.start, ["POST"], PUSH, "repository"),
    ("/v2/{name:path}/blobs/uploads/{upload_id}", uploads.session, ["GET", "PATCH", "PUT", "DELETE"], PUSH, "repository"),
    ("/v2/{name:path}/blobs/{digest}", blobs.blob, ["GET", "HEAD", "DELETE"], {**PULL, "DELETE": "delete"}, "repository"),
    ("/v2/{name:path}/referrers/{digest}", manifests.referrers, ["GET"], PULL, "repository"),
]


def oci_routes() -> list[Route]:
    routes = [
        Route(path, guarded(endpoint, access, resource), methods=methods)
        for path, endpoint, methods, access, resource in ROUTES
    ]
    routes.append(Route("/token", token.token_get, methods=["GET"]))
    routes.append(Route("/token", token.token_post, methods=["POST"]))
    return routes
