"""`dockyard tag-rules …`: immutable, deny and require tag rules on a running registry (a client of /api/v1).

Connection options come before the subcommand, as for `dockyard webhooks …`. `--project P` acts on a
project's rules; without it, on the system-wide rules (registry administrators). `test` is a dry run:
which rules match a tag, and whether a push, an overwrite and a delete would be allowed.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from dockyard.cli.options import JsonOpt, YesOpt
from dockyard.cli.remote import confirm, err, out, remote, remote_group, seg, show
from dockyard.safe_text import one_line

PUSH_REFUSED_EXIT = 3  # not 1 (an error: bad rule text, no access) nor 2 (bad usage)

tag_rules = remote_group("tag-rules", "Tag rules: list, create, delete, test.")

Kind = Enum("Kind", {k: k for k in ("immutable", "deny", "require")}, type=str)
ProjectOpt = Annotated[Optional[str], typer.Option("--project", help="The project's rules; omit for system-wide rules.")]
RULE_COLUMNS = ["id", "project", "kind", "repository_pattern", "tag_pattern", "description", "created_by"]
MATCH_COLUMNS = ["id", "project", "kind", "repository_pattern", "tag_pattern", "matches"]


def _path(project: str | None, tail: str = "") -> str:
    return ("/system/tag-rules" if project is None else f"/projects/{seg(project)}/tag-rules") + tail


@tag_rules.command("list")
def tag_rules_list(ctx: typer.Context, project: ProjectOpt = None, json_output: JsonOpt = False) -> None:
    """List a project's tag rules, or the system-wide ones."""
    show(ctx, remote(ctx).call("GET", _path(project)).json(), RULE_COLUMNS, json_output)


@tag_rules.command("create")
def tag_rules_create(
    ctx: typer.Context,
    kind: Annotated[Kind, typer.Argument(help="immutable, deny or require.")],
    tag_pattern: Annotated[str, typer.Argument(help="A glob (v*, release-*), or re: and a full-match regex (re:v[0-9]+).")],
    project: ProjectOpt = None,
    repository: Annotated[str, typer.Option("--repository", help="Repository glob (inside the project for project rules).")] = "**",
    description: Annotated[Optional[str], typer.Option("--description", help="Why the rule exists.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Create a tag rule."""
    body = {"kind": kind.value, "tag_pattern": tag_pattern, "repository_pattern": repository, "description": description}
    show(ctx, remote(ctx).call("POST", _path(project), json=body).json(), RULE_COLUMNS, json_output)


@tag_rules.command("delete")
def tag_rules_delete(ctx: typer.Context, rule_id: int, project: ProjectOpt = None, yes: YesOpt = False) -> None:
    """Delete a tag rule."""
    confirm(f"delete tag rule {rule_id}", yes)
    remote(ctx).call("DELETE", _path(project, f"/{rule_id}"))
    err.print(f"deleted tag rule {rule_id}")


@tag_rules.command("test")
def tag_rules_test(
    ctx: typer.Context,
    project: str,
    repository: Annotated[str, typer.Argument(help="The repository inside the project (app for team/app).")],
    tag: str,
    exit_code: Annotated[bool, typer.Option(
        "--exit-code", help=f"Exit {PUSH_REFUSED_EXIT} when a push of TAG would be refused (for scripts).")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Dry run: which rules (project and system) match TAG in PROJECT/REPOSITORY, and what a push would do.
    Exits 0 whatever the verdicts; with --exit-code, 3 when the push would be refused (1 stays an error)."""
    data = remote(ctx).call("POST", _path(project, "/test"), json={"repository": repository, "tag": tag}).json()
    _print_test(ctx, data, json_output)
    if exit_code and not data["push"]["allowed"]:
        raise typer.Exit(PUSH_REFUSED_EXIT)


def _print_test(ctx: typer.Context, data: dict, json_output: bool) -> None:
    if json_output or remote(ctx).json:
        show(ctx, data, [], True)
        return
    rows = [{**m["rule"], "matches": m["matches"]} for m in data["rules"]]
    if rows:
        show(ctx, rows, MATCH_COLUMNS, False, title=f"rules for {data['repository']}")
    else:
        out.print(one_line(f"no rules apply to {data['repository']}"), markup=False, highlight=False)
    for operation in ("push", "overwrite", "delete"):
        verdict = data[operation]
        line = "allowed" if verdict["allowed"] else f"refused: {verdict['reason']}"
        # one line each: a reason quotes rule text a project admin wrote; a newline in it must not forge a verdict
        out.print(one_line(f"{operation}: {line}"), markup=False, highlight=False)


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.add_typer(tag_rules, name="tag-rules")
