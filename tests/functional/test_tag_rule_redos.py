"""Finding 3 of issue 9: a saved tag-rule pattern cannot stall the server (ReDoS).

A project admin saved the deny rule `(a+)+b`; a 24-character tag then held a worker for 2 s and the
SQLite write lock with it. Matching now runs on RE2 (linear in the tag's length, whatever the
pattern), globs are translated to RE2, and no pattern is matched while a write transaction is open.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from contextlib import contextmanager

import pytest
import wcmatch.glob
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.errors import DockyardError, TagRulesChanged
from dockyard.metadata.db import Database
from dockyard.policy import tag_rules as tag_module
from dockyard.policy.tag_patterns import GLOB_FLAGS, glob_matches, validate_repository_glob, validate_tag_regex

from .governance_helpers import env  # noqa: F401  (fixture: SQLite and PostgreSQL)
from .governance_helpers import error

REPO = "team/app"
EVIL_REGEXES = ["(a+)+b", "(a|a)*b", "(a|aa)+b", "(.*a){20}b", "([a-z]+)*!"]
EVIL_GLOBS = ["*a*a*a*a*a*a*a*a*a*a*a*a*b", "{*a,a*}*a*a*a*a*a*a*b"]


def test_finding3_matching_finishes_for_hostile_patterns_and_long_tags():
    """In a child process with a generous hang guard: the original (Python `re`) never finished this."""
    script = f"""
from dockyard.policy.tag_patterns import glob_matches, regex_matches
for pattern in {EVIL_REGEXES!r}:
    for n in (24, 128, 100_000):
        assert not regex_matches("a" * n, pattern), pattern
    assert regex_matches("a" * 127 + "b", "(a+)+b")
for pattern in {EVIL_GLOBS!r}:
    assert not glob_matches("a" * 100_000, pattern)
    assert glob_matches("a" * 30 + "b", pattern)
print("done")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr


def test_finding3_patterns_re2_cannot_run_in_linear_time_are_refused():
    for pattern in (r"(a)\1", r"(?=a)a", r"(?!a).", r"(?<=a)b", "a{1001}"):
        with pytest.raises(DockyardError) as info:
            validate_tag_regex(pattern)
        assert info.value.code == "INVALID_REQUEST" and "RE2" in info.value.message
    for pattern in EVIL_REGEXES:
        assert validate_tag_regex(pattern) == pattern  # saved, and harmless


_SEGMENT = st.text(alphabet="ab1-", min_size=1, max_size=4).filter(lambda s: s[0] != "-")
_NAME = st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join)
_TOKEN = st.sampled_from(["a", "b", "1", "-", "*", "?", "**", "/", "[ab]", "[!a]", "[a-b]", "{a,b}", "{a*,b/*}", "{1..3}"])


@settings(max_examples=600, deadline=None)
@given(pattern=st.lists(_TOKEN, min_size=1, max_size=7).map("".join), name=st.one_of(_NAME, st.just("")))
def test_finding3_glob_translation_agrees_with_wcmatch(pattern, name):
    """The RE2 translation keeps the documented glob meaning (wcmatch GLOBSTAR | BRACE) for real names."""
    try:
        validate_repository_glob(pattern)
    except DockyardError:
        return
    expected = wcmatch.glob.globmatch(name, pattern, flags=GLOB_FLAGS, limit=256)
    assert glob_matches(name, pattern) is expected, (pattern, name)


@contextmanager
def _watch_matching(monkeypatch):
    """Record every pattern match, and whether a write transaction was open on this thread at the time."""
    state = threading.local()
    seen: list[tuple[str, bool]] = []
    original_write = Database.write

    @contextmanager
    def write(self):
        with original_write(self) as conn:
            state.depth = getattr(state, "depth", 0) + 1
            try:
                yield conn
            finally:
                state.depth -= 1

    def watch(name, original):
        def wrapper(self, value):
            seen.append((name, getattr(state, "depth", 0) > 0))
            return original(self, value)
        return wrapper

    monkeypatch.setattr(Database, "write", write)
    monkeypatch.setattr(tag_module.Rule, "matches_tag", watch("tag", tag_module.Rule.matches_tag))
    monkeypatch.setattr(tag_module.Rule, "applies_to_repository", watch("repo", tag_module.Rule.applies_to_repository))
    yield seen


async def test_finding3_hostile_deny_rule_and_no_matching_under_the_write_lock(env, monkeypatch):  # noqa: F811
    await env.project("team")
    r = await env.api.post("/api/v1/projects/team/tag-rules", json={"kind": "deny", "tag_pattern": "re:(a+)+b"})
    assert r.status_code == 201, r.text
    await env.rule("team", "immutable", EVIL_GLOBS[0])
    await env.rule("team", "require", "re:[a-z0-9]+")
    with _watch_matching(monkeypatch) as seen:
        long_tag = "a" * 128
        digest, _ = await env.reg.push_image(REPO, long_tag, seed=1)  # no `b`: allowed, and it returns
        r = await env.reg.put_manifest(REPO, "a" * 127 + "b", *_manifest(env, seed=1))
        error(r, 403, "DENIED")
        other, _ = await env.reg.push_image(REPO, "a" * 30, seed=2)
        r = await env.api.put(f"/api/v1/repositories/{REPO}/tags/{'a' * 29}b", json={"digest": other})
        error(r, 403, "DENIED")
        r = await env.api.post("/api/v1/promotions", json={"source": f"{REPO}@{digest}", "destination": "team/prod",
                                                            "tags": ["a" * 127 + "b"]})
        error(r, 403, "DENIED")
        r = await env.api.delete(f"/api/v1/repositories/{REPO}/tags/{'a' * 30}")
        assert r.status_code == 204, r.text
        r = await env.reg.client.delete(f"/v2/{REPO}/manifests/{other}")
        assert r.status_code == 202, r.text
    assert await env.digest_of(REPO, long_tag) == digest
    assert {kind for kind, _ in seen} == {"tag", "repo"}
    assert not [kind for kind, in_write in seen if in_write], "a pattern was matched while a write transaction was open"


async def test_finding3_a_rule_created_after_the_verdicts_refuses_the_write(env):  # noqa: F811
    await env.project("team")
    digest, _ = await env.reg.push_image(REPO, "v1", seed=1)
    policy = env.services.tag_policy
    verdicts = policy.prepare(REPO, ["v2"])
    await env.rule("team", "deny", "v2")
    with pytest.raises(TagRulesChanged) as info:
        with env.services.db.write() as conn:
            policy.check_tag_change(conn, REPO, "v2", None, digest, verdicts=verdicts)
    assert info.value.status == 409 and info.value.code == "CONFLICT"
    with pytest.raises(RuntimeError):  # matching under the write lock is a programming error, not a slow path
        with env.services.db.write() as conn:
            policy.check_tag_change(conn, REPO, "v2", None, digest)


def _manifest(env, seed: int) -> tuple[bytes, str]:
    from .helpers import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, descriptor, dumps, pattern

    config = dumps({"architecture": "amd64", "os": "linux", "seed": seed})
    layer = pattern(100, seed=seed * 1000)
    body = dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(OCI_CONFIG, config),
                  "layers": [descriptor(OCI_LAYER, layer)]})
    return body, OCI_MANIFEST
