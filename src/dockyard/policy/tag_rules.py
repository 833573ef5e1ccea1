"""TagPolicy: the ONE place that decides whether a tag may be created, moved or removed.

Every writer judges the rules first (`prepare`, a read transaction: all pattern matching happens
there, never under the write lock), then calls `check_tag_change` with those verdicts inside its own
write transaction, before it changes a tag:
manifest PUT (/v2), tag and manifest delete (/v2 and API), retag, promotion and retention (which
deletes through ManifestService). Checking in the writer's transaction means the rules and the
tag's current digest are read under the same lock as the change, so no writer can slip past a rule.

Rules live in `tag_rules`, per project (`project_id`) or system-wide (`project_id IS NULL`):
- `immutable`: once a tag matching it exists, it may not point elsewhere or be deleted (re-pushing
  the same digest is allowed). A project admin may break glass with an `Override` (a reason is
  mandatory); the override is written to the audit log in the same transaction as the change.
- `deny`: a tag matching it may not be created or moved (e.g. `latest` in a production project).
- `require`: if any apply to the repository, a new or moved tag must match at least one.
Pattern syntax (one for every kind: globs, or `re:` + a regex): policy/tag_patterns.py and docs/tag-rules.md.
Every refusal is 403 DENIED naming the rule: a policy refusal, which clients report once and do not
retry in other manifest formats as they do after a 400 (issue 15).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, or_, select

from dockyard.auth.principals import Principal
from dockyard.errors import Denied, InvalidRequest, NotFound, TagRulesChanged
from dockyard.metadata.lookups import require_project_id
from dockyard.metadata.db import Database, aware, utcnow
from dockyard.metadata.models import audit_events, manifests, projects, repositories, tag_rules
from dockyard.policy.access import AccessPolicy, project_of
from dockyard.policy.tag_patterns import (
    glob_matches,
    is_referrer_tag,
    names_referrer_tags,
    tag_matches,
    validate_repository_glob,
    validate_tag_pattern,
)

KINDS = ("immutable", "deny", "require")
MAX_RULES_PER_SCOPE = 200
MAX_REASON_LENGTH = 500


@dataclass(frozen=True)
class Rule:
    id: int
    project: str | None  # None: system-wide
    kind: str
    repository_pattern: str
    tag_pattern: str
    description: str | None
    created_at: datetime
    created_by: str | None

    def describe(self) -> str:
        """How error messages and audit entries name the rule, e.g. `rule 3: v* in **`."""
        scope = "system rule" if self.project is None else "rule"
        verb = "" if self.kind == "immutable" else f"{self.kind} "
        return f"{scope} {self.id}: {verb}{self.tag_pattern} in {self.repository_pattern}"

    def applies_to_repository(self, repository: str) -> bool:
        # Project rules see the path inside the project (`app/x` of `team/app/x`); system rules the full name.
        subject = repository if self.project is None else (repository.split("/", 1)[1] if "/" in repository else "")
        return glob_matches(subject, self.repository_pattern)

    def matches_tag(self, tag: str) -> bool:
        return tag_matches(tag, self.tag_pattern)

    @property
    def key(self) -> tuple[int, str, str, str]:
        """What a verdict about this rule depends on: a rule re-created with another pattern is another rule."""
        return (self.id, self.kind, self.repository_pattern, self.tag_pattern)


@dataclass(frozen=True)
class TagVerdicts:
    """Every pattern match a write needs, computed BEFORE its write transaction opens.

    Matching is linear (RE2) but still work; none of it may run while the write lock is held (issue 9,
    finding 3). Inside the transaction the rules are re-read (one cheap query) and looked up here; a
    rule or tag that was not judged beforehand (a rule created meanwhile) refuses the write with
    CONFLICT instead of matching under the lock."""

    repository: str
    applies: dict[tuple, bool]
    matches: dict[tuple, bool]

    def rule_applies(self, rule: Rule) -> bool:
        try:
            return self.applies[rule.key]
        except KeyError:
            raise TagRulesChanged(f"tag rules of {self.repository} changed during the request; try again",
                                  detail={"rule": rule.id}) from None

    def tag_matches(self, rule: Rule, tag: str) -> bool:
        try:
            return self.matches[(rule.key, tag)]
        except KeyError:
            raise TagRulesChanged(f"tag rules of {self.repository} changed during the request; try again",
                                  detail={"rule": rule.id, "tag": tag}) from None


@dataclass(frozen=True)
class Override:
    """Break glass: a project admin changes an immutable tag anyway. The reason is mandatory and audited."""

    actor: Principal
    reason: str
    source_ip: str | None = None
    user_agent: str | None = None


def make_override(actor: Principal, reason: str | None, source_ip: str | None = None, user_agent: str | None = None) -> Override | None:
    """An Override from an optional API parameter; an empty or blank reason is refused, not ignored."""
    if reason is None:
        return None
    reason = reason.strip()
    if not reason:
        raise InvalidRequest("override_reason must not be empty: say why the immutable tag has to change")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidRequest(f"override_reason is longer than {MAX_REASON_LENGTH} characters")
    return Override(actor, reason, source_ip, user_agent)


def _matches(rule: Rule, tag: str, verdicts: TagVerdicts | None) -> bool:
    return rule.matches_tag(tag) if verdicts is None else verdicts.tag_matches(rule, tag)


def _rule(row) -> Rule:
    return Rule(
        id=row.id,
        project=row.project,
        kind=row.kind,
        repository_pattern=row.repository_pattern,
        tag_pattern=row.tag_pattern,
        description=row.description,
        created_at=aware(row.created_at),
        created_by=row.created_by,
    )


_RULE_COLUMNS = (
    tag_rules.c.id,
    projects.c.name.label("project"),
    tag_rules.c.kind,
    tag_rules.c.repository_pattern,
    tag_rules.c.tag_pattern,
    tag_rules.c.description,
    tag_rules.c.created_at,
    tag_rules.c.created_by,
)


class TagPolicy:
    def __init__(self, db: Database, access: AccessPolicy | None = None, *, record_event=None):
        self.db = db
        self.access = access or AccessPolicy(db)
        # domain/events.py `record`, given by the composition root (policy sits below domain): rule
        # changes go on the change feed in the same transaction.
        self.record_event = record_event or (lambda conn, type, **fields: None)

    # -- reading the rules that apply ------------------------------------------------------

    @staticmethod
    def _candidate_rules(conn: Connection, repository: str) -> list[Rule]:
        """Every rule of `repository`'s project plus every system rule (one query, no matching)."""
        rows = conn.execute(
            select(*_RULE_COLUMNS)
            .select_from(tag_rules.outerjoin(projects, projects.c.id == tag_rules.c.project_id))
            .where(or_(tag_rules.c.project_id.is_(None), projects.c.name == project_of(repository)))
            .order_by(tag_rules.c.project_id.is_(None), tag_rules.c.id)
        ).all()
        return [_rule(r) for r in rows]

    @classmethod
    def rules_for(cls, conn: Connection, repository: str, verdicts: TagVerdicts | None = None) -> list[Rule]:
        """Every rule of `repository`'s project plus the system rules whose repository pattern matches it.

        In a write transaction `verdicts` (from `prepare`) is required: nothing is matched there."""
        rules = cls._candidate_rules(conn, repository)
        if verdicts is not None:
            return [r for r in rules if verdicts.rule_applies(r)]
        if rules and conn.get_execution_options().get("dockyard_immediate"):
            raise RuntimeError("tag rules must be judged before the write transaction opens: pass TagPolicy.prepare()")
        return [r for r in rules if r.applies_to_repository(repository)]

    def prepare(self, repository: str, tags: Iterable[str]) -> TagVerdicts:
        """Judge every rule against `repository` and each of `tags`, in a read transaction, before a write."""
        with self.db.read() as conn:
            rules = self._candidate_rules(conn, repository)
        applies = {r.key: r.applies_to_repository(repository) for r in rules}
        tags = list(dict.fromkeys(tags))
        matches = {(r.key, tag): r.matches_tag(tag) for r in rules if applies[r.key] for tag in tags}
        return TagVerdicts(repository, applies, matches)

    def is_immutable(self, conn: Connection, repository: str, tag: str, verdicts: TagVerdicts | None = None) -> Rule | None:
        """The first immutable rule protecting `tag` in `repository`, or None."""
        return self._immutable_rule(self.rules_for(conn, repository, verdicts), tag, verdicts,
                                    referrer_tag=self._is_live_referrer_tag(conn, repository, tag))

    @staticmethod
    def _is_live_referrer_tag(conn: Connection, repository: str, tag: str) -> bool:
        """A fallback referrer tag is exempt from rules only while it names a manifest of this repository:
        otherwise any image could be pushed past a require or immutable `*` rule as `sha256-<any hex>`."""
        if not is_referrer_tag(tag):
            return False
        subject = tag.split(".", 1)[0].replace("-", ":", 1)
        return conn.execute(
            select(manifests.c.id)
            .join(repositories, repositories.c.id == manifests.c.repository_id)
            .where(repositories.c.name == repository, manifests.c.digest == subject)
            .limit(1)
        ).first() is not None

    @staticmethod
    def _immutable_rule(rules: list[Rule], tag: str, verdicts: TagVerdicts | None = None, *,
                        referrer_tag: bool) -> Rule | None:
        for rule in rules:
            if rule.kind != "immutable" or not _matches(rule, tag, verdicts):
                continue
            if referrer_tag and not names_referrer_tags(rule.tag_pattern):
                continue
            return rule
        return None

    # -- the check every writer calls --------------------------------------------------------

    def check_tag_change(
        self,
        conn: Connection,
        repository: str,
        tag: str,
        current_digest: str | None,
        new_digest: str | None,
        *,
        override: Override | None = None,
        verdicts: TagVerdicts | None = None,
    ) -> None:
        """Raise unless `tag` may go from `current_digest` to `new_digest` (None: deleted / absent).

        DENIED names the immutable, deny or require rule. Same digest again
        is always allowed. With `override`, a project admin may still change an immutable tag."""
        if new_digest is not None and new_digest == current_digest:
            return  # re-push of the same digest: nothing changes
        if current_digest is None and new_digest is None:
            return
        rules = self.rules_for(conn, repository, verdicts)
        if not rules:
            return
        referrer_tag = self._is_live_referrer_tag(conn, repository, tag)
        if new_digest is not None:
            self._check_name(rules, repository, tag, verdicts, referrer_tag=referrer_tag)
        if current_digest is None:
            return  # creating a tag never breaks immutability
        rule = self._immutable_rule(rules, tag, verdicts, referrer_tag=referrer_tag)
        if rule is None:
            return
        if override is None:
            action = "cannot be deleted" if new_digest is None else "cannot be moved to another digest"
            raise Denied(
                f"tag {tag} of {repository} is immutable ({rule.describe()}); it {action}; re-pushing the same digest "
                "is allowed, and a project admin may override with a reason (override_reason)",
                detail={"repository": repository, "tag": tag, "rule": rule.id, "digest": current_digest},
            )
        self._break_glass(conn, repository, tag, current_digest, new_digest, rule, override)

    @staticmethod
    def _check_name(rules: list[Rule], repository: str, tag: str, verdicts: TagVerdicts | None = None, *,
                    referrer_tag: bool) -> None:
        for rule in rules:
            if rule.kind == "deny" and _matches(rule, tag, verdicts):
                raise Denied(
                    f"tag {tag} is not allowed in {repository} ({rule.describe()})",
                    detail={"repository": repository, "tag": tag, "rule": rule.id},
                )
        required = [r for r in rules if r.kind == "require"]
        if not required or (referrer_tag and not any(names_referrer_tags(r.tag_pattern) for r in required)):
            return
        if not any(_matches(r, tag, verdicts) for r in required):
            names = "; ".join(r.describe() for r in required)
            raise Denied(
                f"tag {tag} of {repository} must match one of the required patterns ({names})",
                detail={"repository": repository, "tag": tag, "rules": [r.id for r in required]},
            )

    def _break_glass(
        self, conn: Connection, repository: str, tag: str, current: str, new: str | None, rule: Rule, override: Override
    ) -> None:
        project = project_of(repository)
        if "manage-policies" not in self.access.project_actions(override.actor, project):
            raise Denied(
                f"only an admin of project {project} may override an immutable tag ({rule.describe()})",
                detail={"repository": repository, "tag": tag, "rule": rule.id},
            )
        # Same transaction as the change: the override is on record exactly when the change happened.
        conn.execute(
            audit_events.insert().values(
                occurred_at=utcnow(),
                actor=override.actor.name or "anonymous",
                actor_kind=override.actor.kind,
                action="tag.override",
                object=f"{repository}:{tag}"[:500],
                project=project,
                outcome="success",
                source_ip=override.source_ip,
                user_agent=(override.user_agent or "")[:500] or None,
                detail=json.dumps(
                    {"rule": rule.id, "rule_text": rule.describe(), "reason": override.reason, "previous": current,
                     "digest": new, "operation": "delete" if new is None else "move"}
                ),
            )
        )

    # -- explaining the rules (dry run) ------------------------------------------------------

    def explain(self, repository: str, tag: str) -> dict:
        """Which rules apply to `repository` and match `tag`, and what the ONE check above would do with a push
        (creating the tag), an overwrite (moving it to another digest) and a delete. Changes nothing."""
        with self.db.read() as conn:
            candidates = self._candidate_rules(conn, repository)
            rules = [r for r in candidates if r.applies_to_repository(repository)]
            outcomes = {}
            for operation, current, new in (("push", None, "sha256:new"), ("overwrite", "sha256:old", "sha256:new"),
                                            ("delete", "sha256:old", None)):
                try:
                    self.check_tag_change(conn, repository, tag, current, new)
                    outcomes[operation] = {"allowed": True, "reason": None}
                except Denied as exc:
                    outcomes[operation] = {"allowed": False, "reason": exc.message}
        return {
            "repository": repository,
            "tag": tag,
            "rules": [{"rule": r, "matches": r.matches_tag(tag)} for r in rules],
            **outcomes,
        }

    # -- managing rules ------------------------------------------------------------------------

    def list_rules(self, project: str | None) -> list[Rule]:
        with self.db.read() as conn:
            condition = tag_rules.c.project_id.is_(None) if project is None else tag_rules.c.project_id == self._project_id(conn, project)
            rows = conn.execute(
                select(*_RULE_COLUMNS)
                .select_from(tag_rules.outerjoin(projects, projects.c.id == tag_rules.c.project_id))
                .where(condition)
                .order_by(tag_rules.c.id)
            ).all()
        return [_rule(r) for r in rows]

    def create_rule(
        self,
        project: str | None,
        kind: str,
        repository_pattern: str,
        tag_pattern: str,
        description: str | None = None,
        created_by: str | None = None,
    ) -> Rule:
        """Validate and store a rule; `project` None makes it system-wide."""
        if kind not in KINDS:
            raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}, not {kind!r}", detail={"kind": str(kind)[:50]})
        validate_repository_glob(repository_pattern)
        validate_tag_pattern(tag_pattern)
        if description is not None and len(description) > 500:
            raise InvalidRequest("description is longer than 500 characters")
        with self.db.write() as conn:
            project_id = None if project is None else self._project_id(conn, project)
            scope = tag_rules.c.project_id.is_(None) if project_id is None else tag_rules.c.project_id == project_id
            if conn.execute(select(func.count()).select_from(tag_rules).where(scope)).scalar_one() >= MAX_RULES_PER_SCOPE:
                raise InvalidRequest(f"at most {MAX_RULES_PER_SCOPE} tag rules per project (and system-wide)")
            rule_id = conn.execute(
                tag_rules.insert()
                .values(
                    project_id=project_id,
                    kind=kind,
                    repository_pattern=repository_pattern,
                    tag_pattern=tag_pattern,
                    description=description,
                    created_at=utcnow(),
                    created_by=created_by,
                )
                .returning(tag_rules.c.id)
            ).scalar_one()
            rule = self._get(conn, rule_id)
            self.record_event(conn, "policy.changed", project=project,
                              data={"kind": "tag_rules", "change": "created", "rule_id": rule_id, "rule": kind})
            return rule

    def delete_rule(self, project: str | None, rule_id: int) -> Rule:
        """Delete a rule of `project` (None: a system rule); NOT_FOUND if it belongs elsewhere."""
        with self.db.write() as conn:
            project_id = None if project is None else self._project_id(conn, project)
            rule = self._get(conn, rule_id)
            owner = conn.execute(select(tag_rules.c.project_id).where(tag_rules.c.id == rule_id)).scalar()
            if owner != project_id:
                raise NotFound(f"tag rule {rule_id} does not exist", detail={"id": rule_id})  # same answer as a missing one
            conn.execute(delete(tag_rules).where(tag_rules.c.id == rule_id))
            self.record_event(conn, "policy.changed", project=project,
                              data={"kind": "tag_rules", "change": "deleted", "rule_id": rule_id, "rule": rule.kind})
            return rule

    @staticmethod
    def _get(conn: Connection, rule_id: int) -> Rule:
        row = conn.execute(
            select(*_RULE_COLUMNS)
            .select_from(tag_rules.outerjoin(projects, projects.c.id == tag_rules.c.project_id))
            .where(tag_rules.c.id == rule_id)
        ).first()
        if row is None:
            raise NotFound(f"tag rule {rule_id} does not exist", detail={"id": rule_id})
        return _rule(row)

    _project_id = staticmethod(require_project_id)
