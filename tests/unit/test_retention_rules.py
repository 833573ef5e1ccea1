"""Retention rules without a database: ECR validation and evaluation, native rules, semver, protections.

Time is a fixed `NOW`; every artifact's push/pull time is set relative to it, so results never
depend on when the tests run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dockyard.errors import InvalidRequest
from dockyard.policy.retention import parse_ecr, parse_native, parse_policy
from dockyard.policy.retention_eval import Artifact, evaluate, protect, version_of

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

SEED_ECR = {"rules": [
    {"rulePriority": 1, "description": "Keep last 10 images tagged v*",
     "selection": {"tagStatus": "tagged", "tagPatternList": ["v*"], "countType": "imageCountMoreThan", "countNumber": 10},
     "action": {"type": "expire"}},
    {"rulePriority": 2, "description": "Expire untagged images older than 7 days",
     "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7},
     "action": {"type": "expire"}},
]}
SEED_NATIVE = {"rules": [
    {"action": "keep", "tags": ["v*"], "count": 10},
    {"action": "delete", "tags": ["v*"]},
    {"action": "delete", "untagged": True, "pushed_older_than_days": 7},
]}


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def art(n: int, tags=(), pushed_days: float = 1, pulled_days: float | None = None, **kw) -> Artifact:
    pulled = NOW - timedelta(days=pulled_days) if pulled_days is not None else None
    return Artifact(d(n), tuple(tags), NOW - timedelta(days=pushed_days), pulled, **kw)


def seed_artifacts() -> list[Artifact]:
    """12 v* releases (v1.0.0 oldest, pushed 30..19 days ago), `latest`, untagged 9 and 3 days old."""
    items = [art(i, [f"v1.{i}.0"], pushed_days=30 - i) for i in range(12)]
    items.append(art(100, ["latest"], pushed_days=40))
    items.append(art(200, pushed_days=9.5))
    items.append(art(201, pushed_days=3))
    return items


def reasons(rules, artifacts, now=NOW) -> dict[str, str]:
    return {k: v.reason for k, v in evaluate(rules, artifacts, now).items()}


# -- the seed policies, in both forms ---------------------------------------------------------------


def test_seed_policy_in_ecr_form():
    decisions = evaluate(parse_ecr(SEED_ECR), seed_artifacts(), NOW)
    for i in range(2, 12):
        assert decisions[d(i)].action == "keep"
        assert decisions[d(i)].reason == "kept by rule 1: among the 10 most recent v*"
    assert decisions[d(1)].reason == "expired by rule 1: v*, number 11 by push time (only the 10 most recent v* are kept)"
    assert decisions[d(0)].action == "expire" and decisions[d(0)].rule == 1
    assert decisions[d(200)].reason == "expired by rule 2: untagged, pushed 9 days ago"
    assert decisions[d(201)].reason == "kept by rule 2: untagged, pushed 3 days ago (expires after 7 days)"
    assert decisions[d(100)].reason == "kept: no rule selected it"
    assert {k for k, v in decisions.items() if v.action == "expire"} == {d(0), d(1), d(200)}


def test_seed_policy_in_native_form():
    decisions = evaluate(parse_native(SEED_NATIVE), seed_artifacts(), NOW)
    for i in range(2, 12):
        assert decisions[d(i)].reason == "kept by rule 1: among the 10 most recently pushed v*"
    assert decisions[d(0)].reason == "expired by rule 2: v1.0.0, not kept by any keep rule"
    assert decisions[d(200)].reason == "expired by rule 3: untagged, pushed 9 days ago"
    assert decisions[d(201)].reason == "kept: not expired by rule 3: untagged, pushed 3 days ago (needs more than 7)"
    assert decisions[d(100)].reason == "kept: no rule selected it"
    assert {k for k, v in decisions.items() if v.action == "expire"} == {d(0), d(1), d(200)}


def test_both_forms_agree_as_the_clock_moves():
    ecr, native = parse_ecr(SEED_ECR), parse_native(SEED_NATIVE)
    for days_later in (0, 4, 5, 20):
        now = NOW + timedelta(days=days_later)
        expired = lambda rules: {k for k, v in evaluate(rules, seed_artifacts(), now).items() if v.action == "expire"}  # noqa: E731
        assert expired(ecr) == expired(native)
    later = evaluate(ecr, seed_artifacts(), NOW + timedelta(days=5))
    assert later[d(201)].reason == "expired by rule 2: untagged, pushed 8 days ago"


# -- ECR semantics ---------------------------------------------------------------------------------------


def test_ecr_pattern_list_entries_are_anded_and_wildcards_work():
    rules = parse_ecr({"rules": [{"rulePriority": 1, "selection": {
        "tagStatus": "tagged", "tagPatternList": ["prod*", "*-amd64"], "countType": "imageCountMoreThan", "countNumber": 1},
        "action": {"type": "expire"}}]})
    items = [art(1, ["prod-1", "x-amd64"], 5), art(2, ["prod-2"], 4), art(3, ["prod-3-amd64"], 3), art(4, ["prod-4", "a-amd64"], 2)]
    r = evaluate(rules, items, NOW)
    assert r[d(2)].reason == "kept: no rule selected it"  # only one of the two entries matches
    assert r[d(4)].action == "keep" and r[d(3)].action == "expire" and r[d(1)].action == "expire"


def test_ecr_prefix_list():
    rules = parse_ecr({"rules": [{"rulePriority": 1, "selection": {
        "tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan", "countNumber": 1},
        "action": {"type": "expire"}}]})
    r = evaluate(rules, [art(1, ["v1"], 2), art(2, ["v2"], 1), art(3, ["x"], 3)], NOW)
    assert r[d(1)].reason == "expired by rule 1: v*, number 2 by push time (only the 1 most recent v* are kept)"
    assert r[d(2)].action == "keep" and r[d(3)].reason == "kept: no rule selected it"


def test_ecr_higher_priority_selection_shields_from_lower_rules():
    """AWS's documented example: prod* keep 1, beta* keep 1; A[prod-1,beta-1] B[prod-2,beta-2] C[beta-3]."""
    doc = {"rules": [
        {"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPatternList": ["prod*"],
                                          "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}},
        {"rulePriority": 2, "selection": {"tagStatus": "tagged", "tagPatternList": ["beta*"],
                                          "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}},
    ]}
    items = [art(1, ["prod-1", "beta-1"], 3), art(2, ["prod-2", "beta-2"], 2), art(3, ["beta-3"], 1)]
    r = evaluate(parse_ecr(doc), items, NOW)
    assert r[d(1)].action == "expire" and r[d(1)].rule == 1
    assert r[d(2)].action == "keep" and r[d(2)].rule == 1  # rule 2 counts it but cannot expire it
    assert r[d(3)].action == "keep" and r[d(3)].rule == 2


def test_ecr_any_rule_and_since_pulled():
    doc = {"rules": [
        {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                                          "countUnit": "days", "countNumber": 1}, "action": {"type": "expire"}},
        {"rulePriority": 5, "selection": {"tagStatus": "any", "countType": "sinceImagePulled",
                                          "countUnit": "days", "countNumber": 30}, "action": {"type": "expire"}},
    ]}
    items = [art(1, ["a"], 90, pulled_days=40), art(2, ["b"], 90, pulled_days=2), art(3, ["c"], 45), art(4, ["d"], 10)]
    r = reasons(parse_ecr(doc), items)
    assert r[d(1)] == "expired by rule 5: any, last pulled 40 days ago"
    assert r[d(2)] == "kept by rule 5: any, last pulled 2 days ago (expires after 30 days)"
    assert r[d(3)] == "expired by rule 5: any, never pulled, pushed 45 days ago"
    assert r[d(4)] == "kept by rule 5: any, never pulled, pushed 10 days ago (expires after 30 days)"


def _rule(priority=1, action=None, **selection):
    sel = {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7}
    sel.update(selection)
    sel = {k: v for k, v in sel.items() if v is not None}
    return {"rulePriority": priority, "selection": sel, "action": action or {"type": "expire"}}


@pytest.mark.parametrize(
    "rules, message",
    [
        ([_rule(tagStatus="tagged")], "rule 1: tagStatus tagged needs tagPatternList or tagPrefixList"),
        ([_rule(tagStatus="tagged", tagPatternList=["a*"], tagPrefixList=["a"])], "rule 1: tagStatus tagged needs"),
        ([_rule(3, tagPatternList=["a*"])], "rule 3: tagStatus untagged must not have tagPatternList"),
        ([_rule(1), _rule(2)], "rule 2: only one rule may select untagged images (rule 1 already does)"),
        ([_rule(1, tagStatus="any"), _rule(2, tagStatus="tagged", tagPrefixList=["v"])],
         "rule 1: a rule with tagStatus any must have the highest rulePriority"),
        ([_rule(4), _rule(4, tagStatus="tagged", tagPrefixList=["v"])], "rule 4: rulePriority must be unique"),
        ([_rule(countNumber=0)], "rule 1: selection.countNumber must be an integer greater than 0"),
        ([_rule(countNumber="7")], "rule 1: selection.countNumber must be an integer"),
        ([_rule(countType="imageCountMoreThan")], "rule 1: countUnit is only allowed with sinceImagePushed"),
        ([_rule(countUnit=None)], "rule 1: countType sinceImagePushed needs countUnit days"),
        ([_rule(countUnit="hours")], "rule 1: countType sinceImagePushed needs countUnit days"),
        ([_rule(countType="sinceImageTransitioned")], "rule 1: countType sinceImageTransitioned is not supported"),
        ([_rule(countType="newest")], "rule 1: selection.countType must be one of"),
        ([_rule(tagStatus="tagged", tagPatternList=["a*b*c*d*e*f"])], "rule 1: tag pattern 'a*b*c*d*e*f' has more than 4 wildcards"),
        ([_rule(action={"type": "transition", "targetStorageClass": "archive"})], "rule 1: action.type 'transition' is not supported"),
        ([{"selection": {}, "action": {"type": "expire"}}], "rule #1: rulePriority is required"),
        ([_rule(surprise=1)], "rule 1: unknown field in selection: surprise"),
        ([], "non-empty `rules` list"),
    ],
)
def test_ecr_validation_names_the_rule(rules, message):
    with pytest.raises(InvalidRequest) as info:
        parse_ecr({"rules": rules})
    assert message in info.value.message


def test_common_ecr_policy_untagged_plus_any_is_accepted():
    rules = parse_ecr({"rules": [_rule(1), _rule(2, tagStatus="any", countType="imageCountMoreThan", countUnit=None, countNumber=100)]})
    assert [r.priority for r in rules] == [1, 2]


# -- native semantics --------------------------------------------------------------------------------------


def test_semver_ordering_keeps_the_highest_versions():
    assert version_of("v1.10.0") > version_of("v1.9.0")
    assert version_of("2.0.0-rc.1") < version_of("2.0.0")
    assert version_of("2.0.0-alpha") < version_of("2.0.0-beta")
    assert version_of("v1.2") == version_of("1.2.0") and version_of("latest") is None
    rules = parse_native({"rules": [
        {"action": "keep", "tags": ["v*", "nightly*"], "order": "semver", "count": 3},
        {"action": "delete", "tags": ["*"]},
    ]})
    # Pushed in an order that disagrees with the versions, so push time cannot produce the right answer.
    items = [art(1, ["v1.10.0"], 10), art(2, ["v1.9.0"], 1), art(3, ["v2.0.0-rc.1"], 2), art(4, ["v2.0.0"], 30),
             art(5, ["nightly-xyz"], 0.5), art(6, ["v1.2.3"], 0.2)]
    r = evaluate(rules, items, NOW)
    kept = {k for k, v in r.items() if v.action == "keep"}
    assert kept == {d(4), d(3), d(1)}
    assert r[d(4)].reason == "kept by rule 1: among the 3 highest versions of v* or nightly*"
    assert r[d(2)].reason == "expired by rule 2: v1.9.0, not kept by any keep rule"
    assert r[d(5)].action == "expire"  # non-semver tags sort after every version


def test_semver_non_versions_fill_remaining_slots_newest_first():
    rules = parse_native({"rules": [{"action": "keep", "tags": ["*"], "order": "semver", "count": 2},
                                    {"action": "delete", "tags": ["*"]}]})
    items = [art(1, ["v1.0.0"], 10), art(2, ["main"], 5), art(3, ["dev"], 1)]
    kept = {k for k, v in evaluate(rules, items, NOW).items() if v.action == "keep"}
    assert kept == {d(1), d(3)}


def test_last_pulled_and_never_pulled_selectors():
    rules = parse_native({"rules": [
        {"action": "keep", "tags": ["*"], "pulled_within_days": 3},
        {"action": "delete", "tags": ["*"], "never_pulled": True, "pushed_older_than_days": 30},
        {"action": "delete", "tags": ["pr-*"], "pulled_older_than_days": 14},
    ]})
    items = [
        art(1, ["app-1"], 40),  # never pulled, old
        art(2, ["app-2"], 10),  # never pulled, young
        art(3, ["pr-1"], 60, pulled_days=20),
        art(4, ["pr-2"], 60, pulled_days=2),
        art(5, ["pr-3"], 20),  # never pulled: pull age counts from the push
        art(6, ["app-3"], 90, pulled_days=50),
    ]
    r = reasons(rules, items)
    assert r[d(1)] == "expired by rule 2: app-1, pushed 40 days ago, never pulled"
    assert r[d(2)] == "kept: not expired by rule 2: app-2, pushed 10 days ago (needs more than 30), never pulled"
    assert r[d(3)] == "expired by rule 3: pr-1, last pulled 20 days ago"
    assert r[d(4)] == "kept by rule 1: *, last pulled 2 days ago (within 3)"
    assert r[d(5)] == "expired by rule 3: pr-3, never pulled, pushed 20 days ago"
    assert r[d(6)] == "kept: not expired by rule 2: app-3, pushed 90 days ago, last pulled 50 days ago"


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"action": "remove", "tags": ["*"]}, "rule 1: action must be keep or delete"),
        ({"action": "delete"}, "rule 1: select something"),
        ({"action": "keep", "tags": ["*"], "pushed_older_than_days": 3}, "rule 1: pushed_older_than_days is not allowed in a keep rule"),
        ({"action": "delete", "tags": ["*"], "count": 3}, "rule 1: count is not allowed in a delete rule"),
        ({"action": "keep", "tags": ["*"], "order": "semver"}, "rule 1: order only applies together with count"),
        ({"action": "keep", "tags": ["*"], "count": 2, "order": "alphabet"}, "rule 1: order must be one of"),
        ({"action": "keep", "tags": ["*"], "count": 2, "pushed_within_days": 3}, "rule 1: a keep rule takes one of"),
        ({"action": "delete", "tags": ["[a"]}, "rule 1: tag pattern '[a' has an unbalanced"),
        ({"action": "delete", "tags": ["*"], "never_pulled": True, "pulled_older_than_days": 3}, "rule 1: never_pulled: true contradicts"),
        ({"action": "delete", "tags": ["*"], "pushed_older_than_days": -1}, "rule 1: pushed_older_than_days must be an integer greater than 0"),
        ({"action": "delete", "tags": ["*"], "size": 1}, "rule 1: unknown field in the rule: size"),
    ],
)
def test_native_validation_names_the_rule(rule, message):
    rules = [rule] if rule.get("action") != "keep" else [rule, {"action": "delete", "tags": ["*"]}]
    with pytest.raises(InvalidRequest) as info:
        parse_native({"rules": rules})
    assert message in info.value.message


def test_native_needs_a_delete_rule_and_format_is_checked():
    with pytest.raises(InvalidRequest, match="at least one delete rule"):
        parse_native({"rules": [{"action": "keep", "tags": ["*"]}]})
    with pytest.raises(InvalidRequest, match="format must be one of"):
        parse_policy("harbor", {"rules": [{}]})
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_policy("ecr", "{nope")


# -- protections -------------------------------------------------------------------------------------------


def test_protections_index_child_referrer_and_immutable_tag():
    rules = parse_ecr({"rules": [
        _rule(1),
        _rule(2, tagStatus="tagged", tagPatternList=["v*"], countType="imageCountMoreThan", countUnit=None, countNumber=1),
    ]})
    child_a, child_b = art(10, (), 30), art(11, (), 30)
    index = art(1, ["v2"], 20, children=(d(10), d(11)))
    old_index = art(2, ["v1"], 25, children=(d(12),))
    orphan_child = art(12, (), 26)
    signature = art(20, (), 20, subject=d(1))
    orphan_sig = art(21, (), 20, subject=d(99))
    items = [child_a, child_b, index, old_index, orphan_child, signature, orphan_sig]
    decisions = evaluate(rules, items, NOW)
    assert decisions[d(10)].action == "expire"  # before protections, the untagged rule wants the child
    protect(items, decisions, lambda tag: None)
    assert decisions[d(10)].reason == f"protected: child of index {d(1)}"
    assert decisions[d(10)].protection == {"kind": "index-child", "by": d(1), "would_expire_by_rule": 1}
    assert decisions[d(20)].reason == f"protected: referrer of kept {d(1)}"
    assert decisions[d(2)].action == "expire" and decisions[d(12)].action == "expire"  # whole old index goes
    assert decisions[d(21)].action == "expire"

    decisions = evaluate(rules, items, NOW)
    protect(items, decisions, lambda tag: "tag rule 3" if tag == "v1" else None)
    assert decisions[d(2)].reason == "protected: immutable tag v1 (tag rule 3)"
    assert decisions[d(12)].reason == f"protected: child of index {d(2)}"  # protection propagates to children
