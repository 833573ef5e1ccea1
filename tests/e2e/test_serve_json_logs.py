"""`dockyard serve` with log_format=json: every line it writes is JSON, from the first one (the
generated admin password's notice and the `serving on` line come before the app's logging)."""

from __future__ import annotations

import json

import httpx

from tests.support.server import run_dockyard


def test_every_line_of_serve_is_json_in_json_mode(tmp_path):
    # No admin password: the generated one goes to a file and a log line says where (stderr is no tty).
    with run_dockyard(tmp_path / "data", extra_env={"DOCKYARD_LOG_FORMAT": "json", "DOCKYARD_LOG_LEVEL": "info"},
                      auth_mode="token") as server:
        assert httpx.get(f"{server.url}/v2/", trust_env=False).status_code == 401
        text = (tmp_path / "data" / "dockyard.log").read_text()
    header, *lines = [line for line in text.splitlines() if line.strip()]
    assert header.startswith("=== ")  # the test harness's own line (tests/support/server.py)
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\nlog:\n{text}") from None
    messages = [p["message"] for p in parsed]
    assert any(m.startswith("created user 'admin'") for m in messages), messages
    assert any(" serving on http://127.0.0.1:" in m for m in messages), messages
