"""Migration 0017: deny/require regexes become `re:` patterns with the same full-match meaning; globs stay."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import text

from dockyard.metadata.db import Database, _alembic_config
from dockyard.policy.tag_patterns import regex_matches, tag_matches

OLD_RULES = [
    ("immutable", "v*"),
    ("immutable", "release-{1,2}"),
    ("deny", "latest"),
    ("deny", "tmp*"),  # a regex: `tmp` then any number of `p`
    ("require", r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"),
    ("require", "x" * 255),  # the longest pattern the old validation accepted
    ("deny", "re:latest"),  # a regex for the literal `re:latest`: no tag has a `:`, so it matched nothing
]


def _upgrade(database: Database, revision: str) -> None:
    with database.engine.begin() as conn:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_from_0016_rewrites_regexes_and_keeps_their_meaning(tmp_path, backend, database_url_for):
    url = database_url_for(backend) or f"sqlite:///{tmp_path / 'meta.db'}"
    database = Database(url)
    try:
        _upgrade(database, "0016_event_request_id")
        with database.engine.begin() as conn:
            for kind, pattern in OLD_RULES:
                conn.execute(
                    text("INSERT INTO tag_rules (project_id, kind, repository_pattern, tag_pattern, created_at) "
                         "VALUES (NULL, :k, '**', :p, :t)"),
                    {"k": kind, "p": pattern, "t": datetime(2026, 1, 1, tzinfo=UTC)},
                )
        _upgrade(database, "0017_tag_rule_syntax")
        with database.engine.connect() as conn:
            stored = [tuple(r) for r in conn.execute(text("SELECT kind, tag_pattern FROM tag_rules ORDER BY id"))]
        assert stored == [
            ("immutable", "v*"),
            ("immutable", "release-{1,2}"),
            ("deny", "re:latest"),
            ("deny", "re:tmp*"),
            ("require", r"re:v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"),
            ("require", "re:" + "x" * 255),
            ("deny", "re:re:latest"),  # not `re:latest`, which would start refusing `latest`
        ]
        # Same verdicts as the old full-match regex for every sample tag.
        samples = ["latest", "latest-1", "tmp", "tmppp", "tmp-foo", "v1.2.3", "1.0.0", "v01.2.3", "x" * 255, "v9"]
        for (kind, old), (_, new) in zip(OLD_RULES, stored):
            if kind == "immutable":
                continue
            for tag in samples:
                assert tag_matches(tag, new) == regex_matches(tag, old), (old, tag)
        # Downgrade: the bare regexes come back; a glob deny rule written since (no regex equivalent here) is dropped.
        with database.engine.begin() as conn:
            conn.execute(text("INSERT INTO tag_rules (project_id, kind, repository_pattern, tag_pattern, created_at) "
                              "VALUES (NULL, 'deny', '**', 'tmp*', :t)"), {"t": datetime(2026, 1, 2, tzinfo=UTC)})
        with database.engine.begin() as conn:
            cfg = _alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0016_event_request_id")
        with database.engine.connect() as conn:
            restored = [tuple(r) for r in conn.execute(text("SELECT kind, tag_pattern FROM tag_rules ORDER BY id"))]
        assert restored == OLD_RULES
    finally:
        database.dispose()
