"""UserService, ProjectService, RobotService and retag against real SQLite and PostgreSQL databases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dockyard.auth.authenticator import Authenticator, LoginFailed
from dockyard.auth.token_keys import KeyStore
from dockyard.auth.secret_box import Kek, KeyRing
from dockyard.auth.throttle import LoginThrottle
from dockyard.auth.tokens import TokenService
from sqlalchemy import insert

from dockyard.auth.principals import Principal
from dockyard.errors import Conflict, InvalidRequest
from dockyard.domain.projects import ProjectService
from dockyard.domain.retag import point_tag
from dockyard.domain.robots import RobotService
from dockyard.domain.users import UserService
from dockyard.errors import ManifestUnknown, NameInvalid, NameUnknown, NotFound
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import manifests, repositories, tags
from dockyard.policy.access import AccessPolicy

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path, database_url_for):
    url = database_url_for(request.param) or f"sqlite:///{tmp_path / 'meta.db'}"
    database = Database(url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def users(db):
    return UserService(db)


@pytest.fixture
def authn(db):
    """The one credential checker (auth/authenticator.py), uncached so every call hashes."""
    keys = KeyStore(db, "ES256", KeyRing(Kek.from_secret(b"k" * 32)))
    keys.ensure_key()
    tokens = TokenService(db, keys, issuer="dockyard", service="dockyard", ttl=300, refresh_ttl=3600, login_ttl=3600)
    throttle = LoginThrottle(db, slowdown_after=100, lockout_after=200, lockout_seconds=1, window_seconds=60)
    return Authenticator(db, tokens, throttle, cache_seconds=0)


def login(authn, name, secret):
    try:
        return authn.verify(name, secret, None)
    except LoginFailed:
        return None


@pytest.fixture
def projects(db):
    return ProjectService(db)


@pytest.fixture
def robots(db):
    return RobotService(db)


# -- users ----------------------------------------------------------------------------------


def test_user_lifecycle(users, authn):
    user = users.create("alice", "correct-horse", email="a@example.com")
    assert user.username == "alice" and not user.is_admin and not user.disabled
    assert user.created_at.tzinfo is not None
    assert login(authn, "alice", "correct-horse") == Principal("user", "alice", user.id, False)
    assert login(authn, "alice", "wrong-password") is None
    assert login(authn, "nobody", "whatever-pw") is None

    before = users.get("alice").password_changed_at
    users.change_password("alice", "new-password-1")
    assert users.get("alice").password_changed_at >= before
    assert login(authn, "alice", "correct-horse") is None
    assert login(authn, "alice", "new-password-1") is not None

    users.update("alice", disabled=True)
    assert authn.account("alice") is None
    assert login(authn, "alice", "new-password-1") is None
    users.update("alice", disabled=False, email=None, is_admin=True)
    assert authn.account("alice").is_admin
    assert users.get("alice").email is None

    users.create("bob", "bob-password")
    users.delete("bob")
    with pytest.raises(NotFound):
        users.get("bob")


@pytest.mark.parametrize("name", ["a", "Alice", "-x", "robot$ci", "x" * 65, "ab/c", "ab c", ""])
def test_bad_usernames(users, name):
    with pytest.raises(NameInvalid):
        users.create(name, "long-enough")


def test_password_and_duplicate_rules(users):
    with pytest.raises(InvalidRequest):
        users.create("carol", "short")
    users.create("carol", "long-enough")
    with pytest.raises(Conflict):
        users.create("carol", "long-enough")
    with pytest.raises(InvalidRequest):
        users.change_password("carol", "short")


def test_listing_is_paged(users):
    for i in range(5):
        users.create(f"user{i}", "long-enough")
    page = users.list(page=2, page_size=2)
    assert [u.username for u in page.items] == ["user2", "user3"]
    assert page.total == 5 and page.has_next
    assert not users.list(page=3, page_size=2).has_next
    with pytest.raises(InvalidRequest):
        users.list(page_size=101)
    with pytest.raises(InvalidRequest):
        users.list(page=0)


def test_last_admin_is_kept(users):
    users.create("root", "long-enough", is_admin=True)
    with pytest.raises(Conflict):
        users.update("root", is_admin=False)
    with pytest.raises(Conflict):
        users.update("root", disabled=True)
    with pytest.raises(Conflict):
        users.delete("root")
    users.create("root2", "long-enough", is_admin=True)
    users.update("root", disabled=True)
    with pytest.raises(Conflict):
        users.delete("root2")


# -- projects -------------------------------------------------------------------------------


def test_project_lifecycle_and_members(users, projects, db):
    alice = users.create("alice", "long-enough").principal()
    bob = users.create("bob", "long-enough").principal()
    project = projects.create("team-a", creator=alice)
    assert not project.public
    assert [(m.username, m.role) for m in projects.list_members("team-a")] == [("alice", "admin")]
    with pytest.raises(Conflict):
        projects.create("team-a")

    projects.add_member("team-a", "bob", "developer")
    with pytest.raises(Conflict):
        projects.add_member("team-a", "bob", "guest")
    with pytest.raises(InvalidRequest):
        projects.add_member("team-a", "bob", "owner")
    with pytest.raises(NotFound):
        projects.add_member("team-a", "nobody", "guest")
    member, previous = projects.set_member_role("team-a", "bob", "maintainer")
    assert (member.role, previous) == ("maintainer", "developer")

    access = AccessPolicy(db)
    assert access.project_actions(bob, "team-a") >= {"pull", "push", "delete", "retag"}
    assert "manage-members" in access.project_actions(alice, "team-a")

    with pytest.raises(Conflict):  # the last admin
        projects.remove_member("team-a", "alice")
    with pytest.raises(Conflict):
        projects.set_member_role("team-a", "alice", "guest")
    projects.set_member_role("team-a", "bob", "admin")
    projects.remove_member("team-a", "alice")
    assert "alice" not in [m.username for m in projects.list_members("team-a")]

    assert projects.update("team-a", public=True).public
    projects.delete("team-a")
    with pytest.raises(NotFound):
        projects.get("team-a")


@pytest.mark.parametrize("name", ["Team", "a/b", "-a", "a-", "a..b", "x" * 65, ""])
def test_bad_project_names(projects, name):
    with pytest.raises(NameInvalid):
        projects.create(name)


def test_delete_refuses_non_empty_project(projects, db):
    projects.create("full")
    projects.create("ful_l")
    with db.write() as conn:
        conn.execute(insert(repositories).values(name="full/app", created_at=utcnow()))
        conn.execute(insert(repositories).values(name="fullx/app", created_at=utcnow()))
    with pytest.raises(Conflict):
        projects.delete("full")
    projects.delete("ful_l")  # "_" is not a LIKE wildcard here


def test_visibility(users, projects, robots):
    admin = users.create("root", "long-enough", is_admin=True).principal()
    alice = users.create("alice", "long-enough").principal()
    projects.create("open", public=True)
    projects.create("mine", creator=alice)
    projects.create("secret")
    robot, _ = robots.create("ci", project="secret", permissions=["pull"])

    def names(principal):
        return [p.name for p in projects.list(visible_to=principal).items]

    assert names(admin) == ["mine", "open", "secret"]
    assert names(alice) == ["mine", "open"]
    assert names(robot.principal()) == ["secret"]
    assert names(Principal("anonymous", "")) == ["open"]
    assert projects.list(visible_to=alice).total == 2


# -- robots ---------------------------------------------------------------------------------


def test_project_robot(projects, robots, db, authn):
    projects.create("team")
    robot, secret = robots.create("ci", project="team", permissions=["push", "pull"], duration_days=30, created_by="root")
    assert robot.name == "robot$team+ci" and robot.kind == "project"
    assert robot.permissions == {"team": ["pull", "push"]}
    assert timedelta(days=29) < robot.expires_at - utcnow() <= timedelta(days=30)
    principal = login(authn, "robot$team+ci", secret)
    assert principal == Principal("robot", "robot$team+ci", robot.id, False)
    assert AccessPolicy(db).project_actions(principal, "team") == {"pull", "push"}
    assert not hasattr(robots.get("robot$team+ci"), "secret_hash")

    _, new_secret = robots.rotate("robot$team+ci")
    assert login(authn, "robot$team+ci", secret) is None
    assert login(authn, "robot$team+ci", new_secret) is not None

    robots.update("robot$team+ci", disabled=True)
    assert login(authn, "robot$team+ci", new_secret) is None
    robots.update("robot$team+ci", disabled=False)
    assert robots.list(project="team").total == 1
    robots.delete("robot$team+ci")
    with pytest.raises(NotFound):
        robots.get("robot$team+ci")


def test_system_robot_and_rules(projects, robots):
    projects.create("a")
    projects.create("b")
    robot, _ = robots.create("mirror", permissions={"a": ["pull"], "b": ["pull", "read-scan"]})
    assert robot.name == "robot$mirror" and robot.kind == "system"
    assert robot.permissions == {"a": ["pull"], "b": ["pull", "read-scan"]}
    with pytest.raises(Conflict):
        robots.create("mirror", permissions={"a": ["pull"]})
    with pytest.raises(InvalidRequest):
        robots.create("x", project="a", permissions=["retag"])
    with pytest.raises(InvalidRequest):
        robots.create("x", project="a", permissions=[])
    with pytest.raises(NotFound):
        robots.create("x", permissions={"nope": ["pull"]})
    with pytest.raises(NameInvalid):
        robots.create("a+b", project="a", permissions=["pull"])
    with pytest.raises(InvalidRequest):
        robots.create("x", project="a", permissions=["pull"], duration_days=1, expires_at=utcnow() + timedelta(days=2))
    with pytest.raises(InvalidRequest):
        robots.create("x", project="a", permissions=["pull"], expires_at=utcnow() - timedelta(days=1))
    assert [r.name for r in robots.list().items] == ["robot$mirror"]


def test_expired_robot_cannot_authenticate(projects, robots, authn):
    projects.create("a")
    robot, secret = robots.create("ci", project="a", permissions=["pull"], expires_at=utcnow() + timedelta(seconds=30))
    assert login(authn, robot.name, secret) is not None
    robots.update(robot.name, expires_at=None)
    assert robots.get(robot.name).expires_at is None


def test_deleting_a_project_removes_its_robots(projects, robots):
    projects.create("a")
    robots.create("ci", project="a", permissions=["pull"])
    projects.delete("a")
    assert robots.list().total == 0


# -- retag ----------------------------------------------------------------------------------


def test_point_tag(db):
    now = utcnow()
    with db.write() as conn:
        repo_id = conn.execute(insert(repositories).values(name="p/app", created_at=now)).inserted_primary_key[0]
        ids = {}
        for d in (DIGEST_A, DIGEST_B):
            ids[d] = conn.execute(
                insert(manifests).values(
                    repository_id=repo_id, digest=d, media_type="x", size=2, payload=b"{}", created_at=now
                )
            ).inserted_primary_key[0]
        conn.execute(insert(tags).values(repository_id=repo_id, name="v1", manifest_id=ids[DIGEST_A], updated_at=now))
    assert point_tag(db, "p/app", "v1", DIGEST_B) == DIGEST_A
    assert point_tag(db, "p/app", "latest", DIGEST_B) is None
    with pytest.raises(ManifestUnknown):
        point_tag(db, "p/app", "v1", "sha256:" + "c" * 64)
    with pytest.raises(NameUnknown):
        point_tag(db, "p/other", "v1", DIGEST_A)
