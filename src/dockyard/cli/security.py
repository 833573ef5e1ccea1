"""`dockyard security …` and `dockyard scan`: the supply-chain security API from the command line.

Remote clients of /api/v1 like `dockyard admin …` (the same `Remote` client, error lines and exit
codes; see docs/security.md for what the policy fields mean):

- `dockyard security show|set|allow|disallow|allowlist|trust-key|untrust-key|keys`: a project's
  security policy, CVE allowlist and trusted signing keys. Connection options come before the
  subcommand, as for the other groups (`dockyard security -r registry.example.com show prod`).
- `dockyard scan REF [--wait] [--report-only]`: request a scan of an image or index, follow it with
  a spinner, and print the verdict with its findings.

Without `--username`, both use the credentials saved by `dockyard login` (or docker's config.json)
for the registry (dockyard.cli.remote.connect).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from dockyard.cli.options import JsonOpt, PassOpt, PassStdinOpt, PlainHttpOpt, UrlOpt, UserOpt
from dockyard.cli.remote import connect, err, fail, out, remote, remote_group, seg, show
from dockyard.policy.security_policy import SEVERITIES, THRESHOLDS, UNSCANNED_POLICIES, display_id, severity_rank

SEVERITY_ORDER = tuple(reversed(SEVERITIES))  # worst first, as the scan reports spell them
SEVERITY_STYLE = {"Critical": "bold red", "High": "red", "Medium": "yellow", "Low": "cyan"}
POLL_SECONDS = 0.5

POLICY_FIELDS = [
    "auto_scan",
    "scanner",
    "block_severity",
    "unscanned",
    "unscanned_wait_seconds",
    "require_signature",
    "promotion_max_severity",
    "promotion_require_signature",
]
ALLOW_COLUMNS = ["vulnerability", "active", "expires_at", "reason", "created_by", "created_at"]
KEY_COLUMNS = ["name", "fingerprint", "created_by", "created_at"]


security = remote_group(
    "security", "A project's supply-chain security: policy, CVE allowlist, trusted keys (via /api/v1)."
)


def _policy_path(project: str, *rest: str) -> str:
    return "/".join([f"/projects/{seg(project)}/security", *(seg(r) for r in rest)])


def _show_policy(ctx: typer.Context, data: dict, json_output: bool) -> None:
    if json_output or remote(ctx).json:
        out.print_json(json.dumps(data, default=str))
        return
    table = Table("setting", "value", title=f"security policy of project {escape(data.get('project', ''))}")
    for name in POLICY_FIELDS:
        value = data.get(name)
        text = "none" if value is None else ("yes" if value is True else "no" if value is False else str(value))
        table.add_row(name, escape(text))
    out.print(table)


def _choice(option: str, value: str | None, allowed: tuple[str, ...], *, none: bool = False) -> Any:
    """Validate a word option case-insensitively; "none" → None where null is allowed."""
    word = value.strip().lower() if value is not None else None
    if none and word == "none":
        return None
    if word not in allowed:
        choices = ", ".join(allowed + (("none",) if none else ()))
        fail(f"{option} {value!r}: expected one of {choices}", 2)
    return word


@security.command("show")
def security_show(ctx: typer.Context, project: str, json_output: JsonOpt = False) -> None:
    """Show a project's security policy (members)."""
    _show_policy(ctx, remote(ctx).call("GET", _policy_path(project)).json(), json_output)


@security.command("set")
def security_set(
    ctx: typer.Context,
    project: str,
    auto_scan: Annotated[Optional[bool], typer.Option("--auto-scan/--no-auto-scan", help="Scan every pushed image.")] = None,
    scanner: Annotated[Optional[str], typer.Option("--scanner", help="builtin or a registered external scanner.")] = None,
    block_severity: Annotated[
        Optional[str], typer.Option("--block-severity", help="Pull gate: low, medium, high, critical, or none (off).")
    ] = None,
    unscanned: Annotated[Optional[str], typer.Option("--unscanned", help="With a pull gate, unscanned images: allow, block or wait.")] = None,
    wait_seconds: Annotated[Optional[int], typer.Option("--wait-seconds", help="For --unscanned wait: 1-600 seconds.")] = None,
    require_signature: Annotated[
        Optional[bool], typer.Option("--require-signature/--no-require-signature", help="Pull gate: a trusted cosign signature.")
    ] = None,
    promotion_max_severity: Annotated[
        Optional[str], typer.Option("--promotion-max-severity", help="Promotion gate: low, medium, high, critical, or none (off).")
    ] = None,
    promotion_require_signature: Annotated[
        Optional[bool],
        typer.Option("--promotion-require-signature/--no-promotion-require-signature", help="Promotion gate: a trusted signature."),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Change a project's security policy; only the options given change (manage-policies)."""
    body: dict[str, Any] = {}
    if auto_scan is not None:
        body["auto_scan"] = auto_scan
    if scanner is not None:
        body["scanner"] = scanner
    if block_severity is not None:
        body["block_severity"] = _choice("--block-severity", block_severity, THRESHOLDS, none=True)
    if unscanned is not None:
        body["unscanned"] = _choice("--unscanned", unscanned, UNSCANNED_POLICIES)
    if wait_seconds is not None:
        body["unscanned_wait_seconds"] = wait_seconds
    if require_signature is not None:
        body["require_signature"] = require_signature
    if promotion_max_severity is not None:
        body["promotion_max_severity"] = _choice("--promotion-max-severity", promotion_max_severity, THRESHOLDS, none=True)
    if promotion_require_signature is not None:
        body["promotion_require_signature"] = promotion_require_signature
    if not body:
        fail("nothing to change: give at least one option (see `dockyard security set --help`)", 2)
    _show_policy(ctx, remote(ctx).call("PATCH", _policy_path(project), json=body).json(), json_output)


def _expiry(text: str) -> str:
    """`2027-01-31` (midnight UTC) or an ISO 8601 datetime (UTC unless it names a zone)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"--expires {text!r}: expected a date (2027-01-31) or an ISO 8601 datetime (2027-01-31T12:00:00Z)", 2)
    # Sent in UTC: the server keeps the wall-clock time and SQLite drops the offset.
    return (when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)).isoformat()


@security.command("allow")
def security_allow(
    ctx: typer.Context,
    project: str,
    vuln_id: Annotated[str, typer.Argument(metavar="VULN_ID", help="CVE-…, GHSA-…, DSA-… (an advisory id or alias).")],
    expires: Annotated[
        Optional[str], typer.Option("--expires", help="Ignore the entry from then on: a date (midnight UTC) or an ISO datetime.")
    ] = None,
    reason: Annotated[Optional[str], typer.Option("--reason", help="Why it is acceptable (kept with the entry).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Allowlist a vulnerability in a project (manage-policies)."""
    body = {"expires_at": _expiry(expires) if expires is not None else None, "reason": reason}
    data = remote(ctx).call("PUT", _policy_path(project, "allowlist", vuln_id), json=body).json()
    show(ctx, data, ALLOW_COLUMNS, json_output)


@security.command("disallow")
def security_disallow(
    ctx: typer.Context, project: str, vuln_id: Annotated[str, typer.Argument(metavar="VULN_ID")]
) -> None:
    """Remove a vulnerability from a project's allowlist (manage-policies)."""
    remote(ctx).call("DELETE", _policy_path(project, "allowlist", vuln_id))
    err.print(f"removed {escape(vuln_id)} from the allowlist of project {escape(project)}", highlight=False)


@security.command("allowlist")
def security_allowlist(ctx: typer.Context, project: str, json_output: JsonOpt = False) -> None:
    """List a project's CVE allowlist; expired entries show active = no (members)."""
    show(ctx, remote(ctx).call("GET", _policy_path(project, "allowlist")).json(), ALLOW_COLUMNS, json_output)


@security.command("trust-key")
def security_trust_key(
    ctx: typer.Context,
    project: str,
    name: str,
    key: Annotated[Path, typer.Option("--key", help="PEM public key file, e.g. cosign.pub.")],
    json_output: JsonOpt = False,
) -> None:
    """Trust a cosign public key for the project's signature gates (manage-policies)."""
    from dockyard.signing.cosign_keys import KeyFileError, load_public_key

    try:
        pem = key.read_bytes()
    except OSError as exc:
        fail(f"cannot read {key}: {exc.strerror}", 2)
    try:
        load_public_key(pem)  # a clear local message for a wrong file (a private key, a certificate, …)
        text = pem.decode("ascii")
    except (KeyFileError, UnicodeDecodeError) as exc:
        fail(f"{key}: {exc}", 2)
    data = remote(ctx).call("POST", _policy_path(project, "trusted-keys"), json={"name": name, "public_key": text}).json()
    show(ctx, data, KEY_COLUMNS, json_output)


@security.command("untrust-key")
def security_untrust_key(ctx: typer.Context, project: str, name: str) -> None:
    """Stop trusting a key (manage-policies)."""
    remote(ctx).call("DELETE", _policy_path(project, "trusted-keys", name))
    err.print(f"project {escape(project)} no longer trusts key {escape(name)}", highlight=False)


@security.command("keys")
def security_keys(ctx: typer.Context, project: str, json_output: JsonOpt = False) -> None:
    """List a project's trusted keys with their fingerprints (members)."""
    show(ctx, remote(ctx).call("GET", _policy_path(project, "trusted-keys")).json(), KEY_COLUMNS, json_output)


# -- dockyard scan ----------------------------------------------------------------------------------


def split_image_ref(ref: str) -> tuple[str | None, str, str]:
    """`host[:port]/project/repo[:tag|@digest]` or `project/repo[:tag|@digest]` → (host or None,
    repository, tag or digest). The first component is a host when it has a `.` or `:` or is
    `localhost`, as docker decides; without tag or digest the reference is `latest`."""
    text = ref.strip()
    first, slash, _ = text.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        from dockyard.signing.registry import parse_reference

        try:
            parsed = parse_reference(text)
        except ValueError as exc:
            fail(str(exc), 2)
        return parsed.registry, parsed.repository, parsed.reference
    name, at, digest = text.partition("@")
    if at:
        reference = digest
    else:
        base, sep, tag = text.rpartition(":")
        name, reference = (base, tag) if sep and "/" not in tag else (text, "latest")
    if "/" not in name or not reference or name.startswith("/") or name.endswith("/"):
        fail(f"invalid image reference {ref!r} (expected [host[:port]/]project/repository[:tag|@sha256:…])", 2)
    return None, name, reference


def _short(digest: str | None) -> str:
    if not digest:
        return ""
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:12]}" if hex_part else digest[:19]


def _summary_text(summary: dict[str, int]) -> str:
    counts = [(s, summary.get(s, 0)) for s in SEVERITY_ORDER if summary.get(s, 0)]
    counts += [(s, n) for s, n in summary.items() if s not in SEVERITY_ORDER and n]
    return ", ".join(f"{n} {s}" for s, n in counts) or "no known vulnerabilities"


def print_scan_status(label: str, status: dict) -> None:
    """The verdict line(s) and a findings table, worst first."""
    digest = status["digest"]
    if not status["scannable"]:
        out.print(f"{escape(label)} ({digest}) is not a container image ({status['kind']}): nothing to scan", highlight=False)
        return
    images = status["images"]
    reports = [(e["digest"], e["report"]) for e in images if e.get("report")]
    ok = [(d, r) for d, r in reports if r.get("status") == "ok"]
    kind = status["kind"] if len(images) == 1 else f"{status['kind']} of {len(images)} images"
    if status["scanned"]:
        packages = sum(r.get("package_count") or 0 for _, r in ok)
        line = (f"{escape(label)} ({_short(digest)}, {kind}) scanned by {escape(status['scanner'])}: "
                f"[bold]{escape(_summary_text(status['summary']))}[/bold] in {packages} package(s)")
        dbs = sorted({str(r["vulndb_updated_at"]) for _, r in ok if r.get("vulndb_updated_at")})
        if dbs:
            line += f"; vulnerability database of {escape(dbs[-1])}"
        out.print(line, highlight=False)
    else:
        missing = len(images) - len(ok)
        out.print(f"{escape(label)} ({_short(digest)}, {kind}): no verdict yet ({missing} of {len(images)} image(s) "
                  f"without a successful scan)", highlight=False)
    for image, report in reports:
        if report.get("status") != "ok":
            out.print(f"  scan of {_short(image)} failed: {escape(str(report.get('error') or 'unknown error'))}", highlight=False)
    _print_gaps(ok, status.get("incomplete_policy") or "block")
    if status["in_progress"]:
        out.print("a scan is in progress; the verdict above stays in force until it completes", highlight=False)
    rows = [(image, f) for image, report in ok for f in report.get("findings") or []]
    if not rows:
        return
    rows.sort(key=lambda row: (-severity_rank(row[1].get("severity") or ""), display_id(row[1]), row[1].get("package") or "", row[0]))
    several = len(ok) > 1
    table = Table(title="findings")
    table.add_column("severity", no_wrap=True)
    table.add_column("id", no_wrap=True)
    table.add_column("package", overflow="fold")
    table.add_column("installed", overflow="fold")
    table.add_column("fixed", overflow="fold")
    table.add_column("layer", no_wrap=True)
    if several:
        table.add_column("image", no_wrap=True)
    for image, f in rows:
        severity = f.get("severity") or "Unknown"
        style = SEVERITY_STYLE.get(severity, "dim")
        cells = [f"[{style}]{escape(severity)}[/{style}]", escape(display_id(f)), escape(f.get("package") or ""),
                 escape(f.get("installed_version") or ""), escape(f.get("fixed_version") or "no fix"), _short(f.get("layer"))]
        if several:
            cells.append(_short(image))
        table.add_row(*cells)
    out.print(table)


MAX_LISTED_ERRORS = 10


def _print_gaps(ok: list[tuple[str, dict]], policy: str) -> None:
    """What each report could not evaluate (the verdict may miss findings there), and the
    ecosystems it could not match at all. Package names and versions come from the image: the
    console escapes their control characters (dockyard.safe_text)."""
    for image, report in ok:
        count = report.get("match_error_count") or 0
        if count:
            effect = "the gates treat it as unscanned" if policy == "block" else "its findings may be missing some"
            out.print(f"[yellow]  scan of {_short(image)} is incomplete:[/yellow] {count} package(s) or advisories could not "
                      f"be evaluated ({effect}; scan_incomplete_policy {escape(policy)})", highlight=False)
            for line in (report.get("match_errors") or [])[:MAX_LISTED_ERRORS]:
                out.print(f"    {escape(str(line))}", highlight=False)
            if count > MAX_LISTED_ERRORS:
                out.print(f"    … and {count - MAX_LISTED_ERRORS} more (see --json)", highlight=False)
        if report.get("unsupported"):
            out.print(f"  {_short(image)}: not matched (no version ordering for these ecosystems): "
                      f"{escape(', '.join(map(str, report['unsupported'])))}", highlight=False)


def scan(
    ref: Annotated[str, typer.Argument(metavar="REF", help="[host[:port]/]project/repository[:tag|@sha256:…]")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow the scan until it completes, then print the verdict.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="With --wait: give up after this many seconds.")] = 300,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Print the current verdict; do not request a scan.")
    ] = False,
    registry: UrlOpt = None,
    username: UserOpt = None,
    password: PassOpt = None,
    password_stdin: PassStdinOpt = False,
    plain_http: PlainHttpOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Scan an image or index now (push permission); with --wait follow it and print the findings.
    Exits 0 when the artifact has a verdict, 1 on errors, a failed scan or a timeout."""
    if report_only and wait:
        fail("--report-only prints the current verdict; it does not combine with --wait", 2)
    host, repository, reference = split_image_ref(ref)
    client = connect(host or registry, username, password, password_stdin, plain_http, json_output)
    path = f"/repositories/{repository}/artifacts/{seg(reference)}/scan"
    label = f"{repository}{'@' if reference.startswith('sha256:') else ':'}{reference}"

    if report_only:
        status = client.call("GET", path).json()
        _finish(label, status, json_output)
        return

    # Reports in force before the request: a rescan that fails keeps them (the last verdict stays in force).
    before = _report_times(client.call("GET", path).json()) if wait else {}
    job = client.call("POST", path).json()
    if not wait:
        if json_output:
            out.print_json(json.dumps(job))
        else:
            err.print(f"scan of {escape(label)} queued (job {job['job_id']}); follow it with `dockyard scan --wait` "
                      f"or read the verdict with `dockyard scan --report-only`", highlight=False)
        return
    if not json_output:  # stdout stays the verdict's; the job id is for the human (and the log) on stderr
        err.print(f"scan of {escape(label)} queued (job {job['job_id']}); waiting for its verdict", highlight=False)

    deadline = time.monotonic() + timeout
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True,
                        disable=not err.is_terminal)
    with progress:
        task = progress.add_task(f"scanning {escape(label)} (job {job['job_id']}): queued", total=None)
        while True:
            status = client.call("GET", path).json()
            if not status["in_progress"]:
                break
            if time.monotonic() > deadline:
                progress.stop()
                fail(f"gave up after {timeout:g} s: the scan of {label} (job {job['job_id']}) is still in progress; "
                     f"read the verdict later with `dockyard scan --report-only {ref}`")
            done = sum(1 for e in status["images"] if not e["in_progress"] and e.get("report"))
            progress.update(task, description=f"scanning {escape(label)} (job {job['job_id']}): "
                                              f"{done} of {len(status['images'])} image(s) done")
            time.sleep(POLL_SECONDS)
    for image, generated_at in _report_times(status).items():
        if generated_at is not None and before.get(image) == generated_at:
            err.print(f"[yellow]warning:[/yellow] no new report for {_short(image)} (the scan failed or reused the existing "
                      f"report); the verdict shown is from {escape(str(generated_at))}", highlight=False)
    _finish(label, status, json_output)


def _report_times(status: dict) -> dict[str, Any]:
    return {e["digest"]: (e.get("report") or {}).get("generated_at") for e in status["images"]}


def _finish(label: str, status: dict, json_output: bool) -> None:
    if json_output:
        out.print_json(json.dumps(status, default=str))
    else:
        print_scan_status(label, status)
    if status["scanned"] and status.get("incomplete") and status.get("incomplete_policy", "block") == "block":
        fail(f"the scan of {label} is incomplete: some packages could not be evaluated, and the registry's gates "
             f"treat it as no verdict (scan_incomplete_policy block)")
    if not status["scanned"]:
        if not status["scannable"]:
            fail(f"{label} is not a container image ({status['kind']}): it has no scan verdict")
        errors = [e["report"]["error"] for e in status["images"] if e.get("report") and e["report"].get("error")]
        if errors:
            fail(f"the scan of {label} failed: {errors[0]}")
        fail(f"{label} has no scan verdict yet" + (" (a scan is in progress)" if status["in_progress"] else ""))


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.add_typer(security, name="security")
    app.command("scan")(scan)
