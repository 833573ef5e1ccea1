"""Shared by test_tag_rules.py and test_promotion.py: an auth-on registry on SQLite or PostgreSQL,
users with roles, and builders for indexes and referrers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest

from dockyard.app import create_app
from dockyard.settings import Settings

from .helpers import EMPTY_JSON, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, Registry, descriptor, dumps, sha256
from .helpers import API_CLIENT

ADMIN = ("admin", "admin-password-1")
PASSWORD = "password-123"
BASE = "http://registry.test"


@dataclass
class Env:
    reg: Registry
    api: httpx.AsyncClient

    @property
    def services(self):
        return self.reg.services

    async def user(self, name: str, **memberships: str) -> tuple[str, str]:
        r = await self.api.post("/api/v1/users", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201, r.text
        for project, role in memberships.items():
            r = await self.api.post(f"/api/v1/projects/{project}/members", json={"username": name, "role": role})
            assert r.status_code == 201, r.text
        return (name, PASSWORD)

    async def project(self, name: str, public: bool = False) -> None:
        r = await self.api.post("/api/v1/projects", json={"name": name, "public": public})
        assert r.status_code == 201, r.text

    async def rule(self, project: str | None, kind: str, tag_pattern: str, repository_pattern: str = "**") -> int:
        path = "/api/v1/system/tag-rules" if project is None else f"/api/v1/projects/{project}/tag-rules"
        r = await self.api.post(path, json={"kind": kind, "tag_pattern": tag_pattern, "repository_pattern": repository_pattern})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    async def digest_of(self, repo: str, tag: str) -> str | None:
        r = await self.api.head(f"/v2/{repo}/manifests/{tag}")
        return r.headers["docker-content-digest"] if r.status_code == 200 else None

    async def audit(self, action: str) -> list[dict]:
        r = await self.api.get("/api/v1/audit", params={"action": action})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(params=["sqlite", "postgresql"])
async def env(request, tmp_path: Path, database_url_for):
    url = database_url_for(request.param)
    settings = Settings(data_dir=tmp_path / "data", admin_password=ADMIN[1], database_url=url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(headers=API_CLIENT, transport=transport, base_url=BASE, auth=ADMIN) as api:
            yield Env(Registry(app=app, client=api, driver="filesystem", data_dir=tmp_path / "data"), api)


def error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert body["errors"][0]["code"] == code, body
    return body["errors"][0]


def index_body(*children: tuple[str, bytes]) -> bytes:
    """An OCI index over (architecture, manifest bytes) children."""
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, body, platform={"architecture": arch, "os": "linux"}) for arch, body in children],
        }
    )


async def push_referrer(reg: Registry, repo: str, subject_type: str, subject: bytes, artifact_type: str, content: bytes) -> tuple[str, bytes]:
    """A signature/SBOM-like artifact whose subject is `subject`; pushed by digest (no tag)."""
    await reg.push_blob(repo, EMPTY_JSON)
    await reg.push_blob(repo, content)
    body = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": descriptor(OCI_EMPTY, EMPTY_JSON),
            "layers": [descriptor("application/octet-stream", content)],
            "subject": descriptor(subject_type, subject),
        }
    )
    digest = await reg.push_manifest(repo, sha256(body), body, OCI_MANIFEST)
    return digest, body


def storage_snapshot(root: Path) -> tuple[int, int]:
    """(object count, total bytes) of everything under the storage root: blobs, uploads, anything."""
    count = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            count += 1
            size += os.path.getsize(os.path.join(dirpath, name))
    return count, size


class SyncASGI(httpx.BaseTransport):
    """Lets the CLI's sync httpx client talk to the in-process app (the CLI runs in a worker thread)."""

    def __init__(self, app):
        self.inner = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def forward() -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            return httpx.Response(response.status_code, headers=response.headers, content=await response.aread())

        return anyio.from_thread.run(forward)


def route_cli_to_app(monkeypatch, app) -> None:
    """Point the CLI's management-API client (cli.remote.Remote) at the in-process app."""
    from dockyard.cli import remote

    def local_client(self) -> httpx.Client:
        auth = (self.username, self.password or "") if self.username else None
        return httpx.Client(headers=API_CLIENT, transport=SyncASGI(app), base_url=f"{BASE}/api/v1", auth=auth)

    monkeypatch.setattr(remote.Remote, "client", local_client)
