"""Soak finding: an upload failed with 416 "another request is writing this upload" while a scan
started syft. The writer's flock belongs to the open file description, which the fork()ed child
shares until it execs, so for a moment the lock outlived the parent's close. The driver now
retries a busy lock briefly (storage/filesystem.py LOCK_RETRY_SECONDS)."""

from __future__ import annotations

import os
import time

from dockyard.storage.filesystem import FilesystemDriver


def test_soak_finding_lock_inherited_by_a_forked_child_does_not_fail_the_next_writer(tmp_path):
    driver = FilesystemDriver(tmp_path / "store")
    writer = driver.open_write("uploads/u1")
    writer.write(b"abc")
    pid = os.fork()
    if pid == 0:  # the child, as between fork and exec of a scanner: holds the lock for a while
        time.sleep(0.3)  # the scenario itself (a lock held for a moment), not synchronisation
        os._exit(0)
    try:
        writer.commit()  # the parent is done with the upload...
        again = driver.open_write("uploads/u1", 3)  # ...and the next request of the same upload must get it
        again.write(b"def")
        again.commit()
        assert driver.get("uploads/u1") == b"abcdef"
    finally:
        os.waitpid(pid, 0)
