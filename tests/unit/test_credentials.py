"""Client-side credentials without a server: Dockyard's credential store, the
`docker-credential-dockyard` protocol (`credential_helper(argv, stdin, stdout)`), host/URL
normalisation and docker config.json writing (dockyard.client.credentials)."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from dockyard import __version__
from dockyard.client import credentials as creds
from dockyard.client.credentials import (
    NOT_FOUND,
    CredentialError,
    CredentialStore,
    base_url,
    credential_helper,
    docker_config_credentials,
    docker_config_path,
    server_key,
    store_path,
    write_docker_auth,
)


@pytest.fixture
def store_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "nested" / "dir" / "credentials.json"
    monkeypatch.setenv("DOCKYARD_CREDENTIALS_FILE", str(path))
    return path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch):
    """Record login-password exchanges instead of making them."""
    calls: list[tuple[str, str, str]] = []

    def fake(url: str, username: str, secret: str) -> str:
        calls.append((url, username, secret))
        return f"short-lived-for-{username}"

    monkeypatch.setattr(creds, "fetch_login_password", fake)
    return calls


def helper(*argv: str, stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = credential_helper(list(argv), io.StringIO(stdin), out)
    return code, out.getvalue()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the helper protocol --------------------------------------------------------------------


def test_store_list_get_erase_round_trip(store_file: Path, no_network, capsys):
    assert not store_file.exists()
    code, out = helper("store", stdin=json.dumps(
        {"ServerURL": "127.0.0.1:5000", "Username": "dev", "Secret": "long-lived-secret"}))
    assert (code, out) == (0, "")
    code, out = helper("store", stdin=json.dumps(
        {"ServerURL": "https://reg.example.com/", "Username": "robot$team+ci", "Secret": "robot-secret"}))
    assert (code, out) == (0, "")

    code, out = helper("list")
    assert code == 0
    assert json.loads(out) == {"127.0.0.1:5000": "dev", "reg.example.com": "robot$team+ci"}

    code, out = helper("get", stdin="127.0.0.1:5000\n")
    assert code == 0, out
    assert json.loads(out) == {"ServerURL": "127.0.0.1:5000", "Username": "dev", "Secret": "short-lived-for-dev"}
    # The long-lived secret went to the registry (plain HTTP on loopback), never to stdout.
    assert no_network == [("http://127.0.0.1:5000", "dev", "long-lived-secret")]
    assert "long-lived-secret" not in out

    code, out = helper("get", stdin="reg.example.com")
    assert code == 0 and json.loads(out)["Username"] == "robot$team+ci"
    assert no_network[-1] == ("https://reg.example.com", "robot$team+ci", "robot-secret")

    assert helper("erase", stdin="127.0.0.1:5000\n") == (0, "")
    assert json.loads(helper("list")[1]) == {"reg.example.com": "robot$team+ci"}
    assert helper("get", stdin="127.0.0.1:5000") == (1, NOT_FOUND)
    assert helper("erase", stdin="127.0.0.1:5000") == (1, NOT_FOUND)
    assert len(no_network) == 2  # no exchange is attempted for a missing credential
    assert capsys.readouterr().err == ""  # the protocol speaks on stdout only


def test_store_overwrites_and_keys_by_host(store_file: Path, no_network):
    for url, secret in (("http://127.0.0.1:5000", "first"), ("127.0.0.1:5000/v2/", "second")):
        assert helper("store", stdin=json.dumps({"ServerURL": url, "Username": "dev", "Secret": secret}))[0] == 0
    assert json.loads(store_file.read_text()) == {"127.0.0.1:5000": {"username": "dev", "secret": "second"}}
    assert CredentialStore().get("https://127.0.0.1:5000/").secret == "second"


def test_store_file_is_private(store_file: Path):
    assert helper("store", stdin='{"ServerURL": "127.0.0.1:5000", "Username": "dev", "Secret": "s3cret"}')[0] == 0
    assert mode(store_file) == 0o600
    # Rewrites (another store, an erase) keep it private and leave no temporary file behind.
    store_file.chmod(0o644)
    assert helper("store", stdin='{"ServerURL": "reg.example.com", "Username": "u", "Secret": "x"}')[0] == 0
    assert mode(store_file) == 0o600
    store_file.chmod(0o644)
    assert helper("erase", stdin="reg.example.com")[0] == 0
    assert mode(store_file) == 0o600
    assert sorted(p.name for p in store_file.parent.iterdir()) == ["credentials.json"]


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"Username": "dev", "Secret": "x"}, "no credentials server URL"),
        ({"ServerURL": "", "Username": "dev", "Secret": "x"}, "no credentials server URL"),
        ({"ServerURL": "127.0.0.1:5000", "Secret": "x"}, "no credentials username"),
        ({"ServerURL": "127.0.0.1:5000", "Username": "", "Secret": "x"}, "no credentials username"),
    ],
)
def test_store_rejects_incomplete_credentials(store_file: Path, payload: dict, message: str, capsys):
    assert helper("store", stdin=json.dumps(payload)) == (1, message)
    assert not store_file.exists()
    assert capsys.readouterr().err == ""


def test_get_needs_a_server_url(store_file: Path, no_network):
    assert helper("get", stdin="") == (1, "no credentials server URL")
    assert helper("get", stdin="  \n") == (1, "no credentials server URL")
    assert no_network == []


def test_get_and_erase_of_unknown_servers(store_file: Path, no_network):
    assert helper("get", stdin="127.0.0.1:5000") == (1, NOT_FOUND)
    assert helper("erase", stdin="127.0.0.1:5000") == (1, NOT_FOUND)
    assert helper("list") == (0, "{}")
    assert not store_file.exists()  # reading never creates the store


def test_malformed_input_and_unknown_actions_fail_on_stdout(store_file: Path, capsys):
    code, out = helper("store", stdin="{not json")
    assert code == 1 and out.startswith("error: ")
    code, out = helper("store", stdin='["a list"]')
    assert code == 1 and out
    code, out = helper("frobnicate")
    assert code == 1 and "unknown action 'frobnicate'" in out
    code, out = helper()
    assert code == 1 and "unknown action" in out
    assert capsys.readouterr().err == ""


def test_corrupt_store_is_reported_not_overwritten(store_file: Path):
    store_file.parent.mkdir(parents=True)
    store_file.write_text("{broken")
    code, out = helper("list")
    assert code == 1 and "corrupt" in out and str(store_file) in out
    code, out = helper("store", stdin='{"ServerURL": "h", "Username": "u", "Secret": "s"}')
    assert code == 1 and "corrupt" in out
    assert store_file.read_text() == "{broken"
    with pytest.raises(CredentialError):
        CredentialStore().list()


def test_get_reports_an_unreachable_registry(store_file: Path):
    # A loopback port nobody listens on: a real connection attempt that fails at once.
    assert helper("store", stdin='{"ServerURL": "127.0.0.1:9", "Username": "dev", "Secret": "s"}')[0] == 0
    code, out = helper("get", stdin="127.0.0.1:9")
    assert code == 1 and out.startswith("error: ")
    assert "\n" not in out.strip()


def test_get_reports_a_refused_exchange(store_file: Path, monkeypatch: pytest.MonkeyPatch):
    def refuse(request: httpx.Request) -> httpx.Response:
        assert request.url == "http://127.0.0.1:5000/api/v1/auth/login-password"
        assert request.headers["authorization"] == "Basic " + base64.b64encode(b"dev:wrong").decode()
        return httpx.Response(401, json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})

    real_client = httpx.Client
    monkeypatch.setattr(creds.httpx, "Client", lambda **kw: real_client(transport=httpx.MockTransport(refuse), **kw))
    assert helper("store", stdin='{"ServerURL": "127.0.0.1:5000", "Username": "dev", "Secret": "wrong"}')[0] == 0
    code, out = helper("get", stdin="127.0.0.1:5000")
    assert code == 1
    assert out == "cannot get a login password: UNAUTHORIZED: authentication required"


def test_version(store_file: Path):
    code, out = helper("version")
    assert code == 0 and out == f"docker-credential-dockyard (dockyard) {__version__}\n"


# -- normalisation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "server, key",
    [
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("  127.0.0.1:5000\n", "127.0.0.1:5000"),
        ("http://127.0.0.1:5000", "127.0.0.1:5000"),
        ("https://reg.example.com:5000/", "reg.example.com:5000"),
        ("https://reg.example.com/v2/", "reg.example.com"),
        ("reg.example.com/team/app", "reg.example.com"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_server_key(server: str, key: str):
    assert server_key(server) == key


@pytest.mark.parametrize(
    "server, plain_http, url",
    [
        ("127.0.0.1:5000", None, "http://127.0.0.1:5000"),
        ("127.0.0.1", None, "http://127.0.0.1"),
        ("127.1.2.3:80", None, "http://127.1.2.3:80"),
        ("localhost:5000", None, "http://localhost:5000"),
        ("[::1]:5000", None, "http://[::1]:5000"),
        ("reg.example.com", None, "https://reg.example.com"),
        ("reg.example.com:5000/v2/", None, "https://reg.example.com:5000"),
        # Look-alikes of loopback are not loopback: no silent downgrade to plain HTTP.
        ("localhost.example.com", None, "https://localhost.example.com"),
        ("127.0.0.1.nip.io:5000", None, "https://127.0.0.1.nip.io:5000"),
        ("10.0.0.5:5000", None, "https://10.0.0.5:5000"),
        # Explicit choices win.
        ("reg.example.com", True, "http://reg.example.com"),
        ("127.0.0.1:5000", False, "https://127.0.0.1:5000"),
        # A URL keeps its scheme.
        ("http://reg.example.com:5000/", None, "http://reg.example.com:5000"),
        ("https://127.0.0.1:5000/", None, "https://127.0.0.1:5000"),
    ],
)
def test_base_url(server: str, plain_http: bool | None, url: str):
    assert base_url(server, plain_http) == url


def test_store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DOCKYARD_CREDENTIALS_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert store_path() == tmp_path / "xdg" / "dockyard" / "credentials.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store_path() == tmp_path / "home" / ".config" / "dockyard" / "credentials.json"
    monkeypatch.setenv("DOCKYARD_CREDENTIALS_FILE", str(tmp_path / "explicit.json"))
    assert store_path() == tmp_path / "explicit.json"
    assert CredentialStore().path == tmp_path / "explicit.json"


# -- docker's config.json -------------------------------------------------------------------


def _auth(user: str, secret: str) -> str:
    return base64.b64encode(f"{user}:{secret}".encode()).decode()


def test_write_docker_auth_creates_a_private_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config_dir = tmp_path / "does" / "not" / "exist"
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    path = write_docker_auth("http://127.0.0.1:5000/", "dev", "pa:ss word")
    assert path == config_dir / "config.json" == docker_config_path()
    assert json.loads(path.read_text()) == {"auths": {"127.0.0.1:5000": {"auth": _auth("dev", "pa:ss word")}}}
    assert mode(path) == 0o600
    assert sorted(p.name for p in config_dir.iterdir()) == ["config.json"]
    # Read back: the password may itself contain colons.
    cred = docker_config_credentials("127.0.0.1:5000")
    assert (cred.username, cred.secret) == ("dev", "pa:ss word")


def test_write_docker_auth_keeps_the_rest_of_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    existing = {
        "auths": {"other.example.com": {"auth": _auth("o", "p")}, "127.0.0.1:5000": {"auth": _auth("old", "old")}},
        "credHelpers": {"reg.example.com": "dockyard"},
        "psFormat": "table {{.ID}}",
    }
    (tmp_path / "config.json").write_text(json.dumps(existing))
    (tmp_path / "config.json").chmod(0o644)
    write_docker_auth("127.0.0.1:5000", "dev", "new-secret")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auths"] == {"other.example.com": {"auth": _auth("o", "p")},
                               "127.0.0.1:5000": {"auth": _auth("dev", "new-secret")}}
    assert config["credHelpers"] == {"reg.example.com": "dockyard"} and config["psFormat"] == "table {{.ID}}"
    assert mode(tmp_path / "config.json") == 0o600


def test_newcomer_login_writes_no_secret_into_config_json_for_a_registry_with_a_credential_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """docs/cli.md: with `credHelpers` the robot secret never reaches the container engine (docker does the same)."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    existing = {"auths": {"reg.example.com": {"auth": _auth("old", "stale")}, "other.example.com": {"auth": _auth("o", "p")}},
                "credHelpers": {"reg.example.com": "dockyard"}}
    (tmp_path / "config.json").write_text(json.dumps(existing))
    assert write_docker_auth("reg.example.com", "robot$team+ci", "secret") is None
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auths"] == {"other.example.com": {"auth": _auth("o", "p")}}
    assert "secret" not in (tmp_path / "config.json").read_text()


def test_docker_config_credentials_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_config_credentials("127.0.0.1:5000") is None  # no config at all
    (tmp_path / "config.json").write_text("{not json")
    assert docker_config_credentials("127.0.0.1:5000") is None
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "127.0.0.1:5000": {"auth": _auth("dev", "pw")},
        "helper.example.com": {},  # credentials kept by a helper: nothing inline
    }}))
    cred = docker_config_credentials("https://127.0.0.1:5000/v2/")
    assert (cred.username, cred.secret) == ("dev", "pw")
    assert docker_config_credentials("helper.example.com") is None
    assert docker_config_credentials("unknown.example.com") is None


def test_docker_config_path_defaults_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert docker_config_path() == tmp_path / ".docker" / "config.json"


def test_store_api_round_trip(store_file: Path):
    store = CredentialStore()
    assert store.get("127.0.0.1:5000") is None and store.list() == {}
    store.put("https://127.0.0.1:5000/", "dev", "s1")
    assert store.get("127.0.0.1:5000").secret == "s1"
    assert store.list() == {"127.0.0.1:5000": "dev"}
    assert store.erase("http://127.0.0.1:5000") is True
    assert store.erase("127.0.0.1:5000") is False
    assert store.list() == {}
    assert os.path.exists(store_file)


def test_finding2_helper_hands_back_a_stored_login_password_instead_of_renewing_it(store_file, no_network):
    """A login password cannot mint another (the server refuses with 403); the helper returns it as
    it is, so it works until it expires and no longer renews itself."""
    login_password = "eyJhbGciOiJFUzI1NiJ9.eyJ1c2UiOiJsb2dpbiJ9.c2ln"
    payload = json.dumps({"ServerURL": "registry.example.com", "Username": "alice", "Secret": login_password})
    assert helper("store", stdin=payload) == (0, "")
    code, out = helper("get", stdin="registry.example.com")
    assert code == 0 and json.loads(out)["Secret"] == login_password
    assert no_network == []


# --- dockyard get-login-password with saved credentials (newcomer review) ---------------------------


def _glp(monkeypatch, args, fetch):
    from typer.testing import CliRunner

    from dockyard.cli import app

    monkeypatch.delenv("DOCKYARD_USERNAME", raising=False)
    monkeypatch.delenv("DOCKYARD_PASSWORD", raising=False)
    monkeypatch.setattr(creds, "saved_credentials", lambda server: creds.StoredCredential("admin", "admin-secret"))
    monkeypatch.setattr(creds, "fetch_login_password", fetch)
    return CliRunner().invoke(app, ["get-login-password", "--registry", "127.0.0.1:5000", *args])


def test_newcomer_get_login_password_never_sends_saved_secret_under_other_name(monkeypatch):
    """`get-login-password -u ci` used to send admin's saved secret as ci's password ("invalid username or
    password"); now it says whose credentials are saved and how to give ci's password."""
    sent = []
    result = _glp(monkeypatch, ["-u", "ci"], lambda url, user, secret: sent.append((user, secret)) or "pw")
    assert result.exit_code == 1
    assert sent == []
    assert "no password for ci" in result.output and "admin's" in result.output
    assert "DOCKYARD_PASSWORD" in result.output


def test_newcomer_get_login_password_refused_saved_credentials_say_login_again(monkeypatch):
    def refused(url, user, secret):
        raise CredentialError("cannot get a login password: UNAUTHORIZED: invalid username or password")

    result = _glp(monkeypatch, [], refused)
    assert result.exit_code == 1
    assert "saved for 127.0.0.1:5000 as admin" in " ".join(result.output.split())
    assert "dockyard login 127.0.0.1:5000 -u admin" in " ".join(result.output.split())
    ok = _glp(monkeypatch, ["-u", "admin"], lambda url, user, secret: f"token-for-{user}-{secret}")
    assert ok.exit_code == 0 and ok.output.strip() == "token-for-admin-admin-secret"


# --- attack review (atk4): saved secrets over plain HTTP to another machine ----------------------


@pytest.mark.parametrize("args", [
    ["--registry", "http://registry.example.com:5000"],
    ["--registry", "registry.example.com:5000", "--plain-http"],
])
def test_atk4_get_login_password_never_sends_a_saved_secret_over_plain_http(monkeypatch, args):
    """`dockyard admin …` refused this already (remote.connect); get-login-password sent the saved long-lived
    secret in clear text to any non-loopback host named with http:// (or DOCKYARD_URL=http://…)."""
    from typer.testing import CliRunner

    from dockyard.cli import app

    sent = []
    monkeypatch.delenv("DOCKYARD_USERNAME", raising=False)
    monkeypatch.delenv("DOCKYARD_PASSWORD", raising=False)
    monkeypatch.setattr(creds, "saved_credentials", lambda server: creds.StoredCredential("admin", "admin-secret"))
    monkeypatch.setattr(creds, "fetch_login_password", lambda url, user, secret: sent.append(url) or "pw")
    result = CliRunner().invoke(app, ["get-login-password", *args])
    assert sent == []
    assert result.exit_code == 1 and "plain HTTP" in " ".join(result.output.split())


def test_atk4_helper_never_sends_a_saved_secret_over_plain_http(store_file: Path, no_network):
    """docker-credential-dockyard `get http://host` posted the stored secret to http://host (clear text)."""
    CredentialStore().put("registry.example.com:5000", "robot$ci", "robot-secret")
    code, out = helper("get", stdin="http://registry.example.com:5000")
    assert no_network == []
    assert code == 1 and "plain HTTP" in out
    code, out = helper("get", stdin="http://127.0.0.1:5000")  # loopback: never leaves the machine
    assert code == 1 and out == NOT_FOUND


def test_atk4_sign_and_verify_never_send_a_saved_secret_over_plain_http(monkeypatch):
    """`dockyard sign|verify --plain-http host/repo:tag` handed the saved secret to a plain-HTTP registry client."""
    import typer

    from dockyard.cli import signing
    from dockyard.signing.registry import parse_reference

    monkeypatch.delenv("DOCKYARD_PASSWORD", raising=False)
    monkeypatch.setattr(creds, "saved_credentials", lambda server: creds.StoredCredential("admin", "admin-secret"))
    ref = parse_reference("registry.example.com:5000/team/app:1")
    with pytest.raises(typer.Exit):
        signing._client(ref, None, None, False, True)
    local = signing._client(parse_reference("127.0.0.1:5000/team/app:1"), None, None, False, True)
    assert local is not None  # loopback: allowed


HOSTILE = "UNAUTHORIZED: [link=https://evil.example/]see https://good.example/help[/link] [blink]"


def test_atk4_registry_messages_are_not_rich_markup(monkeypatch):
    """A registry's error text was printed as Rich markup by `login` and `get-login-password`: a hostile registry
    could hide an OSC 8 link's real target (`[link=…]`) or restyle the operator's terminal. Shown literally now."""
    from typer.testing import CliRunner

    from dockyard.cli import app

    def refuse(*args):
        raise CredentialError(HOSTILE)

    monkeypatch.setattr(creds, "verify_login", refuse)
    result = CliRunner().invoke(app, ["login", "127.0.0.1:5000", "-u", "ci", "-p", "x"])
    assert result.exit_code == 1 and "[link=https://evil.example/]" in result.output
    result = _glp(monkeypatch, [], refuse)
    assert result.exit_code == 1 and "[link=https://evil.example/]" in result.output


def test_atk4_saving_never_writes_through_a_planted_tmp_symlink(store_file: Path, tmp_path: Path):
    """The store, the current registry and docker's config were written through `<name>.tmp` opened with O_TRUNC,
    following a symlink planted there (DOCKYARD_CREDENTIALS_FILE in a shared directory): the secret landed in the
    planter's file. The planted link is removed, the file written privately."""
    from dockyard.client.credentials import current_path, set_current_registry

    store_file.parent.mkdir(parents=True)
    for target in (store_file.with_suffix(".tmp"), current_path().with_suffix(".tmp")):
        trap = tmp_path / f"trap-{target.name}"
        trap.write_text("")
        target.symlink_to(trap)
    CredentialStore().put("registry.example.com", "robot$ci", "robot-secret")
    set_current_registry("https://registry.example.com")
    assert all(p.read_text() == "" for p in tmp_path.glob("trap-*"))
    assert CredentialStore().get("registry.example.com").secret == "robot-secret"
    assert mode(store_file) == 0o600 and mode(current_path()) == 0o600 and not store_file.is_symlink()
