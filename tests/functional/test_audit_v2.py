"""The audit log records /v2 pushes, deletes and (when enabled) pulls, with actor, IP and user agent."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import httpx
import pytest

from dockyard.app import create_app
from dockyard.metadata.models import audit_events
from dockyard.settings import Settings
from .helpers import API_CLIENT

ADMIN = ("admin", "admin-password-1")
UA = {"User-Agent": "audit-test/1.0"}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _push(client: httpx.AsyncClient, repo: str, tag: str) -> str:
    config = b'{"architecture":"amd64","os":"linux"}'
    r = await client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": _digest(config)}, content=config, auth=ADMIN, headers=UA)
    assert r.status_code == 201, r.text
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config), "size": len(config)},
            "layers": [],
        }
    ).encode()
    r = await client.put(
        f"/v2/{repo}/manifests/{tag}",
        content=manifest,
        auth=ADMIN,
        headers={**UA, "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert r.status_code == 201, r.text
    return _digest(manifest)


@pytest.mark.parametrize("audit_pulls", [True, False])
async def test_v2_writes_and_pulls_are_audited(tmp_path, audit_pulls):
    app = create_app(Settings(data_dir=tmp_path, admin_password=ADMIN[1], audit_pulls=audit_pulls))
    services = app.state.services
    services.projects.create("team")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4711))
        async with httpx.AsyncClient(headers=API_CLIENT, transport=transport, base_url="http://reg") as client:
            digest = await _push(client, "team/app", "v1")
            r = await client.get("/v2/team/app/manifests/v1", auth=ADMIN, headers=UA)
            assert r.status_code == 200
            r = await client.delete("/v2/team/app/manifests/v1", auth=ADMIN, headers=UA)
            assert r.status_code == 202
            r = await client.delete(f"/v2/team/app/manifests/{digest}", auth=ADMIN, headers=UA)
            assert r.status_code == 202
    events, _ = services.audit.query(project="team", page_size=100)
    actions = [e["action"] for e in reversed(events)]
    expected = ["manifest.push"] + (["manifest.pull"] if audit_pulls else []) + ["tag.delete", "manifest.delete"]
    assert actions == expected
    for event in events:
        assert event["actor"] == "admin" and event["actor_kind"] == "user"
        assert event["source_ip"] == "203.0.113.7" and event["user_agent"] == "audit-test/1.0"
        assert event["outcome"] == "success"
    assert events[-1]["object"] == "team/app/manifests/v1"
    logins, _ = services.audit.query(action="auth.success")
    assert len(logins) == 1  # later requests reused the verified credentials; no row per request


async def test_retention_setting_purges_old_events(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, admin_password=ADMIN[1], audit_retention_days=30))
    services = app.state.services
    services.audit.record(actor=services.authenticator.account("admin"), action="user.create", object="user x")
    with services.db.write() as conn:
        conn.execute(audit_events.update().values(occurred_at=audit_events.c.occurred_at - timedelta(days=31)))
    services.audit.record(actor=services.authenticator.account("admin"), action="user.create", object="user y")
    assert services.audit.purge(services.settings.audit_retention_days) == 1
    events, total = services.audit.query()
    assert total == 1 and events[0]["object"] == "user y"
