"""Issue 15's docs-only newcomer review, at the CLI (the server answered by a stand-in): `scan --wait` names
its job, `tag-rules test --exit-code` exits 3 on a refused push, robots show what push implies, `--sort` is
checked before any request (exit 2), and `tags ls` heads its columns with the words the docs use."""

from __future__ import annotations

import importlib
import json

import pytest
from typer.testing import CliRunner

from dockyard.cli import app, repos, security, tag_rules

admin = importlib.import_module("dockyard.cli.admin")  # the package's `admin` is the Typer group


class _Resp:
    def __init__(self, data):
        self._data = data

    def json(self):
        return self._data


class _Remote:
    json = False

    def __init__(self, answers):
        self.answers = answers  # (method, path) -> data; a list is a listing's rows
        self.calls = []

    def call(self, method, path, **kwargs):
        self.calls.append((method, path))
        return _Resp(self.answers[(method, path)])

    def listing(self, path, page, page_size, params):
        self.calls.append(("GET", path))
        return self.answers[("GET", path)]


def run(*args):
    return CliRunner().invoke(app, ["--help"] if not args else list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})


def test_scan_wait_prints_the_job_id_on_stderr_and_the_verdict_on_stdout(monkeypatch):
    path = "/repositories/team/app/artifacts/v1/scan"
    status = {"digest": "sha256:" + "a" * 64, "kind": "image", "scanner": "builtin", "scannable": True, "scanned": True,
              "incomplete": False, "in_progress": False, "summary": {}, "images": []}
    fake = _Remote({("GET", path): status, ("POST", path): {"job_id": 41, "state": "queued"}})
    monkeypatch.setattr(security, "connect", lambda *a, **k: fake)
    monkeypatch.setattr(security, "print_scan_status", lambda label, s: security.out.print(f"verdict of {label}"))
    result = run("scan", "team/app:v1", "--wait", "--registry", "registry.test")
    assert result.exit_code == 0, result.output
    assert "job 41" in result.stderr and "job 41" not in result.stdout
    assert result.stdout.strip() == "verdict of team/app:v1"
    as_json = run("scan", "team/app:v1", "--wait", "--json", "--registry", "registry.test")
    assert as_json.exit_code == 0 and "job 41" not in as_json.output and json.loads(as_json.stdout) == status


def _verdicts(push_allowed: bool) -> dict:
    return {"repository": "team/app", "rules": [],
            "push": {"allowed": push_allowed, "reason": None if push_allowed else "tag matches deny rule 1"},
            "overwrite": {"allowed": False, "reason": "immutable"}, "delete": {"allowed": False, "reason": "immutable"}}


@pytest.mark.parametrize("push_allowed, code", [(True, 0), (False, 3)])
def test_tag_rules_test_exit_code_says_whether_the_push_would_be_refused(monkeypatch, push_allowed, code):
    monkeypatch.setattr(tag_rules, "remote", lambda ctx: _Remote({("POST", "/projects/team/tag-rules/test"): _verdicts(push_allowed)}))
    assert run("tag-rules", "test", "team", "app", "v1").exit_code == 0  # without the flag: a report, always 0
    result = run("tag-rules", "test", "team", "app", "v1", "--exit-code")
    assert result.exit_code == code, result.output
    assert result.stdout.splitlines()[1].startswith("push: " + ("allowed" if push_allowed else "refused"))


def test_robots_show_and_list_show_what_push_implies(monkeypatch):
    robot = {"name": "robot$team+ci", "kind": "project", "disabled": False, "expires_at": None, "description": "",
             "created_by": "admin", "permissions": [{"project": "team", "actions": ["push"]},
                                                     {"project": "web", "actions": ["pull", "push"]}]}
    fake = _Remote({("GET", "/robots/robot%24team%2Bci"): dict(robot), ("GET", "/robots"): [dict(robot)]})
    monkeypatch.setattr(admin, "remote", lambda ctx: fake)
    for args in (("admin", "robots", "show", "robot$team+ci"), ("admin", "robots", "list")):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert "team: push (+pull), web: pull,push" in result.stdout
    shown = run("admin", "robots", "show", "robot$team+ci", "--json")
    assert json.loads(shown.stdout)["permissions"] == robot["permissions"]  # --json: the grants as stored


@pytest.mark.parametrize("args, allowed", [
    (("repos", "ls", "--sort", "bogus"), "name, tags, size, last_push, last_pull"),
    (("repos", "ls", "--sort", "-pushed"), "name, tags, size, last_push, last_pull"),
    (("tags", "ls", "team/app", "--sort", "last_push"), "name, pushed, last_pull"),
])
def test_an_unknown_sort_is_bad_usage_before_any_request(monkeypatch, args, allowed):
    fake = _Remote({})
    monkeypatch.setattr(repos, "remote", lambda ctx: fake)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert f"expected one of {allowed}" in result.output and fake.calls == []


def test_tags_ls_heads_its_columns_pushed_and_last_pulled(monkeypatch):
    row = {"name": "v1", "digest": "sha256:" + "b" * 64, "platforms": ["linux/amd64"], "size": 2048,
           "updated_at": "2026-12-07T10:00:00Z", "last_pulled_at": None, "scan_verdict": "unscanned", "signed": False}
    fake = _Remote({("GET", "/repositories/team/app/tags"): [row]})
    monkeypatch.setattr(repos, "remote", lambda ctx: fake)
    result = run("tags", "ls", "team/app", "--sort", "-pushed")
    assert result.exit_code == 0, result.output
    header, line = result.stdout.splitlines()
    assert header.split("\t") == ["name", "digest", "platforms", "size", "pushed", "last pulled", "scan_verdict", "signed"]
    assert line.split("\t")[4] == "2026-12-07T10:00:00Z"
    as_json = run("tags", "ls", "team/app", "--json")
    assert json.loads(as_json.stdout) == [row]  # field names stay the API's
