"""Retention policies: stored per project, evaluated per matching repository, run on a schedule or on demand.

Deciding is pure (policy.retention_eval) and shared by the dry run and the real run, so a dry run shows
exactly what a run would do. Deleting goes through ManifestService.delete, the one path every manifest
delete takes, so the tag policy protects immutable tags there too; each deletion is audited as
`retention.delete` with the policy and the rule. Time comes from an injectable clock so tests control it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, or_, select, update

from dockyard import request_context
from dockyard.auth.principals import Principal
from dockyard.cron import is_cron
from dockyard.domain.events import record
from dockyard.errors import Conflict, DockyardError, InvalidRequest, ManifestUnknown, NotFound, Unavailable
from dockyard.metadata import job_kinds
from dockyard.metadata.lookups import require_project_id
from dockyard.metadata.db import Database, aware, insert_ignore, utcnow
from dockyard.metadata.models import manifest_references, manifests, projects, repositories, retention_policies, tags
from dockyard.policy.retention import FORMATS, load_document, parse_policy
from dockyard.policy.retention_eval import Artifact, Decision, deletion_order, evaluate, protect
from dockyard.policy.tag_patterns import glob_matches, validate_new_tag_glob, validate_repository_glob

log = logging.getLogger("dockyard.retention")

JOB_KIND = job_kinds.RETENTION
SYSTEM = Principal("system", "system:retention")  # type: ignore[arg-type]  # audit actor of scheduled runs
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,99}")
MAX_JOB_DELETIONS_LISTED = 1000


@dataclass(frozen=True)
class RetentionPolicy:
    id: int
    project: str
    name: str
    repository_pattern: str
    format: str
    document: dict
    schedule: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime
    last_run_at: datetime | None


def _policy_changed(conn: Connection, policy: RetentionPolicy, change: str) -> None:
    record(conn, "policy.changed", project=policy.project,
           data={"kind": "retention", "change": change, "policy_id": policy.id, "name": policy.name})


def schedule_name(policy_id: int) -> str:
    return f"retention:{policy_id}"


def validate_schedule(cron: str | None) -> str | None:
    if cron is None or cron == "":
        return None
    if not isinstance(cron, str) or len(cron) > 100 or not is_cron(cron):
        raise InvalidRequest(f"schedule {str(cron)[:100]!r} is not a valid cron expression (e.g. `0 3 * * *`)",
                             detail={"field": "schedule"})
    return cron


class RetentionService:
    def __init__(
        self,
        db: Database,
        manifests_service: Any,
        audit: Any,
        *,
        tag_policy: Any = None,
        jobs: Any = None,
        scheduler: Any = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.db = db
        self.manifests = manifests_service
        self.audit = audit
        self.tag_policy = tag_policy
        self.jobs = jobs
        self.scheduler = scheduler
        self.clock = clock

    # -- policies ---------------------------------------------------------------------------------

    @staticmethod
    def _validate(name: str, repository_pattern: str, fmt: str, document: Any, schedule: str | None) -> tuple[dict, str | None]:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise InvalidRequest("policy name: 1-100 characters of letters, digits, space, '.', '_' or '-'",
                                 detail={"field": "name"})
        validate_repository_glob(repository_pattern)
        if fmt not in FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}", detail={"field": "format"})
        doc = load_document(document)
        for rule in parse_policy(fmt, doc):
            for pattern in getattr(rule, "tags", ()):  # native rules' globs; ECR patterns are literal + `*`
                validate_new_tag_glob(pattern)
        return doc, validate_schedule(schedule)

    def create(self, project: str, *, name: str, repository_pattern: str = "**", format: str, document: Any,
               schedule: str | None = None, enabled: bool = True) -> RetentionPolicy:
        doc, cron = self._validate(name, repository_pattern, format, document, schedule)
        now = self.clock()
        with self.db.write() as conn:
            project_id = self._project_id(conn, project)
            values = {
                "project_id": project_id, "name": name, "repository_pattern": repository_pattern, "format": format,
                "document": json.dumps(doc), "schedule": cron, "enabled": enabled, "created_at": now, "updated_at": now,
            }
            if not insert_ignore(conn, retention_policies, values, ["project_id", "name"]):
                raise Conflict(f"project {project} already has a retention policy named {name}", detail={"name": name})
            policy_id = conn.execute(
                select(retention_policies.c.id).where(
                    retention_policies.c.project_id == project_id, retention_policies.c.name == name)
            ).scalar_one()
            policy = self._load(conn, policy_id)
            _policy_changed(conn, policy, "created")
        self._sync_schedule(policy)
        return policy

    def update(self, project: str, policy_id: int, *, name: str, repository_pattern: str = "**", format: str,
               document: Any, schedule: str | None = None, enabled: bool = True) -> RetentionPolicy:
        """Replace a policy's definition (PUT semantics); its run history stays."""
        doc, cron = self._validate(name, repository_pattern, format, document, schedule)
        with self.db.write() as conn:
            current = self._require(conn, project, policy_id)
            clash = conn.execute(
                select(retention_policies.c.id).where(
                    retention_policies.c.project_id == self._project_id(conn, project),
                    retention_policies.c.name == name, retention_policies.c.id != current.id)
            ).first()
            if clash is not None:
                raise Conflict(f"project {project} already has a retention policy named {name}", detail={"name": name})
            conn.execute(
                update(retention_policies).where(retention_policies.c.id == current.id).values(
                    name=name, repository_pattern=repository_pattern, format=format, document=json.dumps(doc),
                    schedule=cron, enabled=enabled, updated_at=self.clock())
            )
            policy = self._load(conn, current.id)
            _policy_changed(conn, policy, "updated")
        self._sync_schedule(policy)
        return policy

    def delete(self, project: str, policy_id: int) -> RetentionPolicy:
        with self.db.write() as conn:
            policy = self._require(conn, project, policy_id)
            conn.execute(delete(retention_policies).where(retention_policies.c.id == policy.id))
            _policy_changed(conn, policy, "deleted")
        if self.scheduler is not None:
            self.scheduler.set_schedule(schedule_name(policy.id), JOB_KIND, {"policy_id": policy.id}, None)
        return policy

    def list(self, project: str) -> list[RetentionPolicy]:
        with self.db.read() as conn:
            project_id = self._project_id(conn, project)
            ids = conn.execute(
                select(retention_policies.c.id).where(retention_policies.c.project_id == project_id).order_by(retention_policies.c.id)
            ).scalars().all()
            return [self._load(conn, i) for i in ids]

    def get(self, project: str, policy_id: int) -> RetentionPolicy:
        with self.db.read() as conn:
            return self._require(conn, project, policy_id)

    def _sync_schedule(self, policy: RetentionPolicy) -> None:
        """After commit: the scheduler row is the job system's, keyed `retention:<id>`; None removes it."""
        if self.scheduler is None:
            return
        cron = policy.schedule if policy.enabled else None
        self.scheduler.set_schedule(schedule_name(policy.id), JOB_KIND, {"policy_id": policy.id}, cron)

    _project_id = staticmethod(require_project_id)

    def _require(self, conn: Connection, project: str, policy_id: int) -> RetentionPolicy:
        policy = self._load(conn, policy_id)
        if policy is None or policy.project != project:
            raise NotFound(f"project {project} has no retention policy {policy_id}", detail={"policy_id": policy_id})
        return policy

    @staticmethod
    def _load(conn: Connection, policy_id: int) -> RetentionPolicy | None:
        row = conn.execute(
            select(retention_policies, projects.c.name.label("project_name"))
            .join(projects, projects.c.id == retention_policies.c.project_id)
            .where(retention_policies.c.id == policy_id)
        ).first()
        if row is None:
            return None
        return RetentionPolicy(
            row.id, row.project_name, row.name, row.repository_pattern, row.format, json.loads(row.document), row.schedule,
            bool(row.enabled), aware(row.created_at), aware(row.updated_at), aware(row.last_run_at),
        )

    # -- evaluating and running ----------------------------------------------------------------------

    def _repositories(self, conn: Connection, policy: RetentionPolicy) -> list[tuple[int, str]]:
        prefix = policy.project + "/"
        # The repository named exactly after the project belongs to it too (its path inside is ""), as for tag rules.
        rows = conn.execute(
            select(repositories.c.id, repositories.c.name)
            .where(or_(
                repositories.c.name == policy.project,
                repositories.c.name.like(prefix.replace("_", r"\_") + "%", escape="\\"),
            ))
            .order_by(repositories.c.name)
        ).all()
        return [(r.id, r.name) for r in rows if glob_matches(r.name[len(prefix):], policy.repository_pattern)]

    @staticmethod
    def _artifacts(conn: Connection, repo_id: int) -> list[Artifact]:
        tag_map: dict[int, list[str]] = {}
        for manifest_id, name in conn.execute(
            select(tags.c.manifest_id, tags.c.name).where(tags.c.repository_id == repo_id).order_by(tags.c.name)
        ):
            tag_map.setdefault(manifest_id, []).append(name)
        children: dict[int, list[str]] = {}
        for manifest_id, digest in conn.execute(
            select(manifest_references.c.manifest_id, manifest_references.c.digest)
            .join(manifests, manifests.c.id == manifest_references.c.manifest_id)
            .where(manifests.c.repository_id == repo_id, manifest_references.c.kind == "manifest")
        ):
            children.setdefault(manifest_id, []).append(digest)
        rows = conn.execute(
            select(manifests.c.id, manifests.c.digest, manifests.c.media_type, manifests.c.subject_digest,
                   manifests.c.created_at, manifests.c.last_pulled_at).where(manifests.c.repository_id == repo_id)
        ).all()
        return [
            Artifact(r.digest, tuple(tag_map.get(r.id, ())), aware(r.created_at), aware(r.last_pulled_at), r.media_type,
                     tuple(children.get(r.id, ())), r.subject_digest)
            for r in rows
        ]

    def _immutable_label(self, conn: Connection, repository: str, tag: str) -> str | None:
        if self.tag_policy is None:
            return None
        rule = self.tag_policy.is_immutable(conn, repository, tag)
        if rule is None:
            return None
        rule_id = getattr(rule, "id", None)
        return f"tag rule {rule_id}" if rule_id is not None else "tag rule"

    def evaluate_repository(self, conn: Connection, repo_id: int, repository: str, rules: list, now: datetime
                            ) -> tuple[list[Artifact], dict[str, Decision]]:
        artifacts = self._artifacts(conn, repo_id)
        decisions = evaluate(rules, artifacts, now)
        protect(artifacts, decisions, lambda tag: self._immutable_label(conn, repository, tag))
        return artifacts, decisions

    def get_by_id(self, policy_id: int) -> RetentionPolicy | None:
        with self.db.read() as conn:
            return self._load(conn, policy_id)

    def dry_run(self, project: str, policy_id: int) -> dict:
        self.get(project, policy_id)
        return self.run(policy_id, dry_run=True)

    def run(self, policy_id: int, *, dry_run: bool = False, actor: Principal | None = None,
            progress: Callable[[dict], None] | None = None) -> dict:
        """Evaluate every matching repository; unless dry_run, delete what expired. Returns the report."""
        policy = self.get_by_id(policy_id)
        if policy is None:
            raise NotFound(f"retention policy {policy_id} does not exist", detail={"policy_id": policy_id})
        actor = actor or SYSTEM
        with request_context.acting_as(actor.name):
            return self._run(policy, dry_run=dry_run, actor=actor, progress=progress)

    def _run(self, policy: RetentionPolicy, *, dry_run: bool, actor: Principal,
             progress: Callable[[dict], None] | None) -> dict:
        rules = parse_policy(policy.format, policy.document)
        now = self.clock()
        summary = {"repositories": 0, "artifacts": 0, "kept": 0, "expired": 0, "protected": 0,
                   "deleted": 0, "skipped": 0, "failed": 0}
        report_repos = []
        with self.db.read() as conn:
            targets = self._repositories(conn, policy)
        for done, (repo_id, repository) in enumerate(targets, start=1):
            with self.db.read() as conn:
                artifacts, decisions = self.evaluate_repository(conn, repo_id, repository, rules, now)
            entries: dict[str, dict] = {}
            for a in sorted(artifacts, key=lambda a: (a.pushed_at, a.digest), reverse=True):
                d = decisions[a.digest]
                entries[a.digest] = {**d.to_dict(), "pushed_at": a.pushed_at, "last_pulled_at": a.last_pulled_at}
                summary["artifacts"] += 1
                summary["expired" if d.action == "expire" else "kept"] += 1
                summary["protected"] += d.protection is not None
            if not dry_run:
                expired = {digest for digest, d in decisions.items() if d.action == "expire"}
                for a in deletion_order(artifacts, expired):
                    outcome = self._delete(policy, repository, a, decisions[a.digest], expired, actor)
                    entries[a.digest]["outcome"] = outcome
                    summary[{"deleted": "deleted", "skipped": "skipped"}.get(outcome.split(":")[0], "failed")] += 1
            summary["repositories"] += 1
            report_repos.append({"repository": repository, "decisions": list(entries.values())})
            if progress is not None:
                progress({"repositories_done": done, "repositories": len(targets)})
        if not dry_run:
            with self.db.write() as conn:
                conn.execute(update(retention_policies).where(retention_policies.c.id == policy.id).values(last_run_at=now))
                record(conn, "retention.completed", project=policy.project,
                       data={"policy": policy.name, "policy_id": policy.id, **summary})
        return {
            "policy": {"id": policy.id, "project": policy.project, "name": policy.name, "format": policy.format},
            "dry_run": dry_run,
            "evaluated_at": now,
            "summary": summary,
            "repositories": report_repos,
        }

    def _still_expirable(self, repository: str, a: Artifact, expired: set[str]) -> bool:
        """Re-check just before deleting: the tags are the ones we judged, and no index outside the
        expired set has started listing it. Anything else changed since evaluation wins over retention."""
        with self.db.read() as conn:
            repo_id = conn.execute(select(repositories.c.id).where(repositories.c.name == repository)).scalar()
            manifest_id = conn.execute(
                select(manifests.c.id).where(manifests.c.repository_id == repo_id, manifests.c.digest == a.digest)
            ).scalar()
            if manifest_id is None:
                return False
            current_tags = set(conn.execute(select(tags.c.name).where(tags.c.manifest_id == manifest_id)).scalars())
            parents = set(conn.execute(
                select(manifests.c.digest).join(manifest_references, and_(
                    manifest_references.c.manifest_id == manifests.c.id, manifest_references.c.kind == "manifest"))
                .where(manifests.c.repository_id == repo_id, manifest_references.c.digest == a.digest)
            ).scalars())
        return current_tags == set(a.tags) and parents <= expired

    def _delete(self, policy: RetentionPolicy, repository: str, a: Artifact, d: Decision, expired: set[str],
                actor: Principal) -> str:
        detail = {"policy": policy.name, "policy_id": policy.id, "rule": d.rule, "reason": d.reason, "tags": list(a.tags)}
        if not self._still_expirable(repository, a, expired):
            return "skipped: changed since evaluation"
        try:
            self.manifests.delete(repository, None, a.digest, via="retention",
                                  reason={"policy": policy.name, "policy_id": policy.id, "rule": d.rule})
        except ManifestUnknown:
            return "skipped: already deleted"
        except DockyardError as exc:  # e.g. DENIED from the tag policy: nothing was deleted
            self.audit.record(actor=actor, action="retention.delete", object=f"{repository}@{a.digest}", outcome="failure",
                              project=policy.project, detail={**detail, "error": exc.message})
            return f"failed: {exc.message}"
        self.audit.record(actor=actor, action="retention.delete", object=f"{repository}@{a.digest}",
                          project=policy.project, detail=detail)
        return "deleted"

    # -- jobs --------------------------------------------------------------------------------------------

    def enqueue(self, policy_id: int, actor: Principal) -> int:
        if self.jobs is None:
            raise Unavailable("the job queue is not available; run the policy with ?sync=true")
        return self.jobs.enqueue(JOB_KIND, {"policy_id": policy_id, "trigger": "manual", "actor": actor.name,
                                            "actor_kind": actor.kind})

    def handle_job(self, payload: dict, progress: Callable[[dict], None]) -> dict:
        """Worker entry point for kind "retention" (scheduled or enqueued by POST …/run). Idempotent:
        a retry re-evaluates and finds the already-deleted manifests gone."""
        policy_id = int(payload["policy_id"])
        policy = self.get_by_id(policy_id)
        if policy is None:
            return {"skipped": f"retention policy {policy_id} no longer exists"}
        manual = payload.get("trigger") == "manual"
        if not policy.enabled and not manual:
            return {"skipped": f"retention policy {policy.name} is disabled"}
        actor = Principal(payload.get("actor_kind", "user"), payload["actor"]) if manual and payload.get("actor") else SYSTEM
        report = self.run(policy_id, actor=actor, progress=progress)
        deleted = [
            {"repository": repo["repository"], "digest": e["digest"], "rule": e["rule"]}
            for repo in report["repositories"] for e in repo["decisions"] if e.get("outcome") == "deleted"
        ]
        return {"policy_id": policy_id, "summary": report["summary"], "deleted": deleted[:MAX_JOB_DELETIONS_LISTED]}
