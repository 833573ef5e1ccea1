"""Retention policy documents: the AWS ECR lifecycle JSON (accepted as is) and Dockyard's native rule form.

Both are parsed once, when a policy is written, into rule objects that `policy.retention_eval` runs;
a document that breaks a rule is refused with INVALID_REQUEST naming the rule and the field, so a
typo never silently deletes (or keeps) the wrong images. docs/retention.md documents both forms.
No database and no HTTP here: the same code validates API input and decides in the retention job.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import re2

from dockyard.errors import InvalidRequest
from dockyard.policy.tag_patterns import glob_matches, validate_tag_glob

FORMATS = ("ecr", "native")
MAX_RULES = 50
MAX_DAYS = 36500
MAX_COUNT = 100000


# -- shared ---------------------------------------------------------------------------------------


def _fail(rule: int | str | None, message: str, field: str | None = None) -> InvalidRequest:
    where = f"rule {rule}: " if rule is not None else ""
    detail: dict[str, Any] = {}
    if rule is not None:
        detail["rule"] = rule
    if field is not None:
        detail["field"] = field
    return InvalidRequest(f"{where}{message}", detail=detail or None)


def _positive_int(value: Any, rule: int | str, field: str, limit: int) -> int:
    # bool is an int subclass; `true` is not a count.
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _fail(rule, f"{field} must be an integer greater than 0", field)
    if value > limit:
        raise _fail(rule, f"{field} must be at most {limit}", field)
    return value


def _string_list(value: Any, rule: int | str, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(rule, f"{field} must be a non-empty list of non-empty strings", field)
    return tuple(value)


def _unknown_keys(obj: dict, allowed: set[str], rule: int | str | None, where: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise _fail(rule, f"unknown field{'s' if len(extra) > 1 else ''} in {where}: {', '.join(extra)}", extra[0])


def load_document(document: Any) -> dict:
    """The policy JSON, given as an object or as a JSON string."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise InvalidRequest(f"policy document is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidRequest("policy document must be a JSON object with a `rules` list")
    rules = document.get("rules")
    if not isinstance(rules, list) or not rules:
        raise InvalidRequest("policy document must have a non-empty `rules` list", detail={"field": "rules"})
    if len(rules) > MAX_RULES:
        raise InvalidRequest(f"a policy has at most {MAX_RULES} rules", detail={"field": "rules"})
    return document


# -- AWS ECR lifecycle policy -----------------------------------------------------------------------

ECR_COUNT_TYPES = ("imageCountMoreThan", "sinceImagePushed", "sinceImagePulled")
_ECR_MAX_WILDCARDS = 4


@functools.lru_cache(maxsize=1024)
def ecr_wildcard(pattern: str):
    """ECR's tagPatternList syntax: `*` matches any run of characters; everything else is literal.
    Compiled with RE2: `.*a.*a.*a.*b` backtracks polynomially in Python's engine, linearly here."""
    return re2.compile("".join(".*" if ch == "*" else re2.escape(ch) for ch in pattern))


@dataclass(frozen=True)
class EcrRule:
    priority: int
    description: str | None
    tag_status: str  # tagged | untagged | any
    patterns: tuple[str, ...]
    prefixes: tuple[str, ...]
    count_type: str
    count_number: int

    @property
    def label(self) -> str:
        """How messages name what the rule selects, e.g. `tagged v*` or `untagged`."""
        if self.tag_status != "tagged":
            return self.tag_status
        if self.patterns:
            return " and ".join(self.patterns)
        return " and ".join(f"{p}*" for p in self.prefixes)

    @property
    def noun(self) -> str:
        """`v*`, `untagged images` or `images`, for "among the 10 most recent …"."""
        return {"tagged": self.label, "untagged": "untagged images", "any": "images"}[self.tag_status]

    def selects(self, tags: tuple[str, ...]) -> bool:
        if self.tag_status == "any":
            return True
        if self.tag_status == "untagged":
            return not tags
        if not tags:
            return False
        # Several entries are AND-ed: every entry must match one of the image's tags.
        if self.patterns:
            return all(any(ecr_wildcard(p).fullmatch(t) for t in tags) for p in self.patterns)
        return all(any(t.startswith(p) for t in tags) for p in self.prefixes)


_ECR_RULE_KEYS = {"rulePriority", "description", "selection", "action"}
_ECR_SELECTION_KEYS = {"tagStatus", "tagPatternList", "tagPrefixList", "countType", "countUnit", "countNumber", "storageClass"}


def parse_ecr(document: Any) -> list[EcrRule]:
    """Validate like ECR's PutLifecyclePolicy; rules come back in priority order."""
    doc = load_document(document)
    _unknown_keys(doc, {"rules"}, None, "the policy document")
    rules: list[EcrRule] = []
    for index, raw in enumerate(doc["rules"], start=1):
        rules.append(_parse_ecr_rule(raw, index))
    priorities = [r.priority for r in rules]
    duplicate = next((p for p in priorities if priorities.count(p) > 1), None)
    if duplicate is not None:
        raise _fail(duplicate, "rulePriority must be unique; two rules use it", "rulePriority")
    rules.sort(key=lambda r: r.priority)
    untagged = [r.priority for r in rules if r.tag_status == "untagged"]
    if len(untagged) > 1:
        raise _fail(untagged[1], f"only one rule may select untagged images (rule {untagged[0]} already does)", "tagStatus")
    for rule in rules[:-1]:
        if rule.tag_status == "any":
            raise _fail(rule.priority, "a rule with tagStatus any must have the highest rulePriority", "rulePriority")
    return rules


def _parse_ecr_rule(raw: Any, index: int) -> EcrRule:
    where: int | str = f"#{index}"
    if not isinstance(raw, dict):
        raise _fail(where, "must be an object")
    priority = raw.get("rulePriority")
    if priority is None:
        raise _fail(where, "rulePriority is required", "rulePriority")
    priority = _positive_int(priority, where, "rulePriority", 999)
    _unknown_keys(raw, _ECR_RULE_KEYS, priority, "the rule")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise _fail(priority, "description must be a string", "description")
    action = raw.get("action")
    if not isinstance(action, dict) or "type" not in action:
        raise _fail(priority, "action.type is required", "action.type")
    _unknown_keys(action, {"type", "targetStorageClass"}, priority, "action")
    if action["type"] != "expire":
        raise _fail(priority, f"action.type {action['type']!r} is not supported; use expire", "action.type")
    selection = raw.get("selection")
    if not isinstance(selection, dict):
        raise _fail(priority, "selection is required", "selection")
    _unknown_keys(selection, _ECR_SELECTION_KEYS, priority, "selection")
    if selection.get("storageClass", "standard") != "standard":
        raise _fail(priority, "selection.storageClass: only standard is supported", "selection.storageClass")
    status = selection.get("tagStatus")
    if status not in ("tagged", "untagged", "any"):
        raise _fail(priority, "selection.tagStatus must be tagged, untagged or any", "selection.tagStatus")
    has_patterns, has_prefixes = "tagPatternList" in selection, "tagPrefixList" in selection
    patterns: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    if status == "tagged":
        if has_patterns == has_prefixes:
            raise _fail(priority, "tagStatus tagged needs tagPatternList or tagPrefixList (exactly one of them)",
                        "selection.tagPatternList")
        if has_patterns:
            patterns = _string_list(selection["tagPatternList"], priority, "selection.tagPatternList")
            for p in patterns:
                if p.count("*") > _ECR_MAX_WILDCARDS:
                    raise _fail(priority, f"tag pattern {p!r} has more than {_ECR_MAX_WILDCARDS} wildcards",
                                "selection.tagPatternList")
        else:
            prefixes = _string_list(selection["tagPrefixList"], priority, "selection.tagPrefixList")
    elif has_patterns or has_prefixes:
        raise _fail(priority, f"tagStatus {status} must not have tagPatternList or tagPrefixList", "selection.tagStatus")
    count_type = selection.get("countType")
    if count_type == "sinceImageTransitioned":
        raise _fail(priority, "countType sinceImageTransitioned is not supported (no archive storage class)",
                    "selection.countType")
    if count_type not in ECR_COUNT_TYPES:
        raise _fail(priority, f"selection.countType must be one of {', '.join(ECR_COUNT_TYPES)}", "selection.countType")
    if count_type == "imageCountMoreThan":
        if "countUnit" in selection:
            raise _fail(priority, "countUnit is only allowed with sinceImagePushed or sinceImagePulled",
                        "selection.countUnit")
        limit = MAX_COUNT
    else:
        if selection.get("countUnit") != "days":
            raise _fail(priority, f"countType {count_type} needs countUnit days", "selection.countUnit")
        limit = MAX_DAYS
    if "countNumber" not in selection:
        raise _fail(priority, "selection.countNumber is required", "selection.countNumber")
    number = _positive_int(selection["countNumber"], priority, "selection.countNumber", limit)
    return EcrRule(priority, description, status, patterns, prefixes, count_type, number)


# -- native rules -------------------------------------------------------------------------------------

ORDERS = ("pushed", "semver", "pulled")
_NATIVE_KEYS = {
    "action", "description", "tags", "untagged",
    "count", "order", "pushed_within_days", "pulled_within_days",  # keep
    "pushed_older_than_days", "pulled_older_than_days", "never_pulled",  # delete
}
_KEEP_ONLY = ("count", "order", "pushed_within_days", "pulled_within_days")
_DELETE_ONLY = ("pushed_older_than_days", "pulled_older_than_days", "never_pulled")


@dataclass(frozen=True)
class NativeRule:
    number: int  # 1-based position in the document
    action: str  # keep | delete
    description: str | None
    tags: tuple[str, ...]  # tag globs; an artifact is selected when any tag matches any glob
    untagged: bool  # also (or only) select artifacts without tags
    count: int | None = None
    order: str = "pushed"
    pushed_within_days: int | None = None
    pulled_within_days: int | None = None
    pushed_older_than_days: int | None = None
    pulled_older_than_days: int | None = None
    never_pulled: bool | None = None

    @property
    def label(self) -> str:
        parts = [" or ".join(self.tags)] if self.tags else []
        if self.untagged:
            parts.append("untagged")
        return " or ".join(parts)

    def matching_tags(self, tags: tuple[str, ...]) -> list[str]:
        return [t for t in tags if any(glob_matches(t, p) for p in self.tags)]

    def selects(self, tags: tuple[str, ...]) -> bool:
        if not tags:
            return self.untagged
        return bool(self.tags) and any(glob_matches(t, p) for t in tags for p in self.tags)


def parse_native(document: Any) -> list[NativeRule]:
    doc = load_document(document)
    _unknown_keys(doc, {"rules"}, None, "the policy document")
    rules = [_parse_native_rule(raw, n) for n, raw in enumerate(doc["rules"], start=1)]
    if not any(r.action == "delete" for r in rules):
        raise InvalidRequest("a native policy needs at least one delete rule (keep rules only protect)",
                             detail={"field": "rules"})
    return rules


def _parse_native_rule(raw: Any, number: int) -> NativeRule:
    if not isinstance(raw, dict):
        raise _fail(number, "must be an object")
    _unknown_keys(raw, _NATIVE_KEYS, number, "the rule")
    action = raw.get("action")
    if action not in ("keep", "delete"):
        raise _fail(number, "action must be keep or delete", "action")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise _fail(number, "description must be a string", "description")
    tags: tuple[str, ...] = ()
    if "tags" in raw:
        tags = _string_list(raw["tags"], number, "tags")
        for pattern in tags:
            try:
                validate_tag_glob(pattern)
            except InvalidRequest as exc:
                raise _fail(number, exc.message, "tags") from exc
    untagged = raw.get("untagged", False)
    if not isinstance(untagged, bool):
        raise _fail(number, "untagged must be true or false", "untagged")
    if not tags and not untagged:
        raise _fail(number, "select something: give tags (globs) and/or untagged: true", "tags")
    wrong = [k for k in (_DELETE_ONLY if action == "keep" else _KEEP_ONLY) if k in raw]
    if wrong:
        raise _fail(number, f"{wrong[0]} is not allowed in a {action} rule", wrong[0])
    values: dict[str, Any] = {}
    for key in ("count", "pushed_within_days", "pulled_within_days", "pushed_older_than_days", "pulled_older_than_days"):
        if key in raw:
            values[key] = _positive_int(raw[key], number, key, MAX_COUNT if key == "count" else MAX_DAYS)
    if action == "keep":
        given = [k for k in ("count", "pushed_within_days", "pulled_within_days") if k in values]
        if len(given) > 1:
            raise _fail(number, f"a keep rule takes one of count, pushed_within_days, pulled_within_days (got {', '.join(given)})",
                        given[1])
        if "order" in raw:
            if "count" not in values:
                raise _fail(number, "order only applies together with count", "order")
            if raw["order"] not in ORDERS:
                raise _fail(number, f"order must be one of {', '.join(ORDERS)}", "order")
            values["order"] = raw["order"]
    if "never_pulled" in raw:
        if not isinstance(raw["never_pulled"], bool):
            raise _fail(number, "never_pulled must be true or false", "never_pulled")
        if raw["never_pulled"] and "pulled_older_than_days" in values:
            raise _fail(number, "never_pulled: true contradicts pulled_older_than_days", "never_pulled")
        values["never_pulled"] = raw["never_pulled"]
    return NativeRule(number, action, description, tags, untagged, **values)


def parse_policy(fmt: str, document: Any) -> list[EcrRule] | list[NativeRule]:
    if fmt == "ecr":
        return parse_ecr(document)
    if fmt == "native":
        return parse_native(document)
    raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}", detail={"field": "format"})
