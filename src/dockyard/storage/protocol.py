"""The storage-driver protocol. Every driver passes tests/unit/storage/test_driver_suite.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dockyard.settings import Settings


class StorageError(Exception):
    """A driver could not complete an operation (missing object, I/O failure)."""


class StorageBusy(StorageError):
    """Another writer holds the object (open_write is exclusive per key)."""


class ObjectWriter(Protocol):
    """Appends bytes to an object; nothing is guaranteed durable until flush() or commit()."""

    size: int

    def write(self, data: bytes) -> None: ...

    def flush(self) -> None:
        """Make everything written so far durable, keeping the writer (and its exclusivity)."""

    def commit(self) -> None:
        """flush(), then release the writer."""

    def abort(self) -> None:
        """Release the writer; bytes not yet flushed may be lost."""


class StorageDriver(Protocol):
    name: str

    def stat(self, key: str) -> int | None:
        """Size of the object, or None if absent."""

    def get(self, key: str) -> bytes: ...

    def put(self, key: str, data: bytes) -> None:
        """Write a whole object atomically: readers see the old object or the new one."""

    def open_read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]: ...

    def open_write(self, key: str, offset: int = 0) -> ObjectWriter:
        """Resume writing `key` at `offset`; bytes past `offset` from an interrupted write are dropped.

        The writer is exclusive: a second open_write on the same key raises StorageBusy until the
        first commits or aborts (or its process dies). Nothing changes until the first write or
        commit, so a caller may still check its own bookkeeping and abort."""

    def move(self, src: str, dst: str) -> None:
        """Atomically publish `src` under `dst` (the only way a blob key is ever written)."""

    def delete(self, key: str) -> None:
        """Remove an object; absent objects are not an error."""

    def list(self, prefix: str) -> Iterator[str]: ...

    def local_path(self, key: str) -> str | None:
        """A filesystem path for zero-copy sends, when the driver has one."""


def open_driver(settings: Settings) -> StorageDriver:
    """Build the configured driver; an unknown name is a start-up error, never a silent fallback."""
    if settings.storage_driver == "filesystem":
        from dockyard.storage.filesystem import FilesystemDriver

        return FilesystemDriver(settings.resolved_storage_root)
    if settings.storage_driver == "memory":
        from dockyard.storage.memory import MemoryDriver

        return MemoryDriver()
    raise ValueError(f"unknown storage driver {settings.storage_driver!r}")
