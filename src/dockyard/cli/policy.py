"""`dockyard policy retention …`: retention policies through the management API (a remote client).

Connection options go at the end (or before the subcommand), as for `dockyard admin …`
(`dockyard policy retention --url https://registry.example.com -u alice list acme`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dockyard.cli.options import JsonOpt, YesOpt, group
from dockyard.cli.remote import confirm, err, fail, out, remote, remote_group, seg, show

policy = group("policy", "Policies on a running registry (via /api/v1).")
retention = remote_group("retention", "Retention policies: list, create, show, delete, dry-run, run (manage-policies).")
policy.add_typer(retention, name="retention")

POLICY_COLUMNS = ["id", "name", "repository_pattern", "format", "schedule", "enabled", "last_run_at"]
DECISION_COLUMNS = ["repository", "digest", "tags", "action", "reason"]


def _path(project: str, policy_id: int | None = None, action: str | None = None) -> str:
    path = f"/projects/{seg(project)}/retention-policies"
    if policy_id is not None:
        path += f"/{policy_id}"
    if action:
        path += f"/{action}"
    return path


def _read_document(file: Path) -> dict:
    try:
        text = file.read_text() if str(file) != "-" else typer.get_text_stream("stdin").read()
        return json.loads(text)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", 2)
    except ValueError as exc:
        fail(f"{file} is not valid JSON: {exc}", 2)
    raise AssertionError("unreachable")


def _show_report(ctx: typer.Context, report: dict, json_output: bool) -> None:
    if json_output or remote(ctx).json:
        out.print_json(json.dumps(report, default=str))
        return
    rows = [
        {"repository": repo["repository"], "digest": d["digest"][:19] + "…", "tags": d["tags"],
         "action": d.get("outcome") or d["action"], "reason": d["reason"]}
        for repo in report["repositories"] for d in repo["decisions"]
    ]
    show(ctx, rows, DECISION_COLUMNS, False)
    summary = report["summary"]
    err.print(", ".join(f"{k} {v}" for k, v in summary.items()))


@retention.command("list")
def retention_list(ctx: typer.Context, project: str, json_output: JsonOpt = False) -> None:
    """List a project's retention policies."""
    show(ctx, remote(ctx).get_all(_path(project)), POLICY_COLUMNS, json_output)


@retention.command("create")
def retention_create(
    ctx: typer.Context,
    project: str,
    name: str,
    file: Annotated[Path, typer.Option("--file", "-f", help="The policy JSON ({\"rules\": [...]}); - reads stdin.")],
    format: Annotated[str, typer.Option("--format", help="ecr (AWS lifecycle policy as is) or native.")] = "ecr",
    repository_pattern: Annotated[str, typer.Option("--repository-pattern", help="Glob over repositories in the project.")] = "**",
    schedule: Annotated[Optional[str], typer.Option("--schedule", help="Cron (UTC), e.g. '0 3 * * *'.")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it switched off.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Create a retention policy from a JSON file."""
    body = {"name": name, "format": format, "document": _read_document(file), "repository_pattern": repository_pattern,
            "schedule": schedule, "enabled": not disabled}
    show(ctx, remote(ctx).call("POST", _path(project), json=body).json(), POLICY_COLUMNS, json_output)


@retention.command("show")
def retention_show(ctx: typer.Context, project: str, policy_id: int, json_output: JsonOpt = False) -> None:
    """Show one policy, with its document."""
    data = remote(ctx).call("GET", _path(project, policy_id)).json()
    show(ctx, data, POLICY_COLUMNS + ["document"], json_output)


@retention.command("delete")
def retention_delete(ctx: typer.Context, project: str, policy_id: int, yes: YesOpt = False) -> None:
    """Delete a policy and its schedule (images are not touched)."""
    confirm(f"delete retention policy {policy_id} of {project}", yes)
    remote(ctx).call("DELETE", _path(project, policy_id))
    err.print(f"deleted retention policy {policy_id}")


@retention.command("dry-run")
def retention_dry_run(ctx: typer.Context, project: str, policy_id: int, json_output: JsonOpt = False) -> None:
    """Show every artifact's decision and the rule behind it; deletes nothing."""
    _show_report(ctx, remote(ctx).call("POST", _path(project, policy_id, "dry-run")).json(), json_output)


@retention.command("run")
def retention_run(
    ctx: typer.Context,
    project: str,
    policy_id: int,
    sync: Annotated[bool, typer.Option("--sync", help="Run in the request and print the report (default: queue a job).")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Run a policy now: queue a job (prints its id) or, with --sync, run and print what was deleted."""
    data = remote(ctx).call("POST", _path(project, policy_id, "run"), params={"sync": "true"} if sync else None).json()
    if data.get("report") is not None:
        _show_report(ctx, data["report"], json_output)
    elif json_output or remote(ctx).json:
        out.print_json(json.dumps(data))
    else:
        out.print(f"queued job {data['job_id']}")


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.add_typer(policy, name="policy")
