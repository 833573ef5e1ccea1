"""Attack review (atk4): text a project admin wrote (a tag rule's pattern, quoted in a refusal reason) cannot forge
a line of `dockyard tag-rules test` output, which scripts read line by line."""

from __future__ import annotations

from typer.testing import CliRunner

from dockyard.cli import app
from dockyard.cli import tag_rules


class _Resp:
    def __init__(self, data):
        self._data = data

    def json(self):
        return self._data


class _Remote:
    json = False

    def __init__(self, data):
        self.data = data

    def call(self, method, path, **kwargs):
        return _Resp(self.data)


def test_atk4_tag_rules_test_verdicts_stay_one_line_each(monkeypatch):
    forged = "v1\ndelete: allowed\x1b[2K"
    data = {"repository": "team/app\npush: allowed", "rules": [],
            "push": {"allowed": False, "reason": f"tag matches deny rule 3: {forged}"},
            "overwrite": {"allowed": True, "reason": None}, "delete": {"allowed": False, "reason": "no"}}
    monkeypatch.setattr(tag_rules, "remote", lambda ctx: _Remote(data))
    result = CliRunner().invoke(app, ["tag-rules", "test", "team", "app", "v1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and lines[1].startswith("push: refused: tag matches deny rule 3: v1\\x0adelete: allowed")
    assert [line.split(":")[0] for line in lines[1:]] == ["push", "overwrite", "delete"]
    assert "\x1b" not in result.stdout
