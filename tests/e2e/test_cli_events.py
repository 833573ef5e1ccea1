"""`dockyard events tail [--follow]` against a real `dockyard serve`: the latest events, then the
server-sent event stream, with the audit log's visibility."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import httpx
import pytest

from tests.support.server import dockyard_env, run_dockyard

pytestmark = pytest.mark.e2e

ADMIN = ("admin", "admin-password-1")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push(url: str, repo: str, tag: str) -> str:
    config = json.dumps({"tag": tag}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config),
                                      "size": len(config)}, "layers": []}).encode()
    with httpx.Client(base_url=url, timeout=30, trust_env=False, auth=ADMIN) as client:
        assert client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha(config)}, content=config).status_code == 201
        r = client.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
    return sha(manifest)


def events_cmd(server, *args: str, user=ADMIN) -> list[str]:
    return [sys.executable, "-m", "dockyard", "events", "--url", server.url, "-u", user[0], "--password-stdin", *args]


def run(server, *args: str, user=ADMIN) -> subprocess.CompletedProcess:
    env = dockyard_env({"COLUMNS": "250", "NO_COLOR": "1"})
    return subprocess.run(events_cmd(server, *args, user=user), input=user[1] + "\n", capture_output=True, text=True,
                          env=env, timeout=120)


def test_events_tail_and_follow(tmp_path):
    with run_dockyard(tmp_path / "data", auth_mode="basic", admin_password=ADMIN[1]) as server:
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False, auth=ADMIN) as client:
            assert client.post("/api/v1/projects", json={"name": "team"}).status_code == 201
        first = push(server.url, "team/app", "v1")

        proc = run(server, "tail", "--project", "team", "-n", "5", "--json")
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [e["type"] for e in lines] == ["project.created", "artifact.pushed", "tag.updated"]
        assert lines[1]["digest"] == first and lines[1]["actor"] == "admin"

        table = run(server, "tail", "--project", "team", "--type", "tag", "-n", "1")
        assert table.returncode == 0 and "tag.updated" in table.stdout and "team/app:v1" in table.stdout

        # --follow from a cursor: the stream resumes right after it, whenever the command connects.
        cursor = lines[1]["cursor"]
        follower = subprocess.Popen(
            [sys.executable, "-m", "dockyard", "events", "tail", "--project", "team", "--type", "artifact",
             "-n", "0", "--after", cursor, "--follow", "--count", "2", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dockyard_env({"NO_COLOR": "1", "DOCKYARD_URL": server.url, "DOCKYARD_USERNAME": ADMIN[0],
                              "DOCKYARD_PASSWORD": ADMIN[1]}),
        )
        second = push(server.url, "team/app", "v2")
        third = push(server.url, "team/other", "v3")
        out, err = follower.communicate(timeout=60)
        assert follower.returncode == 0, err
        followed = [json.loads(line) for line in out.splitlines()]
        assert [(e["type"], e["repository"], e["digest"]) for e in followed] == [
            ("artifact.pushed", "team/app", second), ("artifact.pushed", "team/other", third)]

        # The audit log's visibility: a developer is refused; everything needs an administrator.
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False, auth=ADMIN) as client:
            assert client.post("/api/v1/users", json={"username": "dev", "password": "dev-password-1"}).status_code == 201
            r = client.post("/api/v1/projects/team/members", json={"username": "dev", "role": "developer"})
            assert r.status_code == 201
        refused = run(server, "tail", "--project", "team", user=("dev", "dev-password-1"))
        assert refused.returncode == 1 and "DENIED" in refused.stderr
