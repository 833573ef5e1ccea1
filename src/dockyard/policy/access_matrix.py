"""The access matrix: ONE table of who may do what, from which everything else is derived.

- policy/access.py takes the role, robot, non-member and anonymous grants from it;
- docs/access.md shows it, rendered by `python -m dockyard.policy.access_matrix` (which rewrites the
  block between the markers; tests/unit/test_access_matrix.py fails when the two differ);
- tests/functional/test_role_matrix.py reads its expectations from it, and walks every cell over HTTP.

So the documentation, the code and the test cannot drift apart: change a row here, and the docs
check fails until the docs are regenerated, and the role-matrix test fails until every endpoint in
the row's `where` enforces it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

ROLES = ("admin", "maintainer", "developer", "guest")
_GUEST_UP = frozenset(ROLES)
_DEVELOPER_UP = frozenset({"admin", "maintainer", "developer"})
_MAINTAINER_UP = frozenset({"admin", "maintainer"})
_ADMIN = frozenset({"admin"})


@dataclass(frozen=True)
class Permission:
    """One row: a project-scoped action, where it is checked, and who holds it."""

    action: str
    label: str
    where: str  # Markdown: the endpoints that require this action
    roles: frozenset[str]  # project roles that hold it
    public: bool = False  # a public project grants it to every signed-in account (robots included)
    anonymous: bool = False  # a public project grants it to anonymous callers (through /v2)
    robot: bool = False  # may be granted to a robot account
    robot_implies: tuple[str, ...] = ()  # granting it to a robot also grants these (push needs pull to check what exists)
    system_admin: str = "✓"


MATRIX: tuple[Permission, ...] = (
    Permission(
        "pull", "pull",
        "`/v2` GET/HEAD manifests, blobs, tags, referrers; `GET /api/v1/repositories/{name}/tags`; "
        "the source of a promotion or cross-repository mount (which also runs the source's pull gate)",
        _GUEST_UP, public=True, anonymous=True, robot=True,
    ),
    Permission(
        "push", "push",
        "`/v2` uploads and manifest PUT; the destination of a promotion; `POST …/artifacts/{ref}/scan`",
        _DEVELOPER_UP, robot=True, robot_implies=("pull",),
    ),
    Permission(
        "delete", "delete",
        "`/v2` DELETE of manifests, tags, blobs; `DELETE /api/v1/repositories/{name}/tags/{tag}`",
        _MAINTAINER_UP, robot=True,
    ),
    Permission(
        "retag", "retag",
        "`PUT /api/v1/repositories/{name}/tags/{tag}`; `POST /api/v1/promotions` within one repository",
        _MAINTAINER_UP,
    ),
    Permission(
        "read-scan", "read scan results",
        "`GET /api/v1/repositories/{name}/artifacts/{ref}/scan`, `…/sbom`, `…/signatures`; "
        "`GET /api/v1/projects/{project}/security`, `…/security/allowlist`, `…/security/trusted-keys`",
        _GUEST_UP, robot=True,
    ),
    Permission(
        "read-settings", "read project settings",
        "`GET /api/v1/projects/{project}/tag-rules`, `POST …/tag-rules/test` (a dry run), "
        "`GET /api/v1/projects/{project}/quota`",
        _GUEST_UP,
    ),
    Permission(
        "manage-members", "manage members",
        "`/api/v1/projects/{project}/members`; the project's robots (`/api/v1/robots?project=…`, "
        "`/api/v1/robots/robot$<project>+…`), granting at most the actions the manager holds",
        _ADMIN,
    ),
    Permission(
        "manage-policies", "manage policies",
        "`PATCH /api/v1/projects/{project}` (visibility); tag rules; security policy, allowlist and trusted keys; "
        "retention policies (`/api/v1/projects/{project}/retention-policies`, which also lists them); "
        "overriding an immutable tag (`override_reason`)",
        _ADMIN,
    ),
    Permission(
        "manage-webhooks", "manage webhooks",
        "`/api/v1/projects/{project}/webhooks` (list, create, change, delete, ping, rotate-secret, deliveries, "
        "redeliver); system-wide hooks (`/api/v1/system/webhooks`) are for system admins only",
        _ADMIN,
    ),
    Permission(
        "read-audit", "read audit log",
        "`GET /api/v1/audit?project={project}`; the change feed, `GET /api/v1/events?project={project}` "
        "and `GET /api/v1/events/stream?project={project}`",
        _ADMIN, system_admin="✓ (also across projects)",
    ),
)

BY_ACTION: dict[str, Permission] = {p.action: p for p in MATRIX}
ALL_PROJECT_ACTIONS: frozenset[str] = frozenset(BY_ACTION)
ROLE_ACTIONS: dict[str, frozenset[str]] = {role: frozenset(p.action for p in MATRIX if role in p.roles) for role in ROLES}
ROBOT_ACTIONS: frozenset[str] = frozenset(p.action for p in MATRIX if p.robot)
# Every client checks what exists (HEAD manifest/blob) before it pushes, so a push-only robot would be
# useless: its grant implies pull, as Harbor's and ECR's do. Applied when access is checked, so robots
# created push-only before this rule work too.
ROBOT_IMPLIES: dict[str, frozenset[str]] = {p.action: frozenset(p.robot_implies) for p in MATRIX if p.robot}


def robot_grants(actions) -> frozenset[str]:
    """A robot's effective actions: what it was granted, plus what those imply."""
    granted = {a for a in actions if a in ROBOT_ACTIONS}
    for action in list(granted):
        granted |= ROBOT_IMPLIES[action]
    return frozenset(granted)
PUBLIC_ACTIONS: frozenset[str] = frozenset(p.action for p in MATRIX if p.public)
ANONYMOUS_PUBLIC_ACTIONS: frozenset[str] = frozenset(p.action for p in MATRIX if p.anonymous)

# -- rendering for docs/access.md ------------------------------------------------------------------

BEGIN = "<!-- BEGIN access matrix: generated from src/dockyard/policy/access_matrix.py; run `python -m dockyard.policy.access_matrix` -->"
END = "<!-- END access matrix -->"
_COLUMNS = ("guest", "developer", "maintainer", "admin")


def render_markdown() -> str:
    """The matrix as the Markdown table docs/access.md shows."""
    lines = [
        "| action | where | guest | developer | maintainer | admin (project) | system admin | non-member | anonymous | robot |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in MATRIX:
        implied_by = [q.action for q in MATRIX if p.action in q.robot_implies]
        robot = "if granted" + "".join(f" (or `{a}`, which implies it)" for a in implied_by)
        cells = ["✓" if role in p.roles else "—" for role in _COLUMNS]
        lines.append(
            f"| {p.label} (`{p.action}`) | {p.where} | " + " | ".join(cells) + f" | {p.system_admin} | "
            f"{'public projects only' if p.public else '—'} | "
            f"{'public projects only (`/v2`)' if p.anonymous else '—'} | "
            f"{robot + (', or public project' if p.public else '') if p.robot else ('public projects only' if p.public else '—')} |"
        )
    return "\n".join(lines)


def render_block() -> str:
    return f"{BEGIN}\n{render_markdown()}\n{END}"


def replace_block(document: str) -> str:
    """`document` with the generated block replaced (the markers must be present)."""
    start, end = document.index(BEGIN), document.index(END) + len(END)
    return document[:start] + render_block() + document[end:]


def main(argv: list[str]) -> int:
    """Rewrite the matrix block of docs/access.md (default path: next to the source tree)."""
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[3] / "docs" / "access.md"
    text = path.read_text()
    path.write_text(replace_block(text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
