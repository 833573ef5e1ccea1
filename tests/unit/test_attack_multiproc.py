"""Attack review (issue 10): the multiprocess metrics directory under data_dir/tmp."""

from __future__ import annotations

import os
from pathlib import Path

from dockyard.observability import multiproc


def test_a_sibling_run_with_the_same_pid_keeps_its_directory(tmp_path: Path, monkeypatch):
    """Two containers sharing a data volume both run `dockyard serve` as pid 1: the second must neither
    remove the first's live directory nor share it (and remove it again when it exits)."""
    monkeypatch.delenv(multiproc.MULTIPROC_ENV, raising=False)
    first = multiproc.prepare_multiproc_dir(tmp_path)
    (first / "counter_2.db").write_bytes(b"live")
    monkeypatch.setattr(multiproc, "_host", lambda: "other-container")  # same pid, other pid namespace
    second = multiproc.prepare_multiproc_dir(tmp_path)
    assert second != first
    assert (first / "counter_2.db").read_bytes() == b"live"
    assert os.environ[multiproc.MULTIPROC_ENV] == str(second)


def test_only_dead_runs_of_this_host_are_removed(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(multiproc.MULTIPROC_ENV, raising=False)
    host = multiproc._host()
    base = tmp_path / "tmp"
    base.mkdir()
    dead = base / f"metrics-{host}-999999999-{'0' * 16}"
    other_host = base / f"metrics-elsewhere-999999999-{'0' * 16}"
    unrelated = base / "metrics-notes"
    victim = tmp_path / "victim"
    for d in (dead, other_host, unrelated, victim):
        d.mkdir()
        (d / "f").write_text("x")
    (base / f"metrics-{host}-999999998-{'1' * 16}").symlink_to(victim)
    multiproc.prepare_multiproc_dir(tmp_path)
    assert not dead.exists()
    assert (other_host / "f").exists() and (unrelated / "f").exists() and (victim / "f").exists()
