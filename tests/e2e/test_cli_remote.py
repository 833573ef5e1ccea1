"""`dockyard admin projects|members|users|robots|audit` against a real `dockyard serve`."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.support.server import dockyard_env, run_dockyard
from tests.functional.helpers import API_CLIENT

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "admin-password-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("cli-remote")
    with run_dockyard(data_dir, extra_env={"DOCKYARD_ADMIN_PASSWORD": ADMIN_PASSWORD}) as srv:
        yield srv


def dockyard(server, *args: str, user: str = "admin", password: str = ADMIN_PASSWORD, stdin: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
    env = dockyard_env({"DOCKYARD_URL": server.url, "DOCKYARD_USERNAME": user, "DOCKYARD_PASSWORD": password,
                        "COLUMNS": "200", "NO_COLOR": "1"})
    proc = subprocess.run([sys.executable, "-m", "dockyard", "admin", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120)
    if check:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def as_json(proc: subprocess.CompletedProcess):
    return json.loads(proc.stdout)


def test_projects_members_users(server):
    dockyard(server, "users", "create", "alice", "--new-password", "alice-password", "--email", "a@example.com")
    dockyard(server, "users", "create", "bob", "--new-password-stdin", stdin="bob-password\n")
    users = as_json(dockyard(server, "users", "list", "--json"))
    assert [u["username"] for u in users] == ["admin", "alice", "bob"]
    table = dockyard(server, "users", "list").stdout
    assert "alice" in table and "a@example.com" in table

    created = as_json(dockyard(server, "projects", "create", "team", "--json"))
    assert created["name"] == "team" and created["public"] is False
    dockyard(server, "members", "add", "team", "alice", "--role", "admin")
    dockyard(server, "members", "add", "team", "bob", user="alice", password="alice-password")  # default role developer
    dockyard(server, "members", "set-role", "team", "bob", "maintainer", user="alice", password="alice-password")
    members = as_json(dockyard(server, "members", "list", "team", "--json"))
    assert {m["username"]: m["role"] for m in members} == {"admin": "admin", "alice": "admin", "bob": "maintainer"}

    shown = as_json(dockyard(server, "projects", "show", "team", "--json", user="bob", password="bob-password"))
    assert "retag" in shown["actions"] and shown["repository_count"] == 0
    dockyard(server, "projects", "update", "team", "--public", user="alice", password="alice-password")
    assert as_json(dockyard(server, "projects", "list", "--json"))[0]["public"] is True

    # errors: OCI code and message on stderr, non-zero exit
    denied = dockyard(server, "projects", "create", "mine", user="bob", password="bob-password", check=False)
    assert denied.returncode != 0 and "DENIED" in denied.stderr
    bad = dockyard(server, "projects", "create", "Bad/Name", check=False)
    assert bad.returncode != 0 and "NAME_INVALID" in bad.stderr
    wrong = dockyard(server, "projects", "list", password="wrong-password", check=False)
    assert wrong.returncode != 0 and "UNAUTHORIZED" in wrong.stderr

    # own password (old one taken from the connection), then admin actions on users
    dockyard(server, "users", "set-password", "bob", "--new-password", "bob-password-2", user="bob", password="bob-password")
    assert as_json(dockyard(server, "users", "show", "--json", user="bob", password="bob-password-2"))["username"] == "bob"
    dockyard(server, "users", "disable", "bob")
    assert dockyard(server, "users", "show", user="bob", password="bob-password-2", check=False).returncode != 0
    dockyard(server, "users", "enable", "bob")
    dockyard(server, "members", "remove", "team", "bob")
    dockyard(server, "users", "delete", "bob", "--yes")
    assert "bob" not in dockyard(server, "users", "list").stdout

    dockyard(server, "projects", "create", "scratch")
    dockyard(server, "projects", "delete", "scratch", "--yes")
    assert [p["name"] for p in as_json(dockyard(server, "projects", "list", "--json"))] == ["team"]


def test_robots_and_audit(server):
    dockyard(server, "projects", "create", "ci-proj")
    created = as_json(dockyard(server, "robots", "create", "builder", "--project", "ci-proj", "--action", "pull",
                               "--action", "push", "--expires-days", "30", "--json"))
    assert created["name"] == "robot$ci-proj+builder" and created["secret"]
    secret = created["secret"]

    # the robot can log in to the registry with its secret
    with httpx.Client(headers=API_CLIENT, base_url=server.url, trust_env=False) as client:
        ok = client.get("/api/v1/auth/whoami", auth=(created["name"], secret))
        assert ok.status_code == 200 and ok.json()["kind"] == "robot"

    table = dockyard(server, "robots", "create", "mirror", "--grant", "ci-proj=pull").stdout
    assert "robot$mirror" in table and "secret:" in table
    names = [r["name"] for r in as_json(dockyard(server, "robots", "list", "--json"))]
    assert names == ["robot$ci-proj+builder", "robot$mirror"]
    assert as_json(dockyard(server, "robots", "list", "--project", "ci-proj", "--json"))[0]["name"] == created["name"]

    rotated = as_json(dockyard(server, "robots", "rotate", created["name"], "--json"))
    assert rotated["secret"] != secret
    disabled = as_json(dockyard(server, "robots", "disable", created["name"], "--json"))
    assert disabled["disabled"] is True and "secret" not in disabled
    dockyard(server, "robots", "enable", created["name"])
    dockyard(server, "robots", "delete", "robot$mirror", "--yes")

    events = as_json(dockyard(server, "audit", "list", "--action", "robot", "--project", "ci-proj", "--json"))
    assert [e["action"] for e in events] == ["robot.enable", "robot.disable", "robot.rotate", "robot.create"]
    assert secret not in json.dumps(events)
    everything = dockyard(server, "audit", "list", "--actor", "admin", "--outcome", "success").stdout
    assert "robot.create" in everything and "project.create" in everything
    since = as_json(dockyard(server, "audit", "list", "--since", "2999-01-01T00:00:00Z", "--json"))
    assert since == []


def test_connection_errors_are_clear():
    env = dockyard_env({"DOCKYARD_URL": "http://127.0.0.1:9", "DOCKYARD_USERNAME": "admin",
                        "DOCKYARD_PASSWORD": "x"})
    proc = subprocess.run([sys.executable, "-m", "dockyard", "admin", "projects", "list"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode != 0 and "cannot reach" in proc.stderr
