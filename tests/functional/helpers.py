"""Shared helpers for the functional tests: content builders, push shortcuts and storage probes.

Everything talks to the real ASGI app through httpx; the storage/DB probes only *read* state.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from starlette.applications import Starlette

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# State-changing /api/v1 requests must carry a JSON body or this header (CSRF protection).
API_CLIENT = {"X-Dockyard-Client": "test"}

EMPTY_JSON = b"{}"
EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking bytes of the given size."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def error_codes(resp: httpx.Response) -> list[str]:
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"], body
    for err in body["errors"]:
        assert isinstance(err.get("code"), str), body
    return [e["code"] for e in body["errors"]]


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Status, OCI JSON error body with `code` first, and the API version header."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    codes = error_codes(resp)
    assert codes[0] == code, codes
    assert resp.headers.get("docker-distribution-api-version") == "registry/2.0"
    return resp.json()


@dataclass
class Registry:
    """One app instance plus its client, with push shortcuts and read-only probes."""

    app: Starlette
    client: httpx.AsyncClient
    driver: str
    data_dir: Path

    @property
    def services(self):
        return self.app.state.services

    @property
    def storage_root(self) -> Path:
        return self.services.settings.resolved_storage_root

    # -- probes ---------------------------------------------------------------------------

    def blob_objects(self) -> list[str]:
        """Every stored blob object. For the filesystem driver this walks the directory itself."""
        keys = sorted(self.services.storage.list("blobs/"))
        if self.driver == "filesystem":
            root = self.storage_root / "blobs"
            files = []
            if root.exists():
                for dirpath, _dirs, names in os.walk(root):
                    files += [os.path.relpath(os.path.join(dirpath, n), self.storage_root) for n in names]
            assert sorted(f.replace(os.sep, "/") for f in files) == keys
            return sorted(files)
        return keys

    def upload_objects(self) -> list[str]:
        keys = sorted(self.services.storage.list("uploads/"))
        if self.driver == "filesystem":
            root = self.storage_root / "uploads"
            files = sorted(os.listdir(root)) if root.exists() else []
            assert [f"uploads/{f}" for f in files] == keys
        return keys

    def sql(self, query: str, **params: Any) -> list[tuple]:
        with self.services.db.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(query), params)]

    def scalar(self, query: str, **params: Any) -> Any:
        rows = self.sql(query, **params)
        return rows[0][0] if rows else None

    def count(self, table: str, where: str = "1=1", **params: Any) -> int:
        return int(self.scalar(f"SELECT count(*) FROM {table} WHERE {where}", **params))

    def upload_rows(self) -> int:
        return self.count("uploads")

    async def assert_blob_absent(self, repo: str, digest: str) -> None:
        for method in ("HEAD", "GET"):
            r = await self.client.request(method, f"/v2/{repo}/blobs/{digest}")
            assert r.status_code == 404, (method, r.status_code)
        assert self.count("blobs", "digest = :d", d=digest) == 0
        encoded = digest.partition(":")[2]
        assert not [k for k in self.blob_objects() if encoded and encoded in k]

    async def assert_no_content(self, repo: str) -> None:
        """No tag, no manifest, no blob for `repo` (the repository row itself may exist or not)."""
        r = await self.client.get(f"/v2/{repo}/tags/list")
        if r.status_code == 200:
            assert r.json()["tags"] == []
        else:
            assert_error(r, 404, "NAME_UNKNOWN")
        assert self.count(
            "manifests", "repository_id IN (SELECT id FROM repositories WHERE name = :n)", n=repo
        ) == 0
        assert self.count("tags", "repository_id IN (SELECT id FROM repositories WHERE name = :n)", n=repo) == 0
        assert self.count(
            "repository_blobs", "repository_id IN (SELECT id FROM repositories WHERE name = :n)", n=repo
        ) == 0

    # -- push shortcuts -------------------------------------------------------------------

    async def start_upload(self, repo: str) -> str:
        r = await self.client.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        return r.headers["location"]

    async def push_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        location = await self.start_upload(repo)
        r = await self.client.put(
            location, params={"digest": digest}, content=data, headers={"Content-Type": "application/octet-stream"}
        )
        assert r.status_code == 201, r.text
        return digest

    async def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str | None) -> httpx.Response:
        headers = {"Content-Type": media_type} if media_type else {}
        return await self.client.put(f"/v2/{repo}/manifests/{reference}", content=body, headers=headers)

    async def push_manifest(self, repo: str, reference: str, body: bytes, media_type: str | None) -> str:
        r = await self.put_manifest(repo, reference, body, media_type)
        assert r.status_code == 201, r.text
        assert r.headers["docker-content-digest"] == sha256(body)
        return sha256(body)

    async def push_image(
        self,
        repo: str,
        reference: str | None = None,
        *,
        seed: int = 0,
        layers: int = 1,
        media_type: str = OCI_MANIFEST,
        extra: dict[str, Any] | None = None,
    ) -> tuple[str, bytes]:
        """Push config + layers + an image manifest; returns (manifest digest, manifest bytes)."""
        docker = media_type == DOCKER_MANIFEST
        config = dumps({"architecture": "amd64", "os": "linux", "seed": seed})
        await self.push_blob(repo, config)
        layer_descs = []
        for i in range(layers):
            data = pattern(100 + i, seed=seed * 1000 + i)
            await self.push_blob(repo, data)
            layer_descs.append(descriptor(DOCKER_LAYER if docker else OCI_LAYER, data))
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
            "layers": layer_descs,
        }
        doc.update(extra or {})
        body = dumps(doc)
        digest = sha256(body)
        await self.push_manifest(repo, reference or digest, body, media_type)
        return digest, body
