"""The documentation's shell examples, run in order against a live `dockyard serve`: a documented command
that stops working fails CI.

Convention (also in docs/cli.md, "Runnable examples"): a fenced ```bash (or ```sh) block whose previous
line is `<!-- runnable -->` is run. Every other block is prose. For each Markdown file (README.md,
docs/*.md) that has runnable blocks, this test:

- starts `dockyard serve` on a free port with a fresh data directory, token auth, and the admin password
  in DOCKYARD_ADMIN_PASSWORD;
- runs the file's runnable blocks in document order, each with `bash -euo pipefail`, in one working
  directory that holds `./image`, an OCI image layout tagged `latest` (what the README pushes), and
  `./osv/Go/all.zip`, an OSV export of the test advisories (what docs/scanning.md imports);
- rewrites the documented default address `127.0.0.1:5000` (and `localhost:5000`) to the live server's,
  and sets DOCKYARD_URL to it; HOME and DOCKER_CONFIG are private to the run;
- gives the admin password only as a user would type it: on each block's standard input, for the commands
  that prompt (`dockyard login`). DOCKYARD_USERNAME / DOCKYARD_PASSWORD are not set, so the examples must
  log in first, as the README does, and every later command must use what `dockyard login` saved.

So a runnable block must run here without external services (no network, no Docker daemon), and must
not depend on blocks of other files. The README's first two commands (install and serve, and the test
command) are not marked: they are what runs this.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.images import LayoutWriter, _small_files
from tests.support.server import REPO_ROOT, TOOLS_DIR, run_dockyard

MARKER = "<!-- runnable -->"
ADMIN_PASSWORD = "doc-examples-admin-1"
DEFAULT_ADDRESSES = ("127.0.0.1:5000", "localhost:5000")
BLOCK_TIMEOUT = 300
_BLOCK = re.compile(r"^(?P<marker><!-- runnable -->\n)?```(?:bash|sh|shell)[^\n]*\n(?P<body>.*?)^```\s*$", re.M | re.S)


def runnable_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number, script) of each block marked runnable, in document order."""
    text = path.read_text()
    blocks = []
    for match in _BLOCK.finditer(text):
        if match.group("marker"):
            blocks.append((text.count("\n", 0, match.start("body")) + 1, match.group("body")))
    return blocks


def documents() -> list[Path]:
    return [p for p in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))] if runnable_blocks(p)]


def test_marked_files_are_the_ones_we_promise():
    """The README quick start and the main examples of these docs are runnable; unmarking them fails here."""
    names = {p.relative_to(REPO_ROOT).as_posix() for p in documents()}
    assert {"README.md", "docs/cli.md", "docs/tag-rules.md", "docs/retention.md", "docs/security.md",
            "docs/scanning.md"} <= names, names


def test_the_readme_first_two_commands_stay_unmarked():
    from tests.unit.test_readme import readme_commands

    first, second = readme_commands()
    scripts = [body.strip() for _, body in runnable_blocks(REPO_ROOT / "README.md")]
    assert first not in scripts and second not in scripts


def _osv_export(path: Path) -> None:
    import zipfile

    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for record in sorted((REPO_ROOT / "tests" / "fixtures" / "osv").glob("*.json")):
            archive.write(record, record.name)


def _image_layout(path: Path) -> None:
    writer = LayoutWriter(path)
    layer = writer.layer(_small_files({"etc/hello.txt": b"hello from the docs\n"}))
    writer.tag(writer.image([layer]), "latest")


@pytest.mark.parametrize("doc", documents(), ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_documented_examples_run(doc: Path, tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    _image_layout(work / "image")
    _osv_export(work / "osv" / "Go" / "all.zip")
    home = tmp_path / "home"
    home.mkdir()
    with run_dockyard(tmp_path / "data", auth_mode="token", admin_password=ADMIN_PASSWORD) as server:
        address = f"127.0.0.1:{server.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
        env.update(
            HOME=str(home), DOCKER_CONFIG=str(home / ".docker"), XDG_CONFIG_HOME=str(home / ".config"),
            XDG_RUNTIME_DIR=str(home / "run"), REGISTRY_AUTH_FILE=str(home / "auth.json"),
            PATH=os.pathsep.join([str(Path(sys.executable).parent), str(TOOLS_DIR / "bin"), env.get("PATH", "")]),
            DOCKYARD_URL=f"http://{address}",
            COLUMNS="200", NO_COLOR="1",
        )
        (home / "run").mkdir(mode=0o700)
        for line, body in runnable_blocks(doc):
            script = body
            for default in DEFAULT_ADDRESSES:
                script = script.replace(default, address)
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, text=True,
                                    input=ADMIN_PASSWORD + "\n", capture_output=True, timeout=BLOCK_TIMEOUT)
            where = f"{doc.relative_to(REPO_ROOT)}:{line}"
            assert result.returncode == 0, (
                f"the example at {where} failed (exit {result.returncode}):\n{body}\n"
                f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}\n"
                f"--- server log\n{server.log_tail()}"
            )
        assert server.alive()


def test_serve_prints_next_steps_whose_urls_exist(tmp_path: Path):
    """`dockyard serve` names its database, then the login command and the API docs URL, and that URL answers."""
    with run_dockyard(tmp_path / "data", auth_mode="token", admin_password=ADMIN_PASSWORD) as server:
        text = server.log_path.read_text()
        address = f"127.0.0.1:{server.port}"
        assert f"log in:   dockyard login {address} -u admin" in text, text
        assert f"database: {(tmp_path / 'data').resolve() / 'dockyard.db'}," in text, text  # which database, in full
        steps = text.split("Next steps:", 1)[1].split("  commands: dockyard --help", 1)[0]
        urls = re.findall(r"https?://[^\s)]+", steps)
        assert f"http://{address}/api/v1/docs" in urls
        for url in urls:
            assert httpx.get(url, trust_env=False).status_code == 200, url
