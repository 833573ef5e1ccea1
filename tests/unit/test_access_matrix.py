"""docs/access.md shows the access matrix the code enforces: both come from policy/access_matrix.py."""

from __future__ import annotations

from pathlib import Path

from dockyard.policy import access, access_matrix

DOC = Path(__file__).resolve().parents[2] / "docs" / "access.md"


def test_finding10_docs_show_the_matrix_the_code_enforces():
    text = DOC.read_text()
    assert access_matrix.BEGIN in text and access_matrix.END in text
    assert access_matrix.replace_block(text) == text, (
        "docs/access.md's matrix differs from src/dockyard/policy/access_matrix.py; "
        "run `python -m dockyard.policy.access_matrix`"
    )


def test_finding10_access_policy_takes_its_grants_from_the_matrix():
    matrix = access_matrix.MATRIX
    for role in access.ROLES:
        assert access.ROLE_ACTIONS[role] == {p.action for p in matrix if role in p.roles}
    assert access.ROBOT_ACTIONS == {p.action for p in matrix if p.robot}
    assert "read-scan" in access.ROBOT_ACTIONS and "read-scan" in access.ROLE_ACTIONS["guest"]
    assert access_matrix.PUBLIC_ACTIONS == {"pull"}  # non-members of a public project read nothing else


def test_the_renderer_rewrites_a_stale_block(tmp_path):
    stale = tmp_path / "access.md"
    stale.write_text(f"intro\n{access_matrix.BEGIN}\n| old |\n{access_matrix.END}\noutro\n")
    assert access_matrix.main(["x", str(stale)]) == 0
    assert stale.read_text() == f"intro\n{access_matrix.render_block()}\noutro\n"
