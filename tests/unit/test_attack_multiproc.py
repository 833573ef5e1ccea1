"""Attack review (issue 10): the multiprocess metrics directory under data_dir/tmp."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dockyard.observability import multiproc

_OTHER_RUN = """
import sys, time
from pathlib import Path
from dockyard.observability.multiproc import prepare_multiproc_dir
path = prepare_multiproc_dir(Path(sys.argv[1]))
(path / "counter_2.db").write_bytes(b"live")
print(path, flush=True)
time.sleep(60)
"""


def test_a_live_run_keeps_its_directory_whatever_its_pid(tmp_path: Path, monkeypatch):
    """Two containers sharing a data volume both run `dockyard serve` as pid 1: a run must neither remove
    another live run's directory (its pid means nothing here) nor share it."""
    monkeypatch.delenv(multiproc.MULTIPROC_ENV, raising=False)
    other = subprocess.Popen([sys.executable, "-c", _OTHER_RUN, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        theirs = Path(other.stdout.readline().strip())
        # As seen from another pid namespace: the directory is named with our own pid.
        disguised = theirs.with_name(f"metrics-{os.getpid()}-{theirs.name.rsplit('-', 1)[1]}")
        theirs.rename(disguised)
        ours = multiproc.prepare_multiproc_dir(tmp_path)
        assert ours != disguised
        assert (disguised / "counter_2.db").read_bytes() == b"live"
        assert os.environ[multiproc.MULTIPROC_ENV] == str(ours)
    finally:
        other.kill()
        other.wait()
    # Its serve is gone: the next start removes it.
    multiproc.prepare_multiproc_dir(tmp_path)
    assert not disguised.exists()


def test_unrelated_entries_and_symlinks_are_left_alone(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(multiproc.MULTIPROC_ENV, raising=False)
    base = tmp_path / "tmp"
    base.mkdir()
    victim = tmp_path / "victim"
    notes = base / "metrics-notes"
    for d in (victim, notes):
        d.mkdir()
        (d / "f").write_text("x")
    (victim / multiproc.LOCK_NAME).write_text("")
    (base / f"metrics-1-{'0' * 16}").symlink_to(victim)
    multiproc.prepare_multiproc_dir(tmp_path)
    assert (victim / "f").exists() and (notes / "f").exists()
