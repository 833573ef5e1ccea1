"""`dockyard promote SRC DEST`: promote an image through the management API (POST /api/v1/promotions).

A remote client like `dockyard admin …`: the registry links blobs and copies manifest rows; nothing is
downloaded or uploaded by the CLI.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dockyard.cli.options import JsonOpt, PassOpt, PassStdinOpt, PlainHttpOpt, UrlOpt, UserOpt
from dockyard.cli.remote import connect, fail, out


def split_destination(dest_ref: str) -> tuple[str, str | None]:
    """`proj/repo` or `proj/repo:tag` → (repository, tag or None). A digest makes no sense as a destination."""
    if "@" in dest_ref:
        fail("the destination is a repository, optionally with :tag, not a digest", 2)
    name, sep, tag = dest_ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return dest_ref, None


def promote(
    src_ref: Annotated[str, typer.Argument(help="Source: project/repo:tag or project/repo@sha256:….")],
    dest_ref: Annotated[str, typer.Argument(help="Destination repository, optionally with :tag (e.g. prod/app:1.2.0).")],
    tag: Annotated[Optional[list[str]], typer.Option("--tag", "-t", help="Another destination tag (repeatable).")] = None,
    referrers: Annotated[bool, typer.Option("--referrers", help="Bring signatures, SBOMs and other referrers along.")] = False,
    override_reason: Annotated[
        Optional[str], typer.Option("--override-reason", help="Project admins: move immutable tags anyway, for this reason (audited).")
    ] = None,
    url: UrlOpt = None,
    username: UserOpt = None,
    password: PassOpt = None,
    password_stdin: PassStdinOpt = False,
    plain_http: PlainHttpOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Promote an image to other tags, another repository or another project, without copying blob bytes."""
    remote = connect(url, username, password, password_stdin, plain_http, json_output)
    destination, dest_tag = split_destination(dest_ref)
    tags = list(dict.fromkeys(([dest_tag] if dest_tag else []) + list(tag or [])))
    body = {"source": src_ref, "destination": destination, "tags": tags, "include_referrers": referrers}
    if override_reason is not None:
        body["override_reason"] = override_reason
    data = remote.call("POST", "/promotions", json=body).json()
    if json_output:
        out.print_json(data=data)
        return
    moved = ", ".join(f"{t['tag']}" + (f" (was {t['previous']})" if t["previous"] else "") for t in data["tags"]) or "no tags"
    out.print(
        f"promoted {data['source_repository']}@{data['source_digest']} to {data['destination']}: {moved}; "
        f"{len(data['copied'])} manifests copied ({len(data['referrers'])} referrers), "
        f"{data['blobs_linked']} blobs linked, 0 bytes copied",
        highlight=False,
        markup=False,
    )


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.command("promote")(promote)
