"""docs/operations.md: the graceful-restart section names the setting, the probes and a Kubernetes manifest
whose timings add up (issue 16)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dockyard.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _section() -> str:
    text = DOC.read_text()
    start = text.index("## Graceful restarts and rolling updates")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_graceful_restart_section_names_the_setting_and_probes():
    section = _section()
    assert "shutdown_timeout_seconds" in section and "shutdown_timeout_seconds" in Settings.model_fields
    for needle in ("preStop", "/healthz", "/readyz", "terminationGracePeriodSeconds", "SIGTERM"):
        assert needle in section, needle


def test_kubernetes_example_timings_add_up():
    block = re.search(r"```yaml\n(.*?)```", _section(), re.S).group(1)
    deployment = yaml.safe_load(block)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) <= {f"DOCKYARD_{name.upper()}" for name in Settings.model_fields}
    timeout = int(env["DOCKYARD_SHUTDOWN_TIMEOUT_SECONDS"])
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + timeout
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
