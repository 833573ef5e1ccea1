"""In-memory driver for tests and throwaway registries; same contract as the filesystem driver."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from dockyard.storage.protocol import StorageBusy, StorageError


class _MemoryWriter:
    def __init__(self, driver: MemoryDriver, key: str, offset: int):
        with driver._lock:
            if key in driver._writing:
                raise StorageBusy(f"{key} is being written by another request")
            current = driver._objects.get(key, b"")
            if len(current) < offset:
                raise StorageError(f"cannot resume {key} at {offset}: only {len(current)} bytes stored")
            driver._writing.add(key)
        self._driver, self._key = driver, key
        self._buf = bytearray(current[:offset])
        self._open = True
        self.size = offset

    def write(self, data: bytes) -> None:
        self._buf += data
        self.size += len(data)

    def flush(self) -> None:
        with self._driver._lock:
            self._driver._objects[self._key] = bytes(self._buf)

    def commit(self) -> None:
        if self._open:
            self.flush()
            self._release()

    def abort(self) -> None:
        self._buf = bytearray()
        if self._open:
            self._release()

    def _release(self) -> None:
        self._open = False
        with self._driver._lock:
            self._driver._writing.discard(self._key)


class MemoryDriver:
    name = "memory"

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._writing: set[str] = set()
        self._lock = threading.Lock()

    def stat(self, key: str) -> int | None:
        data = self._objects.get(key)
        return None if data is None else len(data)

    def get(self, key: str) -> bytes:
        try:
            return self._objects[key]
        except KeyError as exc:
            raise StorageError(f"object {key} not found") from exc

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._objects[key] = bytes(data)

    def open_read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        data = self.get(key)
        end = len(data) if length is None else min(len(data), offset + length)
        return iter([data[offset:end]] if end > offset else [])

    def open_write(self, key: str, offset: int = 0) -> _MemoryWriter:
        return _MemoryWriter(self, key, offset)

    def move(self, src: str, dst: str) -> None:
        with self._lock:
            try:
                self._objects[dst] = self._objects.pop(src)
            except KeyError as exc:
                raise StorageError(f"object {src} not found") from exc

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def list(self, prefix: str) -> Iterator[str]:
        return iter(sorted(k for k in list(self._objects) if k.startswith(prefix)))

    def local_path(self, key: str) -> str | None:
        return None
