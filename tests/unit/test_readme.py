"""The README opens with two commands that must stay literally true, and CI must run the second one as it is.

A fresh user runs the first command, then the second, with nothing in between; CI (`.ci/run`) may add nothing
before the test command, or a missing install step would hide behind a green run.
"""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> tuple[str, str]:
    """The first two fenced bash commands of the README: install-and-run, then test."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 2, "README.md must open with two ```bash blocks"
    first, second = (b.strip() for b in blocks[:2])
    assert "\n" not in first and "\n" not in second, "each of the README's first two blocks is one command"
    return first, second


def ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [ln.strip() for ln in lines
            if ln.strip() and not ln.lstrip().startswith("#")
            and not ln.startswith("set ") and not ln.startswith("cd ")]


def test_readme_first_command_installs_and_serves():
    first, _ = readme_commands()
    assert first == "pip install -e . && dockyard serve"


def test_ci_runs_exactly_the_readme_test_command():
    _, second = readme_commands()
    assert ci_commands() == [second], ".ci/run must run the README's test command and nothing else"


def test_readme_test_command_installs_the_test_extras_itself():
    _, second = readme_commands()
    script = shlex.split(second)
    assert script[0] == "bash"
    text = (ROOT / script[1]).read_text()
    assert re.search(r"pip install .*-e '\.\[test\]'", text), f"{script[1]} must install the [test] extra"
    pip_at = text.index("pip install")
    pytest_at = text.index("pytest -p")
    assert pip_at < pytest_at, "install the test extras before running pytest"


def test_newcomer_readme_dockyard_examples_parse(monkeypatch):
    """Every `dockyard …` example of the README parses: `dockyard admin projects create team -u admin` used to
    fail with `No such option: -u`, because connection options belong before the subcommand."""
    from typer.testing import CliRunner

    from dockyard.cli import app

    monkeypatch.setenv("DOCKYARD_PASSWORD", "unused")  # the admin groups check for a password before --help
    text = (ROOT / "README.md").read_text()
    examples = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            for part in line.split("#")[0].split("|"):
                words = shlex.split(part)
                if words and words[0] == "dockyard":
                    examples.append(words[1:])
    assert len(examples) >= 4
    for words in examples:
        result = CliRunner().invoke(app, [*words, "--help"])
        assert result.exit_code == 0, f"README example `dockyard {' '.join(words)}` does not parse:\n{result.output}"
