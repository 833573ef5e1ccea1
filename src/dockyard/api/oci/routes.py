"""Route table for /v2 and /token. Each /v2 route declares the access it needs and the audit action
each successful method records (docs/api.md lists them); api/access_gate.py `guarded` enforces both."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.routing import Route

from dockyard.api import token
from dockyard.api.access_gate import AuditActions, guarded
from dockyard.api.oci import base, blobs, manifests, uploads

PULL = {"GET": "pull", "HEAD": "pull"}
PUSH = {"POST": "push", "PATCH": "push", "PUT": "push", "GET": "push", "DELETE": "push"}



def _manifest_delete(params: Mapping[str, str]) -> str:
    """DELETE by digest removes the manifest (and its tags); by tag, the tag only."""
    return "manifest.delete" if ":" in params["reference"] else "tag.delete"


MANIFEST_AUDIT: AuditActions = {"PUT": "manifest.push", "DELETE": _manifest_delete, "GET": "manifest.pull"}
BLOB_AUDIT: AuditActions = {"DELETE": "blob.delete"}

# (path, endpoint, methods, access by method, resource kind, audit action by method).
# Upload routes precede blob routes: both live under /blobs/.
ROUTES = [
    ("/v2/", base.ping, ["GET", "HEAD"], None, "base", None),
    ("/v2/_catalog", base.catalog, ["GET"], None, "catalog", None),
    ("/v2/{name:path}/tags/list", manifests.tags_list, ["GET"], PULL, "repository", None),
    (
        "/v2/{name:path}/manifests/{reference}",
        manifests.manifest,
        ["GET", "HEAD", "PUT", "DELETE"],
        {**PULL, "PUT": "push", "DELETE": "delete"},
        "repository",
        MANIFEST_AUDIT,
    ),
    ("/v2/{name:path}/blobs/uploads/", uploads.start, ["POST"], PUSH, "repository", None),
    ("/v2/{name:path}/blobs/uploads", uploads.start, ["POST"], PUSH, "repository", None),
    ("/v2/{name:path}/blobs/uploads/{upload_id}", uploads.session, ["GET", "PATCH", "PUT", "DELETE"], PUSH, "repository", None),
    ("/v2/{name:path}/blobs/{digest}", blobs.blob, ["GET", "HEAD", "DELETE"], {**PULL, "DELETE": "delete"}, "repository", BLOB_AUDIT),
    ("/v2/{name:path}/referrers/{digest}", manifests.referrers, ["GET"], PULL, "repository", None),
]


def oci_routes() -> list[Route]:
    routes = [
        Route(path, guarded(endpoint, access, resource, audit), methods=methods)
        for path, endpoint, methods, access, resource, audit in ROUTES
    ]
    routes.append(Route("/token", token.token_get, methods=["GET"]))
    routes.append(Route("/token", token.token_post, methods=["POST"]))
    return routes
