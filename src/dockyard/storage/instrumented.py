"""A driver wrapper that times every blob-store call (dockyard_storage_action_seconds{driver,action}).

It takes a plain `observe(driver, action, seconds)` callable, so storage/ knows nothing of metrics.
Reads are timed to the open (the bytes stream later, counted by the HTTP metrics); a writer's
write, flush and commit are timed each. Anything else (a driver's own attributes) passes through.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from dockyard.storage.protocol import ObjectWriter, StorageDriver

Observe = Callable[[str, str, float], None]


class _TimedWriter:
    def __init__(self, inner: ObjectWriter, observe: Callable[[str, float], None]):
        self._inner = inner
        self._observe = observe

    @property
    def size(self) -> int:
        return self._inner.size

    def _timed(self, action: str, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._observe(action, time.perf_counter() - start)

    def write(self, data: bytes) -> None:
        self._timed("write", self._inner.write, data)

    def flush(self) -> None:
        self._timed("flush", self._inner.flush)

    def commit(self) -> None:
        self._timed("commit", self._inner.commit)

    def abort(self) -> None:
        self._inner.abort()

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


class InstrumentedDriver:
    def __init__(self, inner: StorageDriver, observe: Observe):
        self.inner = inner
        self.name = inner.name
        self._observe = observe

    def _done(self, action: str, seconds: float) -> None:
        self._observe(self.name, action, seconds)

    def _timed(self, action: str, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self._done(action, time.perf_counter() - start)

    def stat(self, key: str) -> int | None:
        return self._timed("stat", self.inner.stat, key)

    def get(self, key: str) -> bytes:
        return self._timed("get", self.inner.get, key)

    def put(self, key: str, data: bytes) -> None:
        self._timed("put", self.inner.put, key, data)

    def open_read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self._timed("open_read", self.inner.open_read, key, offset, length)

    def open_write(self, key: str, offset: int = 0) -> ObjectWriter:
        writer = self._timed("open_write", self.inner.open_write, key, offset)
        return _TimedWriter(writer, self._done)

    def move(self, src: str, dst: str) -> None:
        self._timed("move", self.inner.move, src, dst)

    def delete(self, key: str) -> None:
        self._timed("delete", self.inner.delete, key)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)  # a lazy walk: timing its creation would say nothing

    def local_path(self, key: str) -> str | None:
        return self.inner.local_path(key)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)
