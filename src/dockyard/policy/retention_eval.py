"""Deciding, per artifact, keep or expire, and saying why: the ECR evaluation rules, native rules, protections.

Pure functions over `Artifact` snapshots and a `now`, so unit tests drive them with a fixed clock and
the dry run and the real run can never disagree. Every decision names the rule that made it and
carries a sentence a person can read ("expired by rule 2: untagged, pushed 9 days ago").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import semver

from dockyard.policy.retention import EcrRule, NativeRule

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Artifact:
    """One manifest in one repository, as retention sees it."""

    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime
    last_pulled_at: datetime | None = None
    media_type: str = ""
    children: tuple[str, ...] = ()  # manifests an index references
    subject: str | None = None  # the manifest this one refers to (signature, SBOM, …)


@dataclass
class Decision:
    digest: str
    tags: list[str]
    action: str  # keep | expire
    rule: int | None  # rule number (ECR rulePriority, native position) that decided; None: no rule
    reason: str
    protection: dict | None = field(default=None)  # {kind, by, would_expire_by_rule} when a protection overrode expiry

    def to_dict(self) -> dict:
        return {
            "digest": self.digest,
            "tags": self.tags,
            "action": self.action,
            "rule": self.rule,
            "reason": self.reason,
            "protection": self.protection,
        }


def _days(delta: timedelta) -> int:
    return max(0, int(delta / DAY))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _newest_first(items: Iterable[Artifact]) -> list[Artifact]:
    # Ties broken by digest so the same input always gives the same answer.
    return sorted(items, key=lambda a: (a.pushed_at, a.digest), reverse=True)


def _pull_phrase(a: Artifact, now: datetime) -> str:
    if a.last_pulled_at is None:
        return f"never pulled, pushed {_plural(_days(now - a.pushed_at), 'day')} ago"
    return f"last pulled {_plural(_days(now - a.last_pulled_at), 'day')} ago"


# -- ECR ------------------------------------------------------------------------------------------------


def evaluate_ecr(rules: list[EcrRule], artifacts: list[Artifact], now: datetime) -> dict[str, Decision]:
    """AWS's evaluation rules: priority order; an image is expired by at most one rule; an image matched
    by a higher-priority rule's selection cannot be expired by a lower one (which still counts it);
    imageCountMoreThan keeps the newest by push time, so the oldest expire first."""
    decisions: dict[str, Decision] = {}
    claimed: set[str] = set()
    for rule in sorted(rules, key=lambda r: r.priority):
        selected = _newest_first(a for a in artifacts if rule.selects(a.tags))
        for position, a in enumerate(selected, start=1):
            if a.digest in claimed:
                continue
            expire, why = _ecr_verdict(rule, a, position, now)
            prefix = "expired" if expire else "kept"
            decisions[a.digest] = Decision(
                a.digest, list(a.tags), "expire" if expire else "keep", rule.priority, f"{prefix} by rule {rule.priority}: {why}"
            )
        claimed.update(a.digest for a in selected)
    for a in artifacts:
        if a.digest not in decisions:
            decisions[a.digest] = Decision(a.digest, list(a.tags), "keep", None, "kept: no rule selected it")
    return decisions


def _ecr_verdict(rule: EcrRule, a: Artifact, position: int, now: datetime) -> tuple[bool, str]:
    n = rule.count_number
    if rule.count_type == "imageCountMoreThan":
        if position <= n:
            return False, f"among the {n} most recent {rule.noun}"
        return True, f"{rule.label}, number {position} by push time (only the {n} most recent {rule.noun} are kept)"
    if rule.count_type == "sinceImagePushed":
        age = now - a.pushed_at
        phrase = f"{rule.label}, pushed {_plural(_days(age), 'day')} ago"
        return (True, phrase) if age > n * DAY else (False, f"{phrase} (expires after {_plural(n, 'day')})")
    # sinceImagePulled: an image never pulled counts from its push time.
    reference = a.last_pulled_at or a.pushed_at
    phrase = f"{rule.label}, {_pull_phrase(a, now)}"
    return (True, phrase) if now - reference > n * DAY else (False, f"{phrase} (expires after {_plural(n, 'day')})")


# -- native ---------------------------------------------------------------------------------------------


def version_of(tag: str) -> semver.Version | None:
    """A tag's semantic version (a leading `v` allowed; `1` and `1.2` read as 1.0.0 and 1.2.0), or None."""
    text = tag[1:] if tag[:1] in ("v", "V") else tag
    try:
        return semver.Version.parse(text, optional_minor_and_patch=True)
    except (ValueError, TypeError):
        return None


def _semver_order(rule: NativeRule, items: list[Artifact]) -> list[Artifact]:
    """Highest version first (an artifact's version: the highest among its tags the rule matches).
    Artifacts with no semver tag come after every versioned one, newest push first among themselves."""

    def best(a: Artifact) -> semver.Version | None:
        versions = [v for v in (version_of(t) for t in rule.matching_tags(a.tags)) if v is not None]
        return max(versions) if versions else None

    versioned = [(best(a), a) for a in items]
    with_version = sorted(
        ((v, a) for v, a in versioned if v is not None), key=lambda va: (va[0], va[1].pushed_at, va[1].digest), reverse=True
    )
    without = _newest_first(a for v, a in versioned if v is None)
    return [a for _, a in with_version] + without


def _ordered(rule: NativeRule, items: list[Artifact]) -> list[Artifact]:
    if rule.order == "semver":
        return _semver_order(rule, items)
    if rule.order == "pulled":
        never = _newest_first(a for a in items if a.last_pulled_at is None)
        pulled = sorted((a for a in items if a.last_pulled_at is not None),
                        key=lambda a: (a.last_pulled_at, a.pushed_at, a.digest), reverse=True)
        return pulled + never
    return _newest_first(items)


_ORDER_WORDS = {"pushed": "most recently pushed", "semver": "highest versions of", "pulled": "most recently pulled"}


def _kept_by(rule: NativeRule, selected: list[Artifact], now: datetime) -> dict[str, str]:
    """digest -> why this keep rule keeps it."""
    if rule.count is not None:
        ordered = _ordered(rule, selected)
        words = _ORDER_WORDS[rule.order]
        return {a.digest: f"among the {rule.count} {words} {rule.label}" for a in ordered[: rule.count]}
    if rule.pushed_within_days is not None:
        limit = rule.pushed_within_days
        return {
            a.digest: f"{rule.label}, pushed {_plural(_days(now - a.pushed_at), 'day')} ago (within {limit})"
            for a in selected
            if now - a.pushed_at <= limit * DAY
        }
    if rule.pulled_within_days is not None:
        limit = rule.pulled_within_days
        return {
            a.digest: f"{rule.label}, last pulled {_plural(_days(now - a.last_pulled_at), 'day')} ago (within {limit})"
            for a in selected
            if a.last_pulled_at is not None and now - a.last_pulled_at <= limit * DAY
        }
    return {a.digest: f"matches {rule.label}" for a in selected}


def _delete_verdict(rule: NativeRule, a: Artifact, now: datetime) -> tuple[bool, str]:
    """Whether every condition of a delete rule holds, and the phrase that explains it."""
    what = rule.label if not a.tags else ", ".join(rule.matching_tags(a.tags) or a.tags)
    if not a.tags:
        what = "untagged"
    parts = [what]
    ok = True
    if rule.pushed_older_than_days is None and rule.pulled_older_than_days is None and rule.never_pulled is None:
        parts.append("not kept by any keep rule")
    if rule.pushed_older_than_days is not None:
        age = now - a.pushed_at
        parts.append(f"pushed {_plural(_days(age), 'day')} ago")
        if age <= rule.pushed_older_than_days * DAY:
            ok = False
            parts[-1] += f" (needs more than {rule.pushed_older_than_days})"
    if rule.never_pulled is not None:
        if rule.never_pulled != (a.last_pulled_at is None):
            ok = False
        parts.append("never pulled" if a.last_pulled_at is None else f"last pulled {_plural(_days(now - a.last_pulled_at), 'day')} ago")
    if rule.pulled_older_than_days is not None:
        reference = a.last_pulled_at or a.pushed_at
        if rule.never_pulled is None:
            parts.append(_pull_phrase(a, now))
        if now - reference <= rule.pulled_older_than_days * DAY:
            ok = False
            parts[-1] += f" (needs more than {rule.pulled_older_than_days})"
    return ok, ", ".join(parts)


def evaluate_native(rules: list[NativeRule], artifacts: list[Artifact], now: datetime) -> dict[str, Decision]:
    """Keep rules override delete rules: an artifact any keep rule keeps is kept (the first such rule is
    named); otherwise the first delete rule whose selection and conditions all hold expires it."""
    keep_reasons: dict[str, tuple[int, str]] = {}
    for rule in rules:
        if rule.action != "keep":
            continue
        selected = [a for a in artifacts if rule.selects(a.tags)]
        for digest, why in _kept_by(rule, selected, now).items():
            keep_reasons.setdefault(digest, (rule.number, why))
    decisions: dict[str, Decision] = {}
    for a in artifacts:
        if a.digest in keep_reasons:
            number, why = keep_reasons[a.digest]
            decisions[a.digest] = Decision(a.digest, list(a.tags), "keep", number, f"kept by rule {number}: {why}")
            continue
        near_miss: tuple[int, str] | None = None
        for rule in rules:
            if rule.action != "delete" or not rule.selects(a.tags):
                continue
            ok, why = _delete_verdict(rule, a, now)
            if ok:
                decisions[a.digest] = Decision(a.digest, list(a.tags), "expire", rule.number, f"expired by rule {rule.number}: {why}")
                break
            near_miss = near_miss or (rule.number, why)
        else:
            if near_miss is not None:
                decisions[a.digest] = Decision(
                    a.digest, list(a.tags), "keep", None, f"kept: not expired by rule {near_miss[0]}: {near_miss[1]}"
                )
            else:
                decisions[a.digest] = Decision(a.digest, list(a.tags), "keep", None, "kept: no rule selected it")
    return decisions


def evaluate(rules: list[EcrRule] | list[NativeRule], artifacts: list[Artifact], now: datetime) -> dict[str, Decision]:
    if rules and isinstance(rules[0], EcrRule):
        return evaluate_ecr(rules, artifacts, now)  # type: ignore[arg-type]
    return evaluate_native(rules, artifacts, now)  # type: ignore[arg-type]


# -- protections ----------------------------------------------------------------------------------------


def protect(
    artifacts: list[Artifact],
    decisions: dict[str, Decision],
    immutable_rule: Callable[[str], str | None] = lambda tag: None,
) -> dict[str, Decision]:
    """Overrule expiry where deleting would break something alive (design §2):
    an immutable tag; a child of an index that stays; a referrer whose subject stays.
    Repeats until nothing changes, because protecting an index protects its children in turn."""
    by_digest = {a.digest: a for a in artifacts}

    def overrule(d: Decision, kind: str, by: str, reason: str) -> None:
        d.protection = {"kind": kind, "by": by, "would_expire_by_rule": d.rule}
        d.action, d.reason = "keep", reason

    for d in decisions.values():
        if d.action != "expire":
            continue
        for tag in d.tags:
            rule = immutable_rule(tag)
            if rule is not None:
                overrule(d, "immutable-tag", tag, f"protected: immutable tag {tag} ({rule})")
                break
    changed = True
    while changed:
        changed = False
        kept = {digest for digest, d in decisions.items() if d.action == "keep"}
        parents: dict[str, str] = {}
        for digest in sorted(kept):
            for child in by_digest[digest].children:
                parents.setdefault(child, digest)
        for digest, d in decisions.items():
            if d.action != "expire":
                continue
            if digest in parents:
                overrule(d, "index-child", parents[digest], f"protected: child of index {parents[digest]}")
                changed = True
            elif by_digest[digest].subject in kept:
                subject = by_digest[digest].subject
                overrule(d, "referrer", subject, f"protected: referrer of kept {subject}")
                changed = True
    return decisions


def deletion_order(artifacts: list[Artifact], expired: set[str]) -> list[Artifact]:
    """Indexes before the manifests they list and referrers before subjects, oldest first otherwise,
    so a reader never sees an index whose child is already gone."""
    chosen = [a for a in artifacts if a.digest in expired]
    return sorted(chosen, key=lambda a: (0 if a.children else 1 if a.subject else 2, a.pushed_at, a.digest))
