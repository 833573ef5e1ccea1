"""Rich tables of `dockyard admin …`: the identifier a follow-up command needs is printed whole."""

import io
from types import SimpleNamespace

from rich.console import Console

from dockyard.cli import remote
from dockyard.cli.token_keys import KEY_COLUMNS

KID = "s_e93wg1Yy2zWM3CxHj0BK1uGG2nWe9uoRrcYcmDQIQ"


def test_newcomer_keys_list_prints_whole_kid_and_status(monkeypatch):
    """On an 80-column terminal `dockyard admin keys list` printed `s_e93wg1…`, which `keys revoke` cannot use."""
    buffer = io.StringIO()
    monkeypatch.setattr(remote, "out", Console(file=buffer, width=80, force_terminal=False))
    ctx = SimpleNamespace(obj=SimpleNamespace(json=False))
    row = {"kid": KID, "algorithm": "ES256", "status": "retired", "created_at": "2026-12-07T14:54:01.058850Z",
           "retired_at": "2026-12-07T14:56:06.177116Z", "verifies_until": "2026-12-08T02:56:26.177116Z",
           "revoked_at": None}
    remote.show(ctx, [row], KEY_COLUMNS, json_output=False, whole=2)
    text = buffer.getvalue()
    assert KID in text
    assert "retired" in text


def test_newcomer_robot_list_prints_whole_robot_name(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(remote, "out", Console(file=buffer, width=80, force_terminal=False))
    ctx = SimpleNamespace(obj=SimpleNamespace(json=False))
    name = "robot$team+deploy-production-eu"
    row = {"name": name, "kind": "project", "permissions": [{"project": "team", "actions": ["pull", "push"]}],
           "disabled": False, "expires_at": None, "description": "x" * 40, "created_by": "admin"}
    remote.show(ctx, [row], ["name", "kind", "permissions", "disabled", "expires_at", "description", "created_by"], False)
    assert name in buffer.getvalue()


def test_newcomer_admin_command_without_credentials_says_where_options_go(monkeypatch):
    """`dockyard admin projects create team` without credentials printed only the server's "send Authorization:
    Basic …"; a CLI user needs to know where -u goes (at the end of the command), or DOCKYARD_USERNAME."""
    import httpx
    from typer.testing import CliRunner

    from dockyard.cli import app

    for name in ("DOCKYARD_USERNAME", "DOCKYARD_PASSWORD", "DOCKYARD_URL"):
        monkeypatch.delenv(name, raising=False)
    body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
    transport = httpx.MockTransport(lambda request: httpx.Response(401, json=body))
    monkeypatch.setattr(remote.Remote, "client", lambda self: httpx.Client(base_url="http://x/api/v1", transport=transport))
    result = CliRunner().invoke(app, ["admin", "projects", "list"])
    text = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "UNAUTHORIZED" in text and "at the end of the command" in text and "DOCKYARD_USERNAME" in text


def test_newcomer_confirmation_without_a_terminal_says_add_yes(monkeypatch):
    """`dockyard admin keys revoke KID` from a script printed only "Aborted."; it now says to add --yes."""
    import httpx
    from typer.testing import CliRunner

    from dockyard.cli import app

    calls = []
    transport = httpx.MockTransport(lambda request: calls.append(request) or httpx.Response(500))
    monkeypatch.setattr(remote.Remote, "client", lambda self: httpx.Client(base_url="http://x/api/v1", transport=transport))
    monkeypatch.setenv("DOCKYARD_USERNAME", "admin")
    monkeypatch.setenv("DOCKYARD_PASSWORD", "pw")
    result = CliRunner().invoke(app, ["admin", "keys", "revoke", KID], input="")
    assert result.exit_code == 2
    assert "add --yes" in " ".join(result.output.split())
    assert calls == []


def test_newcomer_tables_piped_to_a_program_are_whole_tab_separated_values(monkeypatch):
    """`dockyard admin robots list > robots.txt` cut every value to fit 80 columns (`robot$team+dep…`); output that
    is not a terminal (CliRunner's is not) is now TSV: a header line, then one line per row, every value whole."""
    import httpx
    from typer.testing import CliRunner

    from dockyard.cli import app

    description = "deploys the production cluster in eu-west-1 every night, " * 3
    robot = {"name": "robot$team+deploy-production-eu", "kind": "project", "project": "team",
             "permissions": [{"project": "team", "actions": ["pull", "push"]}], "disabled": False, "expires_at": None,
             "description": description + "\ttabbed", "created_at": "2026-12-07T14:54:01Z", "created_by": "admin"}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=[robot]))
    monkeypatch.setattr(remote.Remote, "client", lambda self: httpx.Client(base_url="http://x/api/v1", transport=transport))
    result = CliRunner().invoke(app, ["admin", "robots", "list", "-r", "127.0.0.1:5000"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["name", "kind", "permissions", "disabled", "expires_at", "description", "created_by"]
    assert lines[1].split("\t") == ["robot$team+deploy-production-eu", "project", "team: pull,push", "no", "",
                                    description + "\\x09tabbed", "admin"]
    assert len(lines) == 2


def test_newcomer_gc_report_piped_is_tab_separated(monkeypatch):
    import io

    from dockyard.cli import jobs
    from dockyard.safe_text import safe_console

    buffer = io.StringIO()
    monkeypatch.setattr(jobs, "out", safe_console(file=buffer, width=40))
    jobs.print_gc_result({"dry_run": True, "candidates": 3, "candidate_bytes": 2048, "seconds": 0.5}, as_json=False)
    assert buffer.getvalue().splitlines() == ["# garbage collection (dry run)", "measure\tvalue", "unreferenced blobs past grace\t3",
                                              "their bytes\t2 KiB", "seconds\t0.5"]


def test_newcomer_messages_redirected_to_a_file_are_not_wrapped_at_80_columns(tmp_path):
    """A message (an error with the command to run) stays on one line when stderr is a file."""
    from dockyard.safe_text import safe_console

    path = tmp_path / "err.txt"
    with path.open("w") as f:
        safe_console(file=f).print("error: " + "x" * 150 + " then run `dockyard security set PROJECT --unscanned block`")
    assert path.read_text().count("\n") == 1 and "dockyard security set PROJECT --unscanned block" in path.read_text()


def test_version_json():
    import json

    from typer.testing import CliRunner

    from dockyard import __version__
    from dockyard.cli import app

    result = CliRunner().invoke(app, ["version", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == {"version": __version__}
