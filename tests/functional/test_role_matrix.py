"""The access matrix of docs/access.md, cell by cell, through /v2 and /api/v1.

The expectations come from the ONE table both the docs and the code are built from,
src/dockyard/policy/access_matrix.py (docs/access.md is rendered from it; tests/unit/test_access_matrix.py
checks that). This test never asks the code under test what is allowed: it reads the table's rows
(who holds each action) and checks, over HTTP, that every endpoint enforces them. Each cell is its own
pytest case, e.g. ``private:pull-v2-token[guest]``.

Columns (principals):

    SA   system admin (user `admin`)            R1   project robot, actions [pull]
    PA   project admin (member, role admin)     R2   project robot, actions [pull, push]
    MA   maintainer                             R3   project robot, actions [pull, push, delete]
    DE   developer                              R4   project robot, actions [pull, read-scan]
    GU   guest                                  R5   project robot, actions [push] (push implies pull)
    NM   non-member user                        SR   system robot with [pull] on the project
    AN   anonymous (no credentials)

Rows (cells): CELLS maps each request to the matrix action it exercises and its interface. Every action of
the table has at least one cell (test_every_action_has_a_cell).

Refusals: anonymous → 401 UNAUTHORIZED everywhere (the management API needs credentials for everything;
on /v2 a credential-less request is always challenged in token mode, even for a public project — clients
then fetch an anonymous token, which is what pull-v2-token does). A caller that can do nothing in the
project (NM on the private project) gets the answer a missing project gets (finding 9): /api/v1 →
404 NOT_FOUND, /v2 → 404 NAME_UNKNOWN for a pull, else 403 DENIED. Otherwise 403 DENIED.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from dockyard.app import create_app
from dockyard.domain.projects import ProjectService
from dockyard.domain.retag import point_tag
from dockyard.domain.robots import RobotService
from dockyard.domain.users import UserService
from dockyard.policy.access_matrix import BY_ACTION, MATRIX
from dockyard.settings import Settings

from .helpers import OCI_MANIFEST, Registry, dumps
from .helpers import API_CLIENT

ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "password-123"
BASE = "http://registry.test"
REPO_NAME = "app"
PROJECTS = ("private", "public")

PRINCIPALS = ("SA", "PA", "MA", "DE", "GU", "NM", "AN", "R1", "R2", "R3", "R4", "R5", "SR")
NAMES = {
    "SA": "system-admin", "PA": "project-admin", "MA": "maintainer", "DE": "developer", "GU": "guest",
    "NM": "non-member", "AN": "anonymous", "R1": "robot-pull", "R2": "robot-pull-push",
    "R3": "robot-pull-push-delete", "R4": "robot-pull-read-scan", "R5": "robot-push-only", "SR": "system-robot-pull",
}
ROLES = {"PA": "admin", "MA": "maintainer", "DE": "developer", "GU": "guest"}
ROBOT_ACTIONS = {"R1": ["pull"], "R2": ["pull", "push"], "R3": ["pull", "push", "delete"], "R4": ["pull", "read-scan"],
                 "R5": ["push"]}
ROBOT_GRANTS = {**ROBOT_ACTIONS, "SR": ["pull"]}

# cell -> (matrix action, interface, success status)
CELLS: dict[str, tuple[str, str, int]] = {
    "pull-v2-token": ("pull", "v2", 200),
    "pull-v2-basic": ("pull", "v2", 200),
    "pull-api": ("pull", "api", 200),
    "push-v2-upload": ("push", "v2", 202),
    "push-v2-manifest": ("push", "v2", 201),
    "retag-v2": ("push", "v2", 201),  # a manifest PUT of an existing manifest under a new tag needs push
    "delete-v2": ("delete", "v2", 202),
    "delete-api": ("delete", "api", 204),
    "retag-api": ("retag", "api", 200),
    "scan-read-api": ("read-scan", "api", 200),
    "sbom-read-api": ("read-scan", "api", 404),  # allowed: "no SBOM yet" (NOT_FOUND), not a refusal
    "signatures-read-api": ("read-scan", "api", 200),
    "security-policy-read-api": ("read-scan", "api", 200),
    "allowlist-read-api": ("read-scan", "api", 200),
    "trusted-keys-read-api": ("read-scan", "api", 200),
    "tag-rules-read-api": ("read-settings", "api", 200),
    "quota-read-api": ("read-settings", "api", 200),
    "members-add-api": ("manage-members", "api", 201),
    "members-remove-api": ("manage-members", "api", 204),
    "policies-api": ("manage-policies", "api", 200),
    "webhooks-api": ("manage-webhooks", "api", 200),
    "audit-api": ("read-audit", "api", 200),
    "events-api": ("read-audit", "api", 200),
}


def grants(project: str, cell: str, p: str) -> bool:
    """Whether the table grants principal `p` the cell's action in `project`."""
    action, interface, _ = CELLS[cell]
    perm = BY_ACTION[action]
    public = project == "public"
    if p == "SA":
        return True
    if p in ROLES:
        return ROLES[p] in perm.roles
    if p == "NM":
        return public and perm.public
    if p == "AN":
        # /api/v1 always needs credentials; a credential-less /v2 request is challenged (see the docstring).
        return public and perm.anonymous and interface == "v2" and cell != "pull-v2-basic"
    granted = ROBOT_GRANTS[p]
    implied = any(action in BY_ACTION[g].robot_implies for g in granted)  # the table's "push implies pull"
    return (perm.robot and (action in granted or implied)) or (public and perm.public)


def expected(project: str, cell: str, p: str) -> tuple[int, str | None]:
    action, interface, success = CELLS[cell]
    if grants(project, cell, p):
        return success, "NOT_FOUND" if success == 404 else None
    if p == "AN":
        return 401, "UNAUTHORIZED"
    invisible = (project, p) == ("private", "NM")  # can do nothing there: answered like a missing project
    if interface == "api":
        return (404, "NOT_FOUND") if invisible else (403, "DENIED")
    if invisible and action == "pull":
        return 404, "NAME_UNKNOWN"
    return 403, "DENIED"


CASES = [(project, cell, p) for project in PROJECTS for cell in CELLS for p in PRINCIPALS]
IDS = [f"{project}:{cell}[{NAMES[p]}]" for project, cell, p in CASES]


def test_every_action_has_a_cell() -> None:
    assert {perm.action for perm in MATRIX} == {action for action, _, _ in CELLS.values()}


# -- one app, every cell run once per module ---------------------------------------------------


class World:
    """The app, its fixtures, and a credential per (project, principal)."""

    def __init__(self, client: httpx.AsyncClient, services):
        self.client = client
        self.services = services
        self.db = services.db
        self.projects = ProjectService(services.db)
        self.creds: dict[tuple[str, str], tuple[str, str] | None] = {}
        self.digest: dict[str, str] = {}
        self.manifest: dict[str, bytes] = {}

    async def setup(self) -> None:
        users, robots = UserService(self.db), RobotService(self.db)
        for p, name in NAMES.items():
            if p in ROLES or p == "NM":
                users.create(name, PASSWORD)
        users.create("target", PASSWORD)
        for project in PROJECTS:
            self.projects.create(project, public=project == "public")
        _, sys_secret = robots.create("sys", permissions={project: ["pull"] for project in PROJECTS})
        for project in PROJECTS:
            for p, role in ROLES.items():
                self.projects.add_member(project, NAMES[p], role)
            creds: dict[str, tuple[str, str] | None] = {
                "SA": ("admin", ADMIN_PASSWORD), "NM": (NAMES["NM"], PASSWORD), "AN": None,
                "SR": ("robot$sys", sys_secret),
            }
            creds.update({p: (NAMES[p], PASSWORD) for p in ROLES})
            for p, actions in ROBOT_ACTIONS.items():
                robot, secret = robots.create(p.lower(), project=project, permissions=actions)
                creds[p] = (robot.name, secret)
            for p, c in creds.items():
                self.creds[(project, p)] = c
            # the image everyone pulls, pushed as the system admin over Basic auth
            pusher = Registry(app=None, client=_Authed(self.client, ("admin", ADMIN_PASSWORD)), driver="", data_dir=Path())
            digest, body = await pusher.push_image(f"{project}/{REPO_NAME}", "v1", seed=1)
            self.digest[project], self.manifest[project] = digest, body

    # -- helpers ------------------------------------------------------------------------------

    async def token(self, project: str, p: str, actions: str) -> dict[str, str]:
        scope = f"repository:{project}/{REPO_NAME}:{actions}"
        r = await self.client.get("/token", params={"service": self.services.settings.token_service, "scope": scope},
                                  auth=self.creds[(project, p)])
        assert r.status_code == 200, (project, p, r.status_code, r.text)
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def tag_exists(self, project: str, tag: str) -> bool:
        row = self.db.fetchone(
            "SELECT 1 FROM tags t JOIN repositories r ON r.id = t.repository_id WHERE r.name = ? AND t.name = ?",
            (f"{project}/{REPO_NAME}", tag),
        )
        return row is not None

    def member_roles(self, project: str) -> dict[str, str]:
        return {m.username: m.role for m in self.projects.list_members(project)}

    # -- one cell -------------------------------------------------------------------------------

    async def run(self, project: str, cell: str, p: str) -> tuple[httpx.Response, list[str]]:
        """Perform the cell's request; returns the response and any side-effect problems."""
        c, auth = self.client, self.creds[(project, p)]
        repo = f"{project}/{REPO_NAME}"
        tag = f"{cell}-{p.lower()}"
        problems: list[str] = []
        allowed = grants(project, cell, p)
        if cell == "pull-v2-token":
            return await c.get(f"/v2/{repo}/manifests/v1", headers=await self.token(project, p, "pull")), problems
        if cell == "pull-v2-basic":
            return await c.get(f"/v2/{repo}/manifests/v1", auth=auth), problems
        if cell == "pull-api":
            r = await c.get(f"/api/v1/repositories/{repo}/tags", auth=auth)
            if r.status_code == 200 and {"name": "v1", "digest": self.digest[project]} not in [
                {"name": t["name"], "digest": t["digest"]} for t in r.json()
            ]:
                problems.append(f"v1 missing from tag list {r.json()}")
            return r, problems
        if cell == "push-v2-upload":
            return await c.post(f"/v2/{repo}/blobs/uploads/", headers=await self.token(project, p, "pull,push")), problems
        if cell == "push-v2-manifest":
            doc = json.loads(self.manifest[project])
            doc["annotations"] = {"pushed-by": p}
            r = await c.put(f"/v2/{repo}/manifests/{tag}", content=dumps(doc),
                            headers={"Content-Type": OCI_MANIFEST, **await self.token(project, p, "pull,push")})
            if self.tag_exists(project, tag) != allowed:
                problems.append(f"tag {tag} exists={not allowed} after the push")
            return r, problems
        if cell == "retag-v2":
            r = await c.put(f"/v2/{repo}/manifests/{tag}", content=self.manifest[project],
                            headers={"Content-Type": OCI_MANIFEST, **await self.token(project, p, "pull,push")})
            if self.tag_exists(project, tag) != allowed:
                problems.append(f"tag {tag} exists={not allowed} after the retag")
            return r, problems
        if cell in ("delete-v2", "delete-api"):
            point_tag(self.db, repo, tag, self.digest[project])
            if cell == "delete-v2":
                r = await c.delete(f"/v2/{repo}/manifests/{tag}", headers=await self.token(project, p, "delete"))
            else:
                r = await c.delete(f"/api/v1/repositories/{repo}/tags/{tag}", auth=auth)
            if self.tag_exists(project, tag) == allowed:
                problems.append(f"tag {tag} exists={allowed} after the delete")
            return r, problems
        if cell == "retag-api":
            r = await c.put(f"/api/v1/repositories/{repo}/tags/{tag}", json={"digest": self.digest[project]}, auth=auth)
            if self.tag_exists(project, tag) != allowed:
                problems.append(f"tag {tag} exists={not allowed} after the retag")
            return r, problems
        reads = {
            "scan-read-api": f"/api/v1/repositories/{repo}/artifacts/v1/scan",
            "sbom-read-api": f"/api/v1/repositories/{repo}/artifacts/v1/sbom",
            "signatures-read-api": f"/api/v1/repositories/{repo}/artifacts/v1/signatures",
            "security-policy-read-api": f"/api/v1/projects/{project}/security",
            "allowlist-read-api": f"/api/v1/projects/{project}/security/allowlist",
            "trusted-keys-read-api": f"/api/v1/projects/{project}/security/trusted-keys",
            "tag-rules-read-api": f"/api/v1/projects/{project}/tag-rules",
            "quota-read-api": f"/api/v1/projects/{project}/quota",
            "webhooks-api": f"/api/v1/projects/{project}/webhooks",
        }
        if cell in reads:
            r = await c.get(reads[cell], auth=auth)
            if allowed and cell == "sbom-read-api" and "no SBOM yet" not in r.text:
                problems.append("404 is not the 'no SBOM yet' answer")
            return r, problems
        if cell == "members-add-api":
            if "target" in self.member_roles(project):
                self.projects.remove_member(project, "target")
            r = await c.post(f"/api/v1/projects/{project}/members", json={"username": "target", "role": "guest"}, auth=auth)
            if ("target" in self.member_roles(project)) != allowed:
                problems.append("member list changed against the outcome")
            return r, problems
        if cell == "members-remove-api":
            if "target" not in self.member_roles(project):
                self.projects.add_member(project, "target", "guest")
            r = await c.delete(f"/api/v1/projects/{project}/members/target", auth=auth)
            if ("target" in self.member_roles(project)) == allowed:
                problems.append("member list changed against the outcome")
            return r, problems
        if cell == "policies-api":
            public = project == "public"
            r = await c.patch(f"/api/v1/projects/{project}", json={"public": public}, auth=auth)
            if self.projects.get(project).public != public:
                problems.append("visibility changed")
            return r, problems
        if cell == "audit-api":
            return await c.get("/api/v1/audit", params={"project": project}, auth=auth), problems
        if cell == "events-api":
            return await c.get("/api/v1/events", params={"project": project}, auth=auth), problems
        raise AssertionError(cell)


class _Authed:
    """A client wrapper that adds fixed Basic credentials (for the setup push)."""

    def __init__(self, client: httpx.AsyncClient, auth: tuple[str, str]):
        self._client, self._auth = client, auth

    async def post(self, *a, **kw):
        return await self._client.post(*a, auth=self._auth, **kw)

    async def put(self, *a, **kw):
        return await self._client.put(*a, auth=self._auth, **kw)


async def _run_all(data_dir: Path, database_url: str | None = None) -> dict[tuple[str, str, str], str | None]:
    """Run every cell once; map each to None (as expected) or a description of the mismatch."""
    app = create_app(Settings(data_dir=data_dir, admin_password=ADMIN_PASSWORD, database_url=database_url))
    outcomes: dict[tuple[str, str, str], str | None] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(headers=API_CLIENT, transport=transport, base_url=BASE) as client:
            world = World(client, app.state.services)
            await world.setup()
            for project, cell, p in CASES:
                want_status, want_code = expected(project, cell, p)
                try:
                    r, problems = await world.run(project, cell, p)
                except Exception as exc:  # noqa: BLE001 - reported per cell
                    outcomes[(project, cell, p)] = f"raised {exc!r}"
                    continue
                got_code = None
                if r.status_code >= 400:
                    try:
                        got_code = r.json()["errors"][0]["code"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        got_code = f"<no OCI error body: {r.text[:100]!r}>"
                mismatch = []
                if r.status_code != want_status or (want_code is not None and got_code != want_code):
                    mismatch.append(
                        f"expected {want_status} {want_code or ''}".rstrip()
                        + f", got {r.status_code} {got_code or ''}".rstrip()
                        + (f": {r.text[:300]}" if r.status_code >= 400 else "")
                    )
                if want_status == 401 and r.status_code == 401 and "www-authenticate" not in r.headers:
                    mismatch.append("401 without a WWW-Authenticate challenge")
                mismatch += problems
                outcomes[(project, cell, p)] = "; ".join(mismatch) or None
    return outcomes


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def outcomes(request, tmp_path_factory) -> dict[tuple[str, str, str], str | None]:
    # One event loop, one app, all cells: the per-cell tests below only read the results.
    url = request.getfixturevalue("postgres_server").create_database() if request.param == "postgresql" else None
    return asyncio.run(_run_all(tmp_path_factory.mktemp("role-matrix") / "data", url))


@pytest.mark.parametrize(("project", "cell", "principal"), CASES, ids=IDS)
def test_cell(outcomes, project: str, cell: str, principal: str) -> None:
    problem = outcomes[(project, cell, principal)]
    assert problem is None, f"{project}:{cell}[{NAMES[principal]}]: {problem}"


def test_matrix_is_complete(outcomes) -> None:
    assert len(outcomes) == len(PROJECTS) * len(CELLS) * len(PRINCIPALS) == len(set(IDS))


def test_finding10_non_members_of_a_public_project_read_no_scan_results_or_policies(outcomes) -> None:
    """read-scan is checked, and a public project shows non-members its images, not its security data."""
    for cell in ("scan-read-api", "sbom-read-api", "signatures-read-api", "security-policy-read-api",
                 "allowlist-read-api", "trusted-keys-read-api", "tag-rules-read-api", "quota-read-api"):
        assert expected("public", cell, "NM") == (403, "DENIED"), cell
        assert outcomes[("public", cell, "NM")] is None, outcomes[("public", cell, "NM")]
    assert expected("private", "scan-read-api", "R1") == (403, "DENIED")  # a pull-only robot lacks read-scan
    assert outcomes[("private", "scan-read-api", "R1")] is None
    assert outcomes[("private", "scan-read-api", "R4")] is None and expected("private", "scan-read-api", "R4")[0] == 200


# -- the management API's tag endpoints themselves (list, delete) --------------------------------


async def test_tag_list_and_delete_endpoints(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data", admin_password=ADMIN_PASSWORD))
    admin = ("admin", ADMIN_PASSWORD)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(headers=API_CLIENT, transport=transport, base_url=BASE, auth=admin) as c:
            db = app.state.services.db
            ProjectService(db).create("team")
            reg = Registry(app=None, client=c, driver="", data_dir=tmp_path)
            d1, _ = await reg.push_image("team/app", "v1", seed=1)
            d2, _ = await reg.push_image("team/app", "v2", seed=2)
            point_tag(db, "team/app", "latest", d2)
            # a repository whose last component is "tags" must not confuse the {name:path} routes
            await reg.push_image("team/tags", "tags", seed=3)

            r = await c.get("/api/v1/repositories/team/app/tags", params={"page_size": 2})
            assert r.status_code == 200, r.text
            assert [(t["name"], t["digest"]) for t in r.json()] == [("latest", d2), ("v1", d1)]
            assert r.headers["x-total-count"] == "3" and 'rel="next"' in r.headers["link"]
            r = await c.get("/api/v1/repositories/team/app/tags", params={"page": 2, "page_size": 2})
            assert [(t["name"], t["digest"]) for t in r.json()] == [("v2", d2)] and "link" not in r.headers
            r = await c.get("/api/v1/repositories/team/tags/tags")
            assert [t["name"] for t in r.json()] == ["tags"]

            r = await c.delete("/api/v1/repositories/team/app/tags/latest")
            assert r.status_code == 204, r.text
            assert [t["name"] for t in (await c.get("/api/v1/repositories/team/app/tags")).json()] == ["v1", "v2"]
            assert (await c.get("/v2/team/app/manifests/v2")).status_code == 200  # the manifest stays
            r = await c.delete("/api/v1/repositories/team/tags/tags/tags")
            assert r.status_code == 204, r.text
            events = (await c.get("/api/v1/audit", params={"action": "tag.delete"})).json()
            assert [(e["object"], e["project"], e["actor"]) for e in events] == [
                ("team/tags:tags", "team", "admin"), ("team/app:latest", "team", "admin")
            ]

            def code(resp: httpx.Response) -> tuple[int, str]:
                return resp.status_code, resp.json()["errors"][0]["code"]

            assert code(await c.delete("/api/v1/repositories/team/app/tags/latest")) == (404, "MANIFEST_UNKNOWN")
            assert code(await c.delete("/api/v1/repositories/team/nope/tags/x")) == (404, "NAME_UNKNOWN")
            assert code(await c.get("/api/v1/repositories/team/nope/tags")) == (404, "NAME_UNKNOWN")
            assert code(await c.get("/api/v1/repositories/ghost/app/tags")) == (404, "NOT_FOUND")
            assert code(await c.delete("/api/v1/repositories/team/app/tags/bad:tag")) == (400, "TAG_INVALID")
            assert code(await c.get("/api/v1/repositories/Team/App/tags")) == (400, "NAME_INVALID")
            assert code(await c.get("/api/v1/repositories/team/app/tags", params={"page_size": 101})) == (
                400, "INVALID_REQUEST")
            assert code(await c.get("/api/v1/repositories/team/app/tags/v1")) == (405, "UNSUPPORTED")
            token = (await c.get("/token", params={"service": app.state.services.settings.token_service,
                                                   "scope": "repository:team/app:pull"})).json()["token"]
            bearer = await c.get("/api/v1/repositories/team/app/tags", auth=None,
                                 headers={"Authorization": f"Bearer {token}"})
            assert code(bearer) == (401, "UNAUTHORIZED")  # the management API takes Basic credentials only
            paths = (await c.get("/api/v1/openapi.json")).json()["paths"]
            assert {"get"} <= set(paths["/repositories/{name}/tags"])
            assert {"put", "delete"} <= set(paths["/repositories/{name}/tags/{tag}"])
