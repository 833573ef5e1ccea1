"""Issue 9, findings 1 and 2 against a real `dockyard serve` (PostgreSQL and SQLite): `dockyard admin
keys list|rotate|revoke`, a revoked key ending a login password at once, a login password unable
to renew itself, and `dockyard admin rotate-kek` between two runs of the server."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.support.server import dockyard_env, run_dockyard

pytestmark = pytest.mark.e2e

ADMIN = ("admin", "admin-password-1")


def dockyard(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dockyard", *args], capture_output=True, text=True,
                          env=dockyard_env({"COLUMNS": "200", "NO_COLOR": "1", **env}), timeout=120)
    if check:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def login_password(client: httpx.Client, auth) -> httpx.Response:
    return client.post("/api/v1/auth/login-password", auth=auth, headers={"X-Dockyard-Client": "test"})


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_finding1_keys_cli_and_kek_rotation_on_a_real_server(tmp_path, backend, database_url_for):
    url = database_url_for(backend)
    data_dir = tmp_path / "data"
    remote = {"DOCKYARD_USERNAME": ADMIN[0], "DOCKYARD_PASSWORD": ADMIN[1]}
    offline = ["--data-dir", str(data_dir)] + (["--database-url", url] if url else [])
    with run_dockyard(data_dir, database_url=url, auth_mode="token", admin_password=ADMIN[1]) as server:
        env = {**remote, "DOCKYARD_URL": server.url}
        with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client:
            lp = login_password(client, ADMIN).json()["password"]
            assert client.get("/api/v1/auth/whoami", auth=("admin", lp)).status_code == 200
            again = login_password(client, ("admin", lp))
            assert again.status_code == 403 and again.json()["errors"][0]["code"] == "DENIED"

            [first] = json.loads(dockyard("admin", "keys", "list", "--json", env=env).stdout)
            assert first["status"] == "active"
            rotated = json.loads(dockyard("admin", "keys", "rotate", "--json", env=env).stdout)["kid"]
            listed = {k["kid"]: k for k in json.loads(dockyard("admin", "keys", "list", "--json", env=env).stdout)}
            assert listed[rotated]["status"] == "active" and listed[first["kid"]]["status"] == "retired"
            assert listed[first["kid"]]["verifies_until"]
            assert client.get("/api/v1/auth/whoami", auth=("admin", lp)).status_code == 200  # retired: still verifies

            # `--`: a kid is base64url and may start with "-".
            dockyard("admin", "keys", "revoke", "--yes", "--", first["kid"], env=env)
            assert client.get("/api/v1/auth/whoami", auth=("admin", lp)).status_code == 401
            table = dockyard("admin", "keys", "list", env=env).stdout
            assert "revoked" in table and "PRIVATE" not in table
            lp = login_password(client, ADMIN).json()["password"]
    # Offline: a new key-encryption key; the login password signed before still works after.
    kek = (data_dir / "secrets" / "kek").read_bytes()
    result = dockyard("admin", "rotate-kek", *offline, env={})
    assert (data_dir / "secrets" / "kek").read_bytes() != kek
    assert result.stdout.strip()
    with run_dockyard(data_dir, database_url=url, auth_mode="token") as server:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client:
            assert client.get("/api/v1/auth/whoami", auth=("admin", lp)).status_code == 200
            assert login_password(client, ADMIN).status_code == 200
    # And with the old KEK back in place, the server refuses to start, saying why.
    (data_dir / "secrets" / "kek").write_bytes(kek)
    refused = dockyard("serve", "--port", "1", "--data-dir", str(data_dir),
                       *(["--database-url", url] if url else []), env={}, check=False)
    assert refused.returncode != 0 and "key-encryption key" in refused.stderr, refused.stderr
