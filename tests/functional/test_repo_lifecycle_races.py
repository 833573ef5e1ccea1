"""A repository delete racing a push, on PostgreSQL (READ COMMITTED, row locks).

The two meet on the repository's row (domain/repositories.py): a writer holds it FOR KEY SHARE from
`ensure_repository_id` until it commits; a delete takes it FOR UPDATE and only then reads what the
repository holds. Each test pauses one side inside its transaction, waits (with a deadline) until
the other is blocked on a lock, and then lets the first commit. SQLite is not here: its writers are
serialized by one mutex, so the two cannot interleave at all."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from dockyard.domain.repositories import ensure_repository_id
from dockyard.domain.repository_lifecycle import drop_if_empty
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import manifests

from .test_repo_lifecycle import open_registry, repo_names


def wait_for_lock_waiter(db: Database, deadline_seconds: float = 20) -> None:
    """Poll until some other session of this database waits on a lock."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        with db.engine.connect() as conn:
            waiting = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )).scalar_one()
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("no session started waiting on a lock before the deadline")


def insert_manifest(conn, repo_id: int, digest: str) -> None:
    conn.execute(manifests.insert().values(repository_id=repo_id, digest=digest, media_type="application/vnd.oci.image.manifest.v1+json",
                                           size=2, payload=b"{}", created_at=utcnow()))


def run(target) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def body():
        try:
            outcome["value"] = target()
        except BaseException as exc:  # reported by the test's asserts
            outcome["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


@pytest.fixture
async def reg(tmp_path: Path, database_url_for):
    async with open_registry(tmp_path, database_url_for("postgresql")) as registry:
        yield registry


async def test_an_emptiness_check_leaves_a_repository_a_push_holds(reg):
    await reg.client.post("/api/v1/projects", json={"name": "team"})
    db: Database = reg.services.db
    with db.write() as conn:
        ensure_repository_id(conn, "team/app")  # an empty repository, as a first blob upload leaves it
    with db.write() as push:
        repo_id = ensure_repository_id(push, "team/app")  # the push holds the row …
        insert_manifest(push, repo_id, "sha256:" + "a" * 64)  # … and adds a manifest, not committed yet

        def check():
            with db.write() as conn:
                return drop_if_empty(conn, "team/app", None)

        # Neither dropped (its cascade would take the push's manifest) nor waiting (a deadlock risk):
        # the check skips a repository a writer holds.
        thread, outcome = run(check)
        thread.join(20)
        assert outcome == {"value": False}
    assert repo_names(reg) == ["team/app"] and reg.count("manifests") == 1
    with db.write() as conn:
        assert drop_if_empty(conn, "team/app", None) is False  # not empty now
        conn.execute(manifests.delete())
    with db.write() as conn:
        assert drop_if_empty(conn, "team/app", None) is True  # empty and free: it goes
    assert repo_names(reg) == []


async def test_a_push_that_meets_a_repository_delete_waits_and_creates_the_repository_afresh(reg):
    await reg.client.post("/api/v1/projects", json={"name": "team"})
    await reg.push_image("team/app", "v1", seed=1)
    lifecycle = reg.services.repository_lifecycle
    db: Database = reg.services.db
    old_id = reg.scalar("SELECT id FROM repositories WHERE name = 'team/app'")
    with db.write() as deleting:
        # The delete's own transaction, paused after its work and before its commit.
        deleted = lifecycle._delete(deleting, "team/app", force=True, override=None,
                                    verdicts=lifecycle.tag_policy.prepare("team/app", ["v1"]), via="api")
        assert deleted.manifests == 1

        def push():
            with db.write() as conn:
                repo_id = ensure_repository_id(conn, "team/app")
                insert_manifest(conn, repo_id, "sha256:" + "b" * 64)
                return repo_id

        thread, outcome = run(push)
        wait_for_lock_waiter(db)  # the push waits for the delete
        assert thread.is_alive()
    thread.join(20)
    assert "error" not in outcome, outcome
    assert outcome["value"] != old_id  # a fresh row: the push's manifest is not under a deleted repository
    assert repo_names(reg) == ["team/app"]
    assert reg.sql("SELECT digest FROM manifests") == [("sha256:" + "b" * 64,)]
    assert reg.count("tags") == 0 and reg.scalar("SELECT COUNT(*) FROM blobs WHERE ref_count <> 0") == 0


async def test_a_project_delete_waits_for_a_push_creating_a_repository_and_then_refuses(reg):
    """Repositories have no foreign key to projects: a push that created `team/app` while the project
    was being deleted left a repository behind, which a project later created with the same name
    inherited (its images, to the new project's members). The push holds the project row; the delete
    locks it first and so sees the push's repository."""
    await reg.client.post("/api/v1/projects", json={"name": "team"})
    db = reg.services.db
    holding, release = threading.Event(), threading.Event()

    def push():
        with db.write() as conn:
            ensure_repository_id(conn, "team/app", projects_required=True)
            holding.set()
            release.wait(20)

    pusher, pushed = run(push)
    assert holding.wait(20)
    deleter, deleted = run(lambda: reg.services.projects.delete("team"))
    try:
        wait_for_lock_waiter(db)
    finally:
        release.set()
        pusher.join(20)
        deleter.join(20)
    assert "error" not in pushed, pushed
    assert type(deleted.get("error")).__name__ == "Conflict", deleted
    assert repo_names(reg) == ["team/app"]
    assert (await reg.client.get("/api/v1/projects/team")).status_code == 200


async def test_a_retag_that_meets_a_repository_delete_waits_and_answers_name_unknown(reg):
    """A retag read the repository's id without holding the row: meeting a repository delete it
    failed on the foreign key (a 500), instead of waiting for the delete and saying the repository is gone."""
    from dockyard.domain.retag import point_tag

    await reg.client.post("/api/v1/projects", json={"name": "team"})
    digest, _ = await reg.push_image("team/app", "v1", seed=1)
    lifecycle = reg.services.repository_lifecycle
    db: Database = reg.services.db
    with db.write() as deleting:
        lifecycle._delete(deleting, "team/app", force=True, override=None,
                          verdicts=lifecycle.tag_policy.prepare("team/app", ["v1"]), via="api")
        thread, outcome = run(lambda: point_tag(db, "team/app", "v2", digest, tag_policy=lifecycle.tag_policy))
        wait_for_lock_waiter(db)
        assert thread.is_alive()
    thread.join(20)
    assert type(outcome.get("error")).__name__ == "NameUnknown", outcome
    assert repo_names(reg) == [] and reg.count("tags") == 0
