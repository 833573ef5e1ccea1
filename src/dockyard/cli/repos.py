"""`dockyard repos ls|delete` and `dockyard tags ls|delete|retag`: repositories and tags on a
running registry, through /api/v1/repositories (paged and sorted by the server).

Connection options come before or after the subcommand (cli/remote.py). Deleting asks for
confirmation unless --yes. Immutable tags are only deleted or moved with a break-glass reason,
which the server audits and allows to project admins only.
"""

from __future__ import annotations

from typing import Annotated, Optional
from urllib.parse import quote

import typer

from dockyard.cli.options import JsonOpt, PageOpt, PageSizeOpt, YesOpt
from dockyard.cli.remote import confirm, err, fail, remote, remote_group, seg, show

REPO_COLUMNS = ["name", "tag_count", "size", "last_push", "last_pull"]
TAG_COLUMNS = ["name", "digest", "platforms", "size", "updated_at", "last_pulled_at", "scan_verdict", "signed"]
# Table headers for the API's field names (--json keeps the field names): the words docs and --sort use.
TAG_HEADERS = {"updated_at": "pushed", "last_pulled_at": "last pulled"}

ReasonOpt = Annotated[Optional[str], typer.Option(
    "--break-glass-reason", help="Delete or move immutable tags anyway, for this reason (project admins; audited).")]


def path_of(repository: str) -> str:
    """The repository name as URL path segments (slashes stay separators)."""
    return quote(repository, safe="/")


def _check_sort(sort: str, kind: str) -> str:
    """Refuse an unknown --sort before the request (exit 2, bad usage), from the server's own list."""
    from dockyard.domain.repository_listings import REPOSITORY_SORTS, TAG_SORTS

    allowed = REPOSITORY_SORTS if kind == "repositories" else TAG_SORTS
    if sort.removeprefix("-") not in allowed:
        fail(f"--sort {sort!r}: expected one of {', '.join(allowed)} (prefix - for descending)", 2)
    return sort


def _human(rows: list[dict], *keys: str) -> list[dict]:
    from dockyard.domain.quotas import human_bytes

    return [{**row, **{k: human_bytes(row[k]) for k in keys if isinstance(row.get(k), int)}} for row in rows]


# -- repos --------------------------------------------------------------------------------------

repos = remote_group("repos", "Repositories on a running registry: list with sizes and activity, delete (via /api/v1).")


@repos.command("ls")
def repos_ls(
    ctx: typer.Context,
    project: Annotated[Optional[str], typer.Argument(help="Only this project's repositories.")] = None,
    sort: Annotated[str, typer.Option(help="name, tags, size, last_push or last_pull; prefix - for descending.")] = "name",
    page: PageOpt = None,
    page_size: PageSizeOpt = 50,
    json_output: JsonOpt = False,
) -> None:
    """List repositories you can see: tag count, total size, last push, last pull."""
    params = {"sort": _check_sort(sort, "repositories"), **({"project": project} if project else {})}
    rows = remote(ctx).listing("/repositories", page, page_size, params)
    json_mode = json_output or remote(ctx).json
    show(ctx, rows if json_mode else _human(rows, "size"), REPO_COLUMNS, json_output)


@repos.command("delete")
def repos_delete(
    ctx: typer.Context,
    repository: str,
    force: Annotated[bool, typer.Option("--force", help="Delete it even though it holds tags (without: refused).")] = False,
    reason: ReasonOpt = None,
    yes: YesOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Delete a repository with its manifests, tags and referrers (delete permission); blobs go to GC."""
    confirm(f"delete repository {repository}{' and every tag in it' if force else ''}", yes)
    params: dict = {"force": "true" if force else "false"}
    if reason is not None:
        params["override_reason"] = reason
    data = remote(ctx).call("DELETE", f"/repositories/{path_of(repository)}", params=params).json()
    if json_output or remote(ctx).json:
        show(ctx, data, [], True)
        return
    extra = f"; immutable tags deleted under break glass: {', '.join(data['overridden'])}" if data["overridden"] else ""
    err.print(f"deleted repository {repository}: {data['manifests']} manifests, {data['tags']} tags{extra}", markup=False)


# -- tags ---------------------------------------------------------------------------------------

tags = remote_group("tags", "Tags of a repository: list with what each image is, delete, retag (via /api/v1).")


@tags.command("ls")
def tags_ls(
    ctx: typer.Context,
    repository: str,
    sort: Annotated[str, typer.Option(help="name, pushed or last_pull; prefix - for descending.")] = "name",
    page: PageOpt = None,
    page_size: PageSizeOpt = 50,
    json_output: JsonOpt = False,
) -> None:
    """List tags: digest, platforms, size, pushed, last pulled, scan verdict, signed."""
    rows = remote(ctx).listing(f"/repositories/{path_of(repository)}/tags", page, page_size, {"sort": _check_sort(sort, "tags")})
    if json_output or remote(ctx).json:
        show(ctx, rows, TAG_COLUMNS, json_output)
        return
    human = [{TAG_HEADERS.get(k, k): v for k, v in row.items()} for row in _human(rows, "size")]
    show(ctx, human, [TAG_HEADERS.get(c, c) for c in TAG_COLUMNS], json_output)


@tags.command("delete")
def tags_delete(
    ctx: typer.Context, repository: str, tag: str, reason: ReasonOpt = None, yes: YesOpt = False, json_output: JsonOpt = False,
) -> None:
    """Delete a tag (the manifest stays, pullable by digest)."""
    confirm(f"delete tag {repository}:{tag}", yes)
    params = {"override_reason": reason} if reason is not None else None
    remote(ctx).call("DELETE", f"/repositories/{path_of(repository)}/tags/{seg(tag)}", params=params)
    if json_output or remote(ctx).json:
        show(ctx, {"repository": repository, "tag": tag, "deleted": True}, [], True)
        return
    err.print(f"deleted tag {repository}:{tag}", markup=False)


@tags.command("retag")
def tags_retag(
    ctx: typer.Context, repository: str, source: str, new_tag: str, reason: ReasonOpt = None, json_output: JsonOpt = False,
) -> None:
    """Point NEW_TAG at the manifest SOURCE (a tag or a digest) points at, in the same repository."""
    client = remote(ctx)
    digest = source
    if not source.startswith("sha256:"):
        found = client.get_all(f"/repositories/{path_of(repository)}/tags")
        digest = next((t["digest"] for t in found if t["name"] == source), None)
        if digest is None:
            fail(f"tag {source} is not in repository {repository}")
    body: dict = {"digest": digest}
    if reason is not None:
        body["override_reason"] = reason
    data = client.call("PUT", f"/repositories/{path_of(repository)}/tags/{seg(new_tag)}", json=body).json()
    if json_output or client.json:
        show(ctx, data, [], True)
        return
    moved = f" (was {data['previous']})" if data.get("previous") else ""
    err.print(f"{repository}:{new_tag} -> {digest}{moved}", markup=False)


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.add_typer(repos, name="repos")
    app.add_typer(tags, name="tags")
