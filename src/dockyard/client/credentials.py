"""Client-side credentials: `dockyard login`, `dockyard get-login-password`, and the
`docker-credential-dockyard` helper (docker's credential-helper protocol).

Long-lived secrets stay in Dockyard's own store (mode 0600); what the helper hands to docker
is a short-lived login password, the way cloud CLIs do it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from dockyard.client.tls import describe_connection_error, ssl_context

NOT_FOUND = "credentials not found in native keychain"
IDENTITY_TOKEN_USERNAME = "<token>"
# Sent on every /api/v1 call: state-changing requests without a JSON body need it (CSRF protection).
CLIENT_HEADERS = {"X-Dockyard-Client": "dockyard-cli"}
_LOOPBACK = re.compile(r"(localhost|127\.[0-9]+\.[0-9]+\.[0-9]+|\[::1\])(:[0-9]+)?")


class CredentialError(Exception):
    pass


def server_key(server: str) -> str:
    """`https://reg.example.com:5000/` → `reg.example.com:5000`, as docker keys its config."""
    server = server.strip()
    server = re.sub(r"^[a-z]+://", "", server)
    return server.split("/", 1)[0]


def is_loopback(host: str) -> bool:
    """localhost / 127.x / [::1], with or without a port: where plain HTTP never leaves the machine."""
    return bool(_LOOPBACK.fullmatch(host))


def base_url(server: str, plain_http: bool | None = None) -> str:
    if re.match(r"^https?://", server.strip()):
        return server.strip().rstrip("/")
    host = server_key(server)
    if plain_http is None:
        plain_http = bool(_LOOPBACK.fullmatch(host))
    return f"{'http' if plain_http else 'https'}://{host}"


def refuse_clear_text(url: str, server: str) -> None:
    """A saved secret (stored by host:port, as docker does) never crosses the network in clear text because one
    command, DOCKYARD_URL or a helper request named http://; loopback never leaves the machine."""
    if url.startswith("http://") and not is_loopback(server_key(url)):
        raise CredentialError(f"not sending the credentials saved for {server_key(server)} over plain HTTP; use https, "
                              "or give --password, --password-stdin or DOCKYARD_PASSWORD")


def store_path() -> Path:
    override = os.environ.get("DOCKYARD_CREDENTIALS_FILE")
    if override:
        return Path(override)
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "dockyard" / "credentials.json"


def current_path() -> Path:
    """Where `dockyard login` records the registry it logged in to last: the default of every remote command."""
    return store_path().with_name("current-registry")


def current_registry() -> str | None:
    try:
        value = current_path().read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return value or None


def set_current_registry(url: str) -> None:
    _write_private(current_path(), url + "\n")


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` (mode 0600) through a fresh temporary file: an existing `.tmp` (a symlink planted
    in a shared directory, or a stale file another user can read) is removed, never followed or reused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


@dataclass
class StoredCredential:
    username: str
    secret: str


class CredentialStore:
    def __init__(self, path: Path | None = None):
        self.path = path or store_path()

    def _load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise CredentialError(f"credential store {self.path} is corrupt: {exc}") from exc

    def _save(self, data: dict) -> None:
        _write_private(self.path, json.dumps(data, indent=2))

    def get(self, server: str) -> StoredCredential | None:
        entry = self._load().get(server_key(server))
        return StoredCredential(entry["username"], entry["secret"]) if entry else None

    def put(self, server: str, username: str, secret: str) -> None:
        data = self._load()
        data[server_key(server)] = {"username": username, "secret": secret}
        self._save(data)

    def erase(self, server: str) -> bool:
        data = self._load()
        removed = data.pop(server_key(server), None) is not None
        if removed:
            self._save(data)
        return removed

    def list(self) -> dict[str, str]:
        return {server: entry["username"] for server, entry in self._load().items()}


def docker_config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def write_docker_auth(server: str, username: str, secret: str) -> Path | None:
    """Record credentials in docker's config.json, as `docker login` does (inline `auth`), unless
    config.json sends this registry to a credential helper: then, as docker does, the secret is not
    written there (None is returned), and a stale inline entry is removed."""
    path = docker_config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        config = {}
    key = server_key(server)
    if key in (config.get("credHelpers") or {}):
        if (config.get("auths") or {}).pop(key, None) is not None:
            _write_private(path, json.dumps(config, indent=2))
        return None
    config.setdefault("auths", {})[key] = {"auth": base64.b64encode(f"{username}:{secret}".encode()).decode()}
    _write_private(path, json.dumps(config, indent=2))
    return path


def docker_config_credentials(server: str) -> StoredCredential | None:
    try:
        auths = json.loads(docker_config_path().read_text()).get("auths", {})
    except (FileNotFoundError, ValueError):
        return None
    entry = auths.get(server_key(server)) or {}
    if "auth" not in entry:
        return None
    username, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
    return StoredCredential(username, secret)


def saved_credentials(server: str) -> StoredCredential | None:
    """What `dockyard login` saved for `server`, else what `docker login` wrote to config.json."""
    return CredentialStore().get(server) or docker_config_credentials(server)


def _error_message(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        if errors:
            return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except ValueError:
        pass
    return f"HTTP {response.status_code}"


def _client() -> httpx.Client:
    try:
        return httpx.Client(timeout=30, verify=ssl_context())
    except ValueError as exc:
        raise CredentialError(str(exc)) from exc


def verify_login(url: str, username: str, secret: str) -> None:
    """Check credentials the way docker login does: ping /v2/, then ask the token service."""
    with _client() as client:
        ping = client.get(f"{url}/v2/")
        challenge = ping.headers.get("www-authenticate", "")
        if ping.status_code == 200:
            return
        if challenge.lower().startswith("bearer "):
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            realm = params.pop("realm", f"{url}/token")
            response = client.get(realm, params={"service": params.get("service", ""), "account": username}, auth=(username, secret))
        else:
            response = client.get(f"{url}/v2/", auth=(username, secret))
        if response.status_code != 200:
            raise CredentialError(f"login failed: {_error_message(response)}")


def fetch_login_password(url: str, username: str, secret: str) -> str:
    with _client() as client:
        response = client.post(f"{url}/api/v1/auth/login-password", auth=(username, secret), headers=CLIENT_HEADERS)
    if response.status_code != 200:
        raise CredentialError(f"cannot get a login password: {_error_message(response)}")
    return response.json()["password"]


# -- docker-credential-dockyard -------------------------------------------------------------


def credential_helper(argv: list[str] | None = None, stdin=None, stdout=None) -> int:
    """The credential-helper protocol: get, store, erase, list, version. Errors go to stdout, exit 1."""
    argv = sys.argv[1:] if argv is None else argv
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    store = CredentialStore()
    action = argv[0] if argv else ""
    server = ""
    try:
        if action == "store":
            payload = json.loads(stdin.read())
            if not isinstance(payload, dict) or not all(
                isinstance(payload.get(k, ""), str) for k in ("ServerURL", "Username", "Secret")
            ):
                raise CredentialError("store expects a JSON object with string ServerURL, Username and Secret")
            if not payload.get("ServerURL"):
                raise CredentialError("no credentials server URL")
            if not payload.get("Username"):
                raise CredentialError("no credentials username")
            store.put(payload["ServerURL"], payload["Username"], payload.get("Secret", ""))
        elif action == "get":
            server = stdin.read().strip()
            if not server:
                raise CredentialError("no credentials server URL")
            cred = store.get(server)
            if cred is None:
                raise CredentialError(NOT_FOUND)
            if cred.username == IDENTITY_TOKEN_USERNAME:
                # docker login stored a refresh (identity) token it got from us; docker redeems it
                # itself with a refresh_token grant, so hand it back unchanged.
                json.dump({"ServerURL": server, "Username": cred.username, "Secret": cred.secret}, stdout)
                stdout.flush()
                return 0
            # A stored login password (`docker login` with get-login-password's output) cannot buy
            # another one; it is handed back as it is and works until it expires.
            is_login_password = cred.secret.startswith("eyJ") and cred.secret.count(".") == 2
            if not is_login_password:
                refuse_clear_text(base_url(server), server)
            password = cred.secret if is_login_password else fetch_login_password(base_url(server), cred.username, cred.secret)
            json.dump({"ServerURL": server, "Username": cred.username, "Secret": password}, stdout)
        elif action == "erase":
            server = stdin.read().strip()
            if not store.erase(server):
                raise CredentialError(NOT_FOUND)
        elif action == "list":
            json.dump(store.list(), stdout)
        elif action == "version":
            from dockyard import __version__

            stdout.write(f"docker-credential-dockyard (dockyard) {__version__}\n")
        else:
            raise CredentialError(f"unknown action {action!r}; use get, store, erase, list or version")
    except httpx.HTTPError as exc:
        stdout.write(f"error: {describe_connection_error(server or 'the registry', exc)}")
        stdout.flush()
        return 1
    except (CredentialError, ValueError, KeyError) as exc:
        stdout.write(str(exc) if isinstance(exc, CredentialError) else f"error: {exc}")
        stdout.flush()
        return 1
    stdout.flush()
    return 0


def helper_main() -> None:
    sys.exit(credential_helper())
