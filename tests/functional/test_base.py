"""Ping, the API-version header, and OCI-format errors for unknown endpoints / wrong methods."""

from __future__ import annotations

import pytest

from .helpers import assert_error, sha256


async def test_ping(registry):
    r = await registry.client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {}


async def test_ping_head(registry):
    r = await registry.client.head("/v2/")
    assert r.status_code == 200
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/"),
        ("GET", "/v2/foo"),
        ("GET", "/v1/_ping"),
        ("GET", "/v2/foo/unknown/thing"),
        ("GET", "/v2/foo/blobs"),
    ],
)
async def test_unknown_endpoint_is_oci_json_404(registry, method, path):
    r = await registry.client.request(method, path)
    assert r.status_code == 404
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["errors"], list) and body["errors"][0]["code"]


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/v2/"),
        ("DELETE", "/v2/"),
        ("POST", "/v2/_catalog"),
        ("PUT", "/v2/foo/tags/list"),
        ("POST", "/v2/foo/manifests/latest"),
        ("PATCH", "/v2/foo/manifests/latest"),
        ("PUT", "/v2/foo/blobs/" + sha256(b"x")),
        ("GET", "/v2/foo/blobs/uploads/"),
        ("POST", "/v2/foo/referrers/" + sha256(b"x")),
    ],
)
async def test_wrong_method_is_oci_json_405(registry, method, path):
    r = await registry.client.request(method, path)
    assert_error(r, 405, "UNSUPPORTED")


async def test_api_version_header_on_errors(registry):
    r = await registry.client.get("/v2/nope/manifests/latest")
    assert_error(r, 404, "NAME_UNKNOWN")
    r = await registry.client.head("/v2/nope/manifests/latest")
    assert r.status_code == 404
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    assert r.content == b""


async def test_storage_failure_is_oci_json_500(fs_registry):
    """An internal failure (here: the uploads directory cannot be created) is still an OCI JSON error
    carrying the API version header, and it leaves no blob behind."""
    reg = fs_registry
    reg.storage_root.mkdir(parents=True, exist_ok=True)
    (reg.storage_root / "uploads").write_bytes(b"a file where a directory should be")
    location = await reg.start_upload("broken/storage")
    r = await reg.client.patch(location, content=b"data", headers={"Content-Range": "0-3"})
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["errors"][0]["code"] == "UNKNOWN"
    assert r.headers.get("docker-distribution-api-version") == "registry/2.0"
    assert reg.count("blobs") == 0
