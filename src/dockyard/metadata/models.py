"""Schema of the metadata database. The database is authoritative; storage holds only bytes."""

from __future__ import annotations

import secrets

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)


def _ordered(length: int) -> String:
    """Byte-order collation on PostgreSQL so listings sort like SQLite's BINARY (and Go's sort.Strings)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", _ordered(255), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# One row per digest across the registry. `state` and `ref_count` are the row GC and
# reference writers serialize on (see docs/design notes on online GC).
blobs = Table(
    "blobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", String(200), nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("storage_key", String(400), nullable=False),
    Column("generation", Integer, nullable=False, default=1),
    Column("state", String(16), nullable=False),  # present | deleting | quarantined
    Column("ref_count", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("touched_at", DateTime(timezone=True), nullable=False),
    # GC's candidate scan (state='present' AND ref_count=0 AND touched_at < cutoff) is a range
    # scan on this index, so a run costs in proportion to the garbage (migration 0004).
    Index("ix_blobs_gc", "state", "ref_count", "touched_at"),
)

repository_blobs = Table(
    "repository_blobs",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("blob_id", Integer, ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_repository_blobs_blob_id", "blob_id"),
)

manifests = Table(
    "manifests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("digest", String(200), nullable=False),
    Column("media_type", String(255), nullable=False),
    Column("artifact_type", String(255)),
    Column("subject_digest", String(200)),
    Column("annotations", Text),  # JSON of top-level annotations, for the referrers API
    Column("size", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),  # the exact bytes pushed
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Flushed from an in-memory buffer now and then, never written once per pull.
    Column("last_pulled_at", DateTime(timezone=True)),
    UniqueConstraint("repository_id", "digest"),
    Index("ix_manifests_subject", "repository_id", "subject_digest"),
)

manifest_references = Table(
    "manifest_references",
    metadata,
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(16), primary_key=True),  # blob | manifest
    Column("digest", String(200), primary_key=True),
    Index("ix_manifest_references_digest", "digest"),
)

tags = Table(
    "tags",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    Column("name", _ordered(128), nullable=False),
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("repository_id", "name"),
    Index("ix_tags_manifest_id", "manifest_id"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    # By name, not id: starting an upload must not create the repository (a failed push leaves nothing).
    Column("repository", String(255), nullable=False),
    Column("storage_key", String(400), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("hash_state", LargeBinary),  # serialized sha256 state at `offset`
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_uploads_updated_at", "updated_at"),
    # Who opened it (see UploadService.owner_key) and its project: an upload is continued only by
    # its owner, and open sessions are capped per owner and per project (migration 0007).
    Column("owner", String(300)),
    Column("project", String(255)),
    Index("ix_uploads_owner", "owner"),
    Index("ix_uploads_project", "project"),
    Index("ix_uploads_repository", "repository"),  # an open upload keeps its repository from being dropped (0018)
)


# -- identity and access ------------------------------------------------------------------


def new_epoch() -> int:
    """A fresh credential epoch: random, so a re-created account never matches an old one."""
    return secrets.randbits(62)


users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("email", String(255)),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("password_changed_at", DateTime(timezone=True), nullable=False),
    # Random, replaced on password change and disable: login passwords and tokens carry it.
    Column("credential_epoch", BigInteger, nullable=False, default=new_epoch),
)

projects = Table(
    "projects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", _ordered(64), nullable=False, unique=True),
    Column("public", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("quota_bytes", BigInteger),  # NULL: unlimited
)

project_members = Table(
    "project_members",
    metadata,
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), nullable=False),  # admin | maintainer | developer | guest
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_project_members_user_id", "user_id"),
)

robots = Table(
    "robots",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),  # robot$<project>+<name> or robot$<name>
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE")),  # NULL: system-level
    Column("description", String(500)),
    Column("secret_hash", String(255), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(64)),
    Column("credential_epoch", BigInteger, nullable=False, default=new_epoch),  # replaced on rotate and disable
    # Disabled by a registry administrator: only an administrator may enable it again.
    Column("disabled_by_admin", Boolean, nullable=False, default=False, server_default=false()),
)

robot_permissions = Table(
    "robot_permissions",
    metadata,
    Column("robot_id", Integer, ForeignKey("robots.id", ondelete="CASCADE"), primary_key=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("actions", String(200), nullable=False),  # comma list: pull,push,delete,read-scan
)

# Token signing keys live in the database so every node signs and verifies alike.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(100), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("private_pem", Text),  # legacy plaintext; sealed and cleared on start
    Column("private_sealed", Text),  # AES-256-GCM under the key-encryption key (auth/secret_box.py)
    Column("public_pem", Text, nullable=False),
    Column("active", Boolean, nullable=False),  # the one that signs; retired keys verify for a while
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),  # never verifies again
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("token_hash", String(128), nullable=False, unique=True),
    Column("subject", String(200), nullable=False),
    Column("service", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("account_id", Integer),  # with credential_epoch: the account it was issued to
    Column("credential_epoch", BigInteger),
    Index("ix_refresh_tokens_subject", "subject"),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("key", String(300), primary_key=True),  # user:<name> or ip:<address>
    Column("failures", Integer, nullable=False),
    Column("first_failure_at", DateTime(timezone=True), nullable=False),
    Column("locked_until", DateTime(timezone=True)),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),  # username, robot$…, or "anonymous"
    Column("actor_kind", String(16), nullable=False),  # user | robot | anonymous | system
    Column("action", String(64), nullable=False),  # e.g. auth.success, manifest.push, member.add
    Column("object", String(500), nullable=False),
    Column("project", String(64)),
    Column("outcome", String(16), nullable=False),  # success | failure
    Column("source_ip", String(64)),
    Column("user_agent", String(500)),
    Column("detail", Text),  # JSON; never holds secrets
    Column("request_id", String(128)),  # the HTTP request it came from (api/request_id.py)
    Index("ix_audit_events_occurred_at", "occurred_at"),
    Index("ix_audit_events_actor", "actor"),
    Index("ix_audit_events_project", "project"),
)


# -- governance and lifecycle ---------------------------------------------------------------

# Immutable, deny and require rules on tags. project_id NULL: system-wide.
tag_rules = Table(
    "tag_rules",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE")),
    Column("kind", String(16), nullable=False),  # immutable | deny | require
    Column("repository_pattern", String(255), nullable=False),  # glob with ** (immutable) / within project
    Column("tag_pattern", String(260), nullable=False),  # glob, or `re:` + a full-match RE2 regex
    Column("description", String(500)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200)),
    Index("ix_tag_rules_project_id", "project_id"),
)

retention_policies = Table(
    "retention_policies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("repository_pattern", String(255), nullable=False),
    Column("format", String(16), nullable=False),  # ecr | native
    Column("document", Text, nullable=False),  # the policy JSON as given
    Column("schedule", String(100)),  # cron; NULL: on demand only
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_run_at", DateTime(timezone=True)),
    UniqueConstraint("project_id", "name"),
)

# Background work lives in the database, enqueued after commit, claimed by workers.
jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),  # gc | retention | ...
    Column("payload", Text, nullable=False),  # JSON
    Column("state", String(16), nullable=False),  # queued | running | succeeded | failed
    Column("run_after", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=3),
    Column("locked_by", String(100)),
    Column("locked_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("progress", Text),  # JSON, updated while running
    Column("result", Text),  # JSON
    Column("error", Text),
    # A job that waits for child jobs (an index's platform images) is `waiting` until they finish.
    Column("parent_id", Integer),
    # Claims go round-robin over these keys (the project, for scans), so no one project hogs the workers.
    Column("fair_key", String(255), nullable=False, server_default=""),
    Column("request_id", String(128)),  # the request that enqueued it, logged when it runs
    Index("ix_jobs_claim", "state", "run_after"),
    Index("ix_jobs_kind", "kind"),
    Index("ix_jobs_parent", "parent_id"),
)

schedules = Table(
    "schedules",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),  # e.g. gc, retention:<policy id>
    Column("kind", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("cron", String(100), nullable=False),
    Column("next_run_at", DateTime(timezone=True), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
)

# --- supply-chain security (issue #5) ------------------------------------------------------

# OSV advisories (scanning/vulndb.py). `document` is the record as imported.
vuln_advisories = Table(
    "vuln_advisories",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("modified", DateTime(timezone=True), nullable=False),
    Column("published", DateTime(timezone=True)),
    Column("withdrawn", DateTime(timezone=True)),
    Column("summary", Text, nullable=False, default=""),
    Column("document", Text, nullable=False),  # the OSV record as imported (compact JSON)
)

vuln_affected = Table(
    "vuln_affected",
    metadata,
    Column("advisory_id", String(255), ForeignKey("vuln_advisories.id", ondelete="CASCADE"), primary_key=True),
    Column("ecosystem", String(255), primary_key=True),  # as written: "Debian:12", "PyPI"
    Column("package", String(512), primary_key=True),  # normalised name (see package_key)
    Column("ecosystem_base", String(64), nullable=False),  # "Debian", "PyPI"
    Index("ix_vuln_affected_lookup", "ecosystem_base", "package"),
)

# Every name an advisory goes by (its id, aliases and upstream ids), so a distro advisory that
# carries no severity can borrow the CVSS of another record for the same CVE (matcher.enrich_severity).
vuln_aliases = Table(
    "vuln_aliases",
    metadata,
    Column("alias", String(255), primary_key=True),
    Column("advisory_id", String(255), ForeignKey("vuln_advisories.id", ondelete="CASCADE"), primary_key=True),
)

vuln_sources = Table(
    "vuln_sources",
    metadata,
    Column("source", String(255), primary_key=True),  # OSV folder name: "PyPI", "Debian", "Alpine:v3.20"
    Column("origin", Text, nullable=False),  # URL or local path it was read from
    Column("sha256", String(64)),  # of the export, to skip unchanged downloads
    Column("imported_at", DateTime(timezone=True), nullable=False),
    Column("advisory_count", Integer, nullable=False),
    Column("withdrawn_count", Integer, nullable=False),
    Column("invalid_count", Integer, nullable=False),
)

# External scanners (Harbor Pluggable Scanner API v1.2). The built-in scanner has no row.
scanners = Table(
    "scanners",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("url", String(1000), nullable=False),  # adapter base URL, without /api/v1
    Column("authorization", Text),  # sent verbatim as the Authorization header, e.g. "Bearer …"
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# A project's security policy; no row means the defaults (no scan on push, no gates).
project_security = Table(
    "project_security",
    metadata,
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("auto_scan", Boolean, nullable=False, default=False),
    Column("scanner_id", Integer, ForeignKey("scanners.id", ondelete="SET NULL")),  # NULL: built-in
    Column("block_severity", String(16)),  # NULL: no vulnerability gate; else low|medium|high|critical
    Column("unscanned", String(8), nullable=False, default="allow"),  # allow | block | wait
    Column("unscanned_wait_seconds", Integer, nullable=False, default=0),
    Column("require_signature", Boolean, nullable=False, default=False),
    Column("promotion_max_severity", String(16)),  # NULL: no scan gate on promotion into this project
    Column("promotion_require_signature", Boolean, nullable=False, default=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# CVE allowlist entries: a finding whose id or alias is listed (and not expired) does not block.
cve_allowlist = Table(
    "cve_allowlist",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("vulnerability", String(255), nullable=False),  # CVE-…, GHSA-…, DSA-…
    Column("expires_at", DateTime(timezone=True)),  # NULL: never
    Column("reason", String(500)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200)),
    UniqueConstraint("project_id", "vulnerability"),
)

# Public keys a project trusts for cosign signatures (PEM, as `cosign generate-key-pair` writes).
trusted_keys = Table(
    "trusted_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("fingerprint", String(100), nullable=False),  # sha256 of the DER SubjectPublicKeyInfo
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200)),
    UniqueConstraint("project_id", "name"),
)

# The last completed scan of a manifest, per scanner ("builtin" or a scanners.name). A rescan
# replaces the row only when it completes, so the previous verdict stays in force meanwhile.
scan_reports = Table(
    "scan_reports",
    metadata,
    Column("digest", String(255), primary_key=True),  # image manifest digest
    Column("scanner", String(100), primary_key=True),
    Column("status", String(16), nullable=False),  # ok | failed | unsupported
    Column("generated_at", DateTime(timezone=True), nullable=False),
    Column("vulndb_updated_at", DateTime(timezone=True)),  # the DB state it was matched against
    Column("package_count", Integer, nullable=False, default=0),
    Column("summary", Text, nullable=False),  # JSON {"Critical": n, ...}
    Column("findings", Text, nullable=False),  # JSON list of Finding.as_dict()
    Column("packages", Text),  # JSON list, so a rescan re-matches without re-cataloguing
    Column("sbom_digest", String(255)),  # the SBOM referrer manifest, when attached
    Column("error", Text),
    Column("reason", String(255)),  # a failed scan's short reason, fit for pull-only clients (no paths)
    Column("match_errors", Text),  # JSON list: packages/advisories the matcher could not evaluate
    Column("unsupported", Text),  # JSON {ecosystem: package count} with no version ordering
)


# -- faults: disk full, database outages, crashes (issue 9 part 2) --

# A key that a process is about to write before any row owns it (a blob being published, an SBOM's
# staging object). A crash between the write and the commit that makes a row own the key leaves the
# intent behind, so GC reclaims the orphan without ever listing storage (jobs/gc.py).
storage_intents = Table(
    "storage_intents",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("storage_key", String(400), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_storage_intents_created_at", "created_at"),
)


# -- signature verification (issue 19 items 1, 4) --

# One counter per project, bumped in the same transaction as anything that can change a signature
# verdict there: a manifest or tag written or deleted (a push, a new referrer, promotion, retag,
# retention), a policy or trusted-key change. Verdict caches key on it, so they stay valid until
# it moves, on every node (signing/in_registry.py).
security_generations = Table(
    "security_generations",
    metadata,
    Column("project", String(255), primary_key=True),
    Column("generation", BigInteger, nullable=False, default=0),
)


# -- scan pipeline: reports, queueing, safe output (issue 19 items 3, 5, 6) --

job_turns = Table(
    "job_turns",
    metadata,
    Column("fair_key", String(255), primary_key=True),
    Column("turn", Integer, nullable=False),  # the claim counter when this key was last served
)
