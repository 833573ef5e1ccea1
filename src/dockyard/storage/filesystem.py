"""Local filesystem driver: plain `os` I/O, fsync before anything becomes visible."""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from dockyard.storage.permissions import DIR_MODE, FILE_MODE
from dockyard.storage.protocol import StorageBusy, StorageError

READ_CHUNK = 1024 * 1024


# A flock belongs to the open file description, which a fork()ed child shares until it execs
# or exits: a scan starting syft (fork, preexec_fn, exec) briefly holds every lock its parent
# holds, even on descriptors the parent has closed meanwhile. So a busy lock is retried for a
# moment before the writer is reported busy; a real concurrent writer holds it for a whole request.
LOCK_RETRY_SECONDS = 2.0


def _lock(fd: int) -> None:
    deadline = time.monotonic() + LOCK_RETRY_SECONDS
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


class _FileWriter:
    """Exclusive via flock, so a crashed writer's lock dies with its process."""

    def __init__(self, path: Path, offset: int):
        path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            _lock(fd)
        except BlockingIOError as exc:
            os.close(fd)
            raise StorageBusy(f"{path.name} is being written by another request") from exc
        current = os.fstat(fd).st_size
        if current < offset:
            os.close(fd)
            raise StorageError(f"cannot resume {path.name} at {offset}: only {current} bytes stored")
        self._fd: int | None = fd
        self._offset = offset
        self._positioned = False
        self.size = offset

    def _position(self) -> None:
        if not self._positioned:
            assert self._fd is not None, "writer closed"
            os.ftruncate(self._fd, self._offset)  # drop bytes of a write that never committed
            os.lseek(self._fd, self._offset, os.SEEK_SET)
            self._positioned = True

    def write(self, data: bytes) -> None:
        self._position()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(data)

    def flush(self) -> None:
        self._position()
        os.fsync(self._fd)

    def commit(self) -> None:
        if self._fd is not None:
            self.flush()
            os.close(self._fd)
            self._fd = None

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FilesystemDriver:
    name = "filesystem"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"invalid storage key {key!r}")
        return self.root / key

    def stat(self, key: str) -> int | None:
        try:
            return os.stat(self._path(key)).st_size
        except FileNotFoundError:
            return None

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"object {key} not found") from exc

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            # A full disk must not leave a half-written temporary file holding the space.
            tmp.unlink(missing_ok=True)
            raise
        self._fsync_dir(path.parent)

    def open_read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        try:
            fh = open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise StorageError(f"object {key} not found") from exc
        return self._read(fh, offset, length)

    @staticmethod
    def _read(fh, offset: int, length: int | None) -> Iterator[bytes]:
        with fh:
            fh.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                chunk = fh.read(READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def open_write(self, key: str, offset: int = 0) -> _FileWriter:
        return _FileWriter(self._path(key), offset)

    def move(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)
        if not source.exists():
            raise StorageError(f"object {src} not found")
        for attempt in range(3):
            target.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            try:
                os.replace(source, target)
                break
            except FileNotFoundError:
                # A concurrent delete pruned the fresh directory; make it again.
                if attempt == 2 or not source.exists():
                    raise
        self._fsync_dir(target.parent)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        # Best effort: drop the per-digest directory a deleted blob leaves empty. Shared levels
        # (blobs/<alg>/<xx>, uploads/) stay: they are few, and pruning them would race with writers.
        if key.startswith("blobs/") and key.count("/") >= 4:
            try:
                os.rmdir(path.parent)
            except OSError:
                pass

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                rel = os.path.relpath(os.path.join(dirpath, name), base).replace(os.sep, "/")
                if rel.startswith(prefix) and ".tmp-" not in name:
                    yield rel

    def local_path(self, key: str) -> str | None:
        return str(self._path(key))

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
