"""Issue 9, finding 1, on a real `dockyard serve`: the data directory 0700 and every file the
server writes 0600 (SQLite database, WAL, SHM, blobs, uploads, the key-encryption key), the
server's umask 077, and no plaintext private key in the database file."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import httpx

from tests.support.server import run_dockyard

ADMIN_PASSWORD = "admin-password-1"


def loose_entries(root: Path) -> list[str]:
    loose = []
    for path in [root, *root.rglob("*")]:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            continue
        wanted = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) & ~wanted:
            loose.append(f"{path.relative_to(root)} {oct(stat.S_IMODE(st.st_mode))}")
    return loose


def umasks_of_group(pgid: int) -> dict[int, str]:
    """Umask of every process in the server's process group (master and workers)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            status = (entry / "status").read_text()
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
        umask = next((line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), None)
        if umask:
            found[int(entry.name)] = umask
    return found


def test_finding1_real_server_writes_owner_only_files(tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / "storage").mkdir(parents=True)
    data_dir.chmod(0o755)
    (data_dir / "leftover.txt").write_text("from an older version")
    (data_dir / "leftover.txt").chmod(0o644)
    with run_dockyard(data_dir, auth_mode="token", admin_password=ADMIN_PASSWORD,
                      extra_env={"DOCKYARD_WORKERS": "2"}) as server:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client:
            # auto_create_projects is off: create the project through the API first.
            assert client.post("/api/v1/projects", json={"name": "library"}, auth=("admin", ADMIN_PASSWORD)).status_code == 201
            r = client.get("/token", params={"service": "dockyard", "scope": "repository:library/app:pull,push"},
                           auth=("admin", ADMIN_PASSWORD))
            headers = {"Authorization": f"Bearer {r.json()['token']}"}
            data = os.urandom(50_000)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            r = client.post("/v2/library/app/blobs/uploads/", params={"digest": digest}, content=data,
                            headers={**headers, "Content-Type": "application/octet-stream"})
            assert r.status_code == 201, r.text
            r = client.post("/v2/library/app/blobs/uploads/", headers=headers)
            assert r.status_code == 202
            r = client.patch(r.headers["Location"], content=b"x" * 4096,
                             headers={**headers, "Content-Type": "application/octet-stream"})
            assert r.status_code == 202
        umasks = umasks_of_group(server.pid)
        assert umasks and set(umasks.values()) == {"0077"}, umasks
        names = {p.name for p in data_dir.rglob("*")}
        assert {"dockyard.db", "dockyard.db-wal", "dockyard.db-shm", "kek"} <= names
        assert any("uploads" in p.parts for p in data_dir.rglob("*") if p.is_file())
        assert loose_entries(data_dir) == []
        raw = b"".join(p.read_bytes() for p in data_dir.glob("dockyard.db*"))
        assert b"PRIVATE KEY" not in raw
    assert loose_entries(data_dir) == []
