"""`dockyard serve`'s next steps name the address a client can use, and only URLs that exist."""

from __future__ import annotations

from pathlib import Path

from dockyard.cli.server import next_steps
from dockyard.settings import Settings


def steps(tmp_path: Path, **values) -> str:
    return "\n".join(next_steps(Settings(data_dir=tmp_path, **values)))


def test_loopback_address_and_password_file(tmp_path: Path):
    text = steps(tmp_path, host="127.0.0.1", port=5000)
    assert "dockyard login 127.0.0.1:5000 -u admin" in text
    assert "API docs: http://127.0.0.1:5000/api/v1/docs" in text and "http://127.0.0.1:5000/api/v1/openapi.json" in text
    assert "printed above on first start" in text
    (tmp_path / "initial-admin-password").write_text("x")
    assert f"in {tmp_path / 'initial-admin-password'}" in steps(tmp_path, host="127.0.0.1", port=5000)


def test_wildcard_binds_show_a_reachable_address(tmp_path: Path):
    """(Settings refuse a wildcard bind without public_url in token mode; the helper still must not print one.)"""
    base = Settings(data_dir=tmp_path, port=8080)
    for host, shown in (("0.0.0.0", "127.0.0.1:8080"), ("::", "[::1]:8080")):
        text = "\n".join(next_steps(base.model_copy(update={"host": host})))
        assert f"dockyard login {shown} -u admin" in text and f"http://{shown}/api/v1/docs" in text


def test_public_url_wins(tmp_path: Path):
    text = steps(tmp_path, host="0.0.0.0", port=5000, public_url="https://registry.example.com")
    assert "dockyard login registry.example.com -u admin" in text
    assert "API docs: https://registry.example.com/api/v1/docs" in text
    assert "127.0.0.1" not in text


def test_no_ui_url_while_there_is_no_ui(tmp_path: Path):
    assert "/ui" not in steps(tmp_path)


def test_a_plain_http_or_prefixed_public_url_is_given_to_login_in_full(tmp_path: Path):
    """`dockyard login HOST` means HTTPS off loopback and drops any path: for an http:// public_url, or one
    behind a path prefix, the printed command must carry the URL itself or it logs in somewhere else."""
    text = steps(tmp_path, host="0.0.0.0", port=5000, public_url="http://registry.lan:5000")
    assert "dockyard login http://registry.lan:5000 -u admin" in text
    text = steps(tmp_path, host="0.0.0.0", port=5000, public_url="https://example.com/registry/")
    assert "dockyard login https://example.com/registry -u admin" in text
    assert "API docs: https://example.com/registry/api/v1/docs" in text
