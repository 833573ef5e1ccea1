"""Every remote command, found by walking the Typer app (a new command is covered without editing this file):

- with nothing but a `dockyard login` (no flag, no environment) it reaches the saved registry, authenticated;
- the connection options are accepted in the same place on every command: at the end, after the arguments;
- it takes `--json`, or it is listed in docs/cli.md as printing nothing on standard output (and prints nothing).

No network: httpx's transport is replaced by one that records each request and answers as the test says."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
import typer.main
from typer.testing import CliRunner

from dockyard.cli import app
from dockyard.client.credentials import CredentialStore, set_current_registry

HOST = "registry.example.com:5000"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
ERROR = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
# Commands that manage credentials themselves rather than use them.
NOT_CLIENTS = {"login"}


def _options(command) -> set[str]:
    return {opt for p in command.params if getattr(p, "param_type_name", "") == "option" for opt in (*p.opts, *p.secondary_opts)}


def _walk(command, path: tuple[str, ...], inherited: set[str]):
    mine = _options(command) | inherited
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _walk(sub, (*path, name), mine if path else set())
    else:
        yield path, command, inherited


def remote_commands() -> list[tuple[tuple[str, ...], object, set[str]]]:
    """(path, click command, options of its group): every command that takes `--username` (remote)."""
    root = typer.main.get_command(app)
    found = []
    for path, command, inherited in _walk(root, (), set()):
        if path[0] in NOT_CLIENTS:
            continue
        if "--username" in _options(command) | inherited:
            found.append((path, command, inherited))
    return found


REMOTE = remote_commands()
IDS = [" ".join(path) for path, _, _ in REMOTE]

# A value for each argument and required option, by parameter name.
VALUES = {
    "src_ref": "team/app:1", "dest_ref": "prod/app", "ref": "team/app:1", "image": "team/app:1",
    "name": "x", "project": "team", "username": "bob", "role": "developer", "kid": "k1", "policy_id": "1",
    "url": "https://hooks.example.com/x", "webhook_id": "1", "delivery_id": "1", "vuln_id": "CVE-2024-1",
    "job_id": "1", "tag": "1", "repository": "team/app", "scanner": "trivy", "kind": "immutable", "tag_pattern": "v*",
    "rule_id": "1", "source": "1", "new_tag": "2", "files": "all.zip",
}
# Options a command needs to get as far as its request (the rest of its input comes from prompts otherwise).
EXTRA = {
    ("admin", "users", "create"): ["--new-password", "new-password-1"],
    ("admin", "users", "set-password"): ["--new-password", "new-password-1"],
    ("admin", "robots", "create"): ["--project", "team"],
    ("admin", "robots", "update"): ["--action", "pull"],
    ("security", "set"): ["--block-severity", "critical", "--unscanned", "block"],
    ("quotas", "set"): ["--limit", "1GiB"],
}


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory) -> Path:
    """One cosign key pair for the module (generating one costs a scrypt run)."""
    where = tmp_path_factory.mktemp("keys")
    result = CliRunner(env={"COSIGN_PASSWORD": "key-password"}).invoke(
        app, ["generate-key-pair", "--output-key-prefix", str(where / "cosign")])
    assert result.exit_code == 0, result.output
    return where


@pytest.fixture
def world(tmp_path, monkeypatch, key_pair):
    """Records every request httpx sends; `answer` is the response (401 unless a test changes it)."""
    sent: list[httpx.Request] = []
    # A Basic challenge: /v2 clients (sign, verify) first ask anonymously, as docker does, then send credentials.
    state = {"answer": lambda request: httpx.Response(401, json=ERROR, headers={"WWW-Authenticate": 'Basic realm="x"'})}

    def handle(self, request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return state["answer"](request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", handle)
    for name in ("DOCKYARD_URL", "DOCKYARD_USERNAME", "DOCKYARD_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COSIGN_PASSWORD", "key-password")
    monkeypatch.chdir(tmp_path)
    for name in ("cosign.key", "cosign.pub"):
        (tmp_path / name).write_bytes((key_pair / name).read_bytes())
    (tmp_path / "policy.json").write_text('{"rules": []}')
    (tmp_path / "all.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip (vulndb import)
    return sent, state, tmp_path


def argv(path: tuple[str, ...], command, tmp: Path) -> list[str]:
    args = list(path)
    for param in command.params:
        if getattr(param, "param_type_name", "") == "argument" and param.required:
            args.append(VALUES[param.name])
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option" and param.required:
            value = {"key": "cosign.key" if path[-1] == "sign" else "cosign.pub", "file": "policy.json"}.get(param.name)
            args += [param.opts[0], value or VALUES[param.name]]
    if "--yes" in _options(command):
        args.append("--yes")
    if path[0] == "gc":
        args.append("--no-wait")
    return args + EXTRA.get(path, [])


def authenticated(sent: list[httpx.Request], path) -> set[str]:
    """The credentials the requests carried; /api/v1 clients send them on every request."""
    assert sent, f"{' '.join(path)} sent nothing"
    if path[0] not in ("sign", "verify"):
        assert all("authorization" in r.headers for r in sent), [r.url for r in sent]
    return {r.headers["authorization"] for r in sent if "authorization" in r.headers}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_walk_finds_the_remote_commands():
    names = set(IDS)
    assert {"gc", "promote", "scan", "sign", "verify", "get-login-password", "admin projects list", "admin keys revoke",
            "admin audit list", "events tail", "policy retention list", "security show", "webhooks list"} <= names
    assert not {"serve", "worker", "admin gc", "admin migrate", "vulndb status", "login"} & names


@pytest.mark.parametrize(("path", "command", "inherited"), REMOTE, ids=IDS)
def test_a_saved_login_is_all_every_remote_command_needs(world, path, command, inherited):
    """Only `dockyard login`: no -r, no -u, no environment. The command reaches the registry logged in to last,
    with its saved credentials."""
    sent, _, tmp = world
    CredentialStore().put(HOST, "alice", "alice-secret")
    set_current_registry(f"https://{HOST}")
    result = CliRunner().invoke(app, argv(path, command, tmp))
    assert authenticated(sent, path) == {basic("alice", "alice-secret")}, result.output
    for request in sent:
        assert (request.url.scheme, request.url.netloc.decode()) == ("https", HOST), (path, request.url)
    assert result.exit_code == 1, result.output


@pytest.mark.parametrize(("path", "command", "inherited"), REMOTE, ids=IDS)
def test_connection_options_go_at_the_end_of_every_remote_command(world, path, command, inherited):
    """`-u/-p` (and `-r`, except where the image reference names the registry) after the arguments, everywhere;
    flags beat both the saved login and the current registry."""
    sent, _, tmp = world
    CredentialStore().put("elsewhere.example.com", "alice", "alice-secret")
    set_current_registry("https://elsewhere.example.com")
    takes_url = "--url" in _options(command) | inherited
    tail = (["-r", HOST] if takes_url else []) + ["-u", "bob", "-p", "bob-secret"]
    args = argv(path, command, tmp)
    if not takes_url:  # sign, verify: the image reference names its registry
        args = [f"{HOST}/{a}" if a == VALUES["image"] else a for a in args]
    result = CliRunner().invoke(app, args + tail)
    assert authenticated(sent, path) == {basic("bob", "bob-secret")}, result.output
    for request in sent:
        assert request.url.netloc.decode() == HOST, (path, request.url)


def quiet_commands() -> list[str]:
    """docs/cli.md's list of the remote commands that print nothing on standard output."""
    text = DOCS.read_text()
    start = text.index("<!-- quiet commands -->")
    block = text[start: text.index("<!-- /quiet commands -->")]
    return [item.strip().strip("`").removeprefix("dockyard ") for item in block.split("\n", 1)[1].split(",") if item.strip()]


@pytest.mark.parametrize(("path", "command", "inherited"), REMOTE, ids=IDS)
def test_every_remote_command_prints_json_or_nothing(world, path, command, inherited):
    sent, state, tmp = world
    quiet = set(quiet_commands())
    name = " ".join(path)
    if "--json" in _options(command):
        assert name not in quiet, f"{name} takes --json: take it off docs/cli.md's list of quiet commands"
        return
    assert name in quiet, f"{name} prints without --json; add --json, or list it in docs/cli.md as printing nothing"
    state["answer"] = lambda request: httpx.Response(204)
    CredentialStore().put(HOST, "alice", "alice-secret")
    set_current_registry(f"https://{HOST}")
    result = CliRunner().invoke(app, argv(path, command, tmp))
    assert sent and result.stdout == "", (name, result.stdout)


def test_the_quiet_list_names_only_real_commands():
    assert set(quiet_commands()) <= set(IDS)
