"""Finding 8 of issue 9: every name validator takes the whole string, never a prefix before a newline.

`$` with `re.match` accepts "prod\\n"; a tag `prod\\n` then slipped past a `deny prod` rule, and
`alice\\n`, `robot$p+ci\\n` and the password `secret\\n` were accepted. Each validator below gets
a valid value with a control character appended, prepended and inserted.
"""

from __future__ import annotations

import pytest

from dockyard.domain import promotion
from dockyard.domain.names import is_tag, validate_digest, validate_name, validate_reference, validate_tag
from dockyard.domain.projects import validate_project_name
from dockyard.domain.retention_service import RetentionService
from dockyard.domain.robots import full_robot_name
from dockyard.domain.scanners import ScannerRegistry
from dockyard.domain.users import validate_password, validate_username
from dockyard.errors import DockyardError, InvalidRequest
from dockyard.policy.tag_patterns import is_referrer_tag, validate_repository_glob, validate_tag_glob
from dockyard.signing import registry as signing_registry

DIGEST = "sha256:" + "a" * 64
# C0 controls (NUL, TAB, LF, VT, FF, CR, ESC, ...), DEL, C1 controls (NEL U+0085, ...) and the Unicode line separators.
CONTROLS = [chr(c) for c in range(0x00, 0x20)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)] + ["\u2028", "\u2029"]


def variants(valid: str) -> list[str]:
    out = []
    for ch in CONTROLS:
        out += [valid + ch, ch + valid, valid[:1] + ch + valid[1:]]
    return out


def retention_name(name: str) -> None:
    """Only the name check: a refusal of the (deliberately minimal) document does not count."""
    try:
        RetentionService._validate(name, "**", "none", {}, None)
    except InvalidRequest as exc:
        if exc.detail == {"field": "name"}:
            raise


VALIDATORS = {
    "repository": (validate_name, "team/app"),
    "tag": (validate_tag, "prod"),
    "digest": (validate_digest, DIGEST),
    "reference-tag": (validate_reference, "prod"),
    "reference-digest": (validate_reference, DIGEST),
    "project": (validate_project_name, "team"),
    "robot": (lambda n: full_robot_name(n, "p"), "ci"),
    "user": (validate_username, "alice"),
    "password": (validate_password, "secret-password"),
    "scanner": (lambda n: ScannerRegistry.validate(n, "http://scanner.test"), "trivy"),
    "retention-policy": (retention_name, "keep-recent"),
    "promotion-reference": (promotion.parse_reference, "team/app:prod"),
    "repository-glob": (validate_repository_glob, "app/*"),
    "tag-glob": (validate_tag_glob, "v*"),
}


@pytest.mark.parametrize("kind", sorted(VALIDATORS))
def test_finding8_validators_refuse_control_characters(kind):
    validate, valid = VALIDATORS[kind]
    validate(valid)
    accepted = []
    for bad in variants(valid):
        try:
            validate(bad)
        except DockyardError:
            continue
        accepted.append(bad)
    assert not accepted, f"{kind} accepted {accepted[:5]!r}"


def test_finding8_predicates_and_client_side_parsers_refuse_control_characters():
    digest_hex = "0123456789abcdef" * 4
    for bad in variants("prod"):
        assert not is_tag(bad), repr(bad)
    for bad in variants(f"sha256-{digest_hex}.sig"):
        assert not is_referrer_tag(bad), repr(bad)
    signing_registry.parse_reference("registry.test/team/app:prod")
    for bad in ("registry.test/team/app:prod\x00", "reg\x00istry.test/team/app:prod",
                "registry.test/team/app\r:prod"):
        with pytest.raises(ValueError):
            signing_registry.parse_reference(bad)
