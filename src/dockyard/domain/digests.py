"""Content digests, including a sha256 whose state can be saved between upload requests."""

from __future__ import annotations

import rehashes


class ResumableSha256:
    """sha256 whose 104-byte state survives restarts, so an upload can resume on any node."""

    def __init__(self, state: bytes | None = None):
        self._h = rehashes.PySha256.deserialize(state) if state else rehashes.PySha256()

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def state(self) -> bytes:
        return bytes(self._h.serialize())

    def digest(self) -> str:
        # finalize() consumes the hasher; work on a copy so the state stays usable.
        return "sha256:" + rehashes.PySha256.deserialize(self._h.serialize()).finalize()
