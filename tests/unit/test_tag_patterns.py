"""The tag-rule pattern languages: validation (refuse what could never work) and matching."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dockyard.auth.principals import Principal
from dockyard.domain.promotion import parse_reference
from dockyard.errors import DigestInvalid, InvalidRequest, NameInvalid, TagInvalid
from dockyard.policy.tag_patterns import (
    glob_matches,
    is_referrer_tag,
    names_referrer_tags,
    regex_matches,
    validate_repository_glob,
    validate_tag_glob,
    validate_tag_regex,
)
from dockyard.policy.tag_rules import Rule, make_override

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def rule(kind: str, tag: str, repo: str = "**", project: str | None = "team", rule_id: int = 3) -> Rule:
    return Rule(rule_id, project, kind, repo, tag, None, NOW, "admin")


@pytest.mark.parametrize(
    ("value", "pattern", "expected"),
    [
        ("app", "**", True),
        ("a/b/c", "**", True),
        ("", "**", True),
        ("app/x", "app/*", True),
        ("app/x/y", "app/*", False),
        ("app/x/y", "app/**", True),
        ("team/app", "**/app", True),
        ("app", "**/app", True),
        ("web", "{app,web}", True),
        ("api", "{app,web}", False),
        ("app1", "app?", True),
        ("appx", "app[0-9]", False),
        ("appx", "app[!0-9]", True),
        ("v1.0.0", "v*", True),
        ("1.0.0", "v*", False),
        ("release-2", "release-{1,2}", True),
    ],
)
def test_glob_matching(value, pattern, expected):
    assert glob_matches(value, pattern) is expected


@pytest.mark.parametrize("pattern", ["**", "app/*", "team/**/app", "{a,b}/*", "app[0-9]", "a.b_c-d/?"])
def test_valid_repository_globs(pattern):
    assert validate_repository_glob(pattern) == pattern


@pytest.mark.parametrize(
    "pattern",
    ["", "/app", "app/", "a//b", "App", "app[", "app]", "{a,b", "a}", "app:tag", "a" * 256, "{1..99999}", "ap p"],
)
def test_invalid_repository_globs_are_refused(pattern):
    with pytest.raises(InvalidRequest) as info:
        validate_repository_glob(pattern)
    assert "pattern" in info.value.message


@pytest.mark.parametrize("pattern", ["v/1", "v[", "v*{", "tag with space", "", "v:1"])
def test_invalid_tag_globs_are_refused(pattern):
    with pytest.raises(InvalidRequest):
        validate_tag_glob(pattern)


def test_tag_regex_is_full_match_and_validated():
    assert validate_tag_regex("git-[0-9a-f]{7,40}")
    assert regex_matches("git-abc1234", "git-[0-9a-f]{7,40}")
    assert not regex_matches("xgit-abc1234", "git-[0-9a-f]{7,40}")
    assert not regex_matches("git-abc1234-dirty", "git-[0-9a-f]{7,40}")
    assert regex_matches("latest", "latest") and not regex_matches("latest-1", "latest")
    for bad in ("(", "[a-", "*x", ""):
        with pytest.raises(InvalidRequest):
            validate_tag_regex(bad)


def test_referrer_fallback_tags():
    digest_hex = "0123456789abcdef" * 4
    assert is_referrer_tag(f"sha256-{digest_hex}")
    assert is_referrer_tag(f"sha256-{digest_hex}.sig") and is_referrer_tag(f"sha256-{digest_hex}.att")
    assert not is_referrer_tag("sha256-abc") and not is_referrer_tag("v1") and not is_referrer_tag(f"x-sha256-{digest_hex}")
    assert names_referrer_tags("sha256-*") and not names_referrer_tags("*") and not names_referrer_tags("s*")


def test_rule_scope_and_description():
    project_rule = rule("immutable", "v*", "app/*")
    assert project_rule.applies_to_repository("team/app/api")
    assert not project_rule.applies_to_repository("team/web/api")
    assert not project_rule.applies_to_repository("team/app")  # the path inside the project is just "app"
    assert project_rule.describe() == "rule 3: v* in app/*"
    system_rule = rule("immutable", "*", "prod/**", project=None, rule_id=9)
    assert system_rule.applies_to_repository("prod/web/api") and not system_rule.applies_to_repository("dev/web/api")
    assert system_rule.describe() == "system rule 9: * in prod/**"
    deny = rule("deny", "latest", rule_id=4)
    assert deny.describe() == "rule 4: deny latest in **"
    assert deny.matches_tag("latest") and not deny.matches_tag("latest2")
    assert rule("immutable", "v*").matches_tag("v2") and not rule("immutable", "v*").matches_tag("2")


def test_override_needs_a_real_reason():
    boss = Principal("user", "boss", 1)
    assert make_override(boss, None) is None
    assert make_override(boss, "  CVE fix  ").reason == "CVE fix"
    for bad in ("", "   ", "x" * 501):
        with pytest.raises(InvalidRequest):
            make_override(boss, bad)


def test_promotion_references():
    digest = "sha256:" + "a" * 64
    assert (r := parse_reference("dev/app:1.0")).repository == "dev/app" and r.tag == "1.0" and r.digest is None
    assert (r := parse_reference(f"dev/app@{digest}")).digest == digest and r.tag is None and str(r) == f"dev/app@{digest}"
    assert (r := parse_reference("dev/app")).tag is None and r.digest is None
    with pytest.raises(TagInvalid):
        parse_reference("dev/app:bad!")
    with pytest.raises(DigestInvalid):
        parse_reference("dev/app@sha256:xyz")
    with pytest.raises(NameInvalid):
        parse_reference("Dev/App:1")


@pytest.mark.parametrize(("pattern", "reason"), [
    ("[z-a]", "invalid character class range: z-a"),
    ("(", "missing )"),
    ("a{2000}", "invalid repetition size"),
])
def test_newcomer_invalid_regex_names_re2_reason(pattern, reason):
    """A typo such as `[z-a]` was refused only with the hint about lookaround and backreferences; the message
    (and `detail.reason`) now carries RE2's own reason."""
    with pytest.raises(InvalidRequest) as info:
        validate_tag_regex(pattern)
    assert reason in info.value.message
    assert reason in info.value.detail["reason"]


@pytest.mark.parametrize("pattern", ["re: latest", "re:latest ", "re:v[0-9]+\n", "re:team/app", "re:app@v1"])
def test_a_regex_that_can_never_match_a_tag_is_refused(pattern):
    """Attack (issue 15 review): `re:` took any RE2 regex, so `re: latest` (a space no tag can hold) or
    `re:team/app` (a tag has no `/`) was saved and protected nothing, silently."""
    from dockyard.policy.tag_patterns import validate_tag_pattern

    with pytest.raises(InvalidRequest, match="can never match a tag"):
        validate_tag_pattern(pattern)


@pytest.mark.parametrize("pattern", ["re:[^/]+", r"re:v\d+", "re:(?:v|r)[0-9]+", "re:[ a]?b"])
def test_regexes_that_only_mention_those_characters_in_a_class_or_escape_stay_valid(pattern):
    from dockyard.policy.tag_patterns import validate_tag_pattern

    assert validate_tag_pattern(pattern) == pattern
