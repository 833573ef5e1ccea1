"""Route table for /v2. Each route names the access it needs, for the auth layer to enforce."""

from __future__ import annotations

from starlette.routing import Route

from dockyard.api.oci import base, blobs, manifests, uploads

# (path, endpoint, methods). Upload routes precede blob routes: both live under /blobs/.
ROUTES = [
    ("/v2/", base.ping, ["GET", "HEAD"]),
    ("/v2/_catalog", base.catalog, ["GET"]),
    ("/v2/{name:path}/tags/list", manifests.tags_list, ["GET"]),
    ("/v2/{name:path}/manifests/{reference}", manifests.manifest, ["GET", "HEAD", "PUT", "DELETE"]),
    ("/v2/{name:path}/blobs/uploads/", uploads.start, ["POST"]),
    ("/v2/{name:path}/blobs/uploads", uploads.start, ["POST"]),
    ("/v2/{name:path}/blobs/uploads/{upload_id}", uploads.session, ["GET", "PATCH", "PUT", "DELETE"]),
    ("/v2/{name:path}/blobs/{digest}", blobs.blob, ["GET", "HEAD", "DELETE"]),
    ("/v2/{name:path}/referrers/{digest}", manifests.referrers, ["GET"]),
]


def oci_routes() -> list[Route]:
    return [Route(path, endpoint, methods=methods) for path, endpoint, methods in ROUTES]
