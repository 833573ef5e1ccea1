"""The ordering interface shared by every ecosystem's version comparator."""

from __future__ import annotations

from typing import Any, Protocol

CACHE_SIZE = 65536


class VersionError(ValueError):
    """A version string that the ecosystem's ordering cannot parse."""


class UnsupportedEcosystem(KeyError):
    """An OSV ecosystem with no ordering here; matching it would be guessing."""


class Ordering(Protocol):
    name: str

    def key(self, version: str) -> Any: ...

    def compare(self, a: str, b: str) -> int: ...


class _KeyOrdering:
    """Shared `compare` for orderings whose keys are directly comparable."""

    name = ""

    def key(self, version: str) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def compare(self, a: str, b: str) -> int:
        ka, kb = self.key(a), self.key(b)
        return (ka > kb) - (ka < kb)

    def __repr__(self) -> str:
        return f"<ordering {self.name}>"
