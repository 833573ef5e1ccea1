"""Signature verification inside the registry: the same `verify` as the CLI, reading the
registry's own metadata and storage instead of HTTP.

Verdicts are cached per (repository, digest, trusted keys) for `cache_seconds`; a push into a
repository drops that repository's entries on this node, so a freshly pushed signature counts
at once here and within `cache_seconds` on other nodes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from sqlalchemy import select

from dockyard.domain.listings import ListingService
from dockyard.metadata.db import Database
from dockyard.metadata.models import blobs, manifest_references, manifests, repositories, tags
from dockyard.signing.keys import PublicKey, fingerprint
from dockyard.signing.verify import Layout, Verdict, verify
from dockyard.storage import StorageDriver

MAX_SIGNATURE_BLOB = 4 * 1024 * 1024  # bundles and payloads are a few KiB; refuse to buffer layers


class RegistrySignatureSource:
    """`SignatureSource` over the registry's own tables and blob store (read-only)."""

    def __init__(self, db: Database, storage: StorageDriver, listings: ListingService):
        self.db = db
        self.storage = storage
        self.listings = listings

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[dict]:
        return self.listings.referrers(repo, digest, artifact_type)["manifests"]

    def manifest(self, repo: str, ref: str) -> bytes | None:
        query = select(manifests.c.payload).join(repositories, repositories.c.id == manifests.c.repository_id)
        if ref.startswith("sha256:") or ref.startswith("sha512:"):
            query = query.where(repositories.c.name == repo, manifests.c.digest == ref)
        else:
            query = query.join(tags, tags.c.manifest_id == manifests.c.id).where(repositories.c.name == repo, tags.c.name == ref)
        with self.db.read() as conn:
            payload = conn.execute(query).scalar()
        return None if payload is None else bytes(payload)

    def blob(self, repo: str, digest: str) -> bytes | None:
        with self.db.read() as conn:
            row = conn.execute(
                select(blobs.c.storage_key, blobs.c.size).where(blobs.c.digest == digest, blobs.c.state == "present")
            ).first()
        if row is None or row.size > MAX_SIGNATURE_BLOB:
            return None
        return b"".join(self.storage.open_read(row.storage_key))


class SignatureChecker:
    def __init__(self, source: RegistrySignatureSource, *, cache_seconds: float = 2.0, clock=time.monotonic):
        self.source = source
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[tuple[str, str, tuple[str, ...]], tuple[float, Verdict]] = {}
        self._lock = threading.Lock()

    def invalidate(self, repository: str) -> None:
        with self._lock:
            for key in [k for k in self._cache if k[0] == repository]:
                self._cache.pop(key, None)

    def verdict(self, repository: str, digest: str, keys: Iterable[PublicKey]) -> Verdict:
        keys = tuple(keys)
        cache_key = (repository, digest, tuple(sorted(fingerprint(k) for k in keys)))
        now = self.clock()
        hit = self._cache.get(cache_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        result = verify(self.source, repository, digest, keys)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[cache_key] = (now + self.cache_seconds, result)
        return result

    def parent_indexes(self, repository: str, digest: str) -> list[str]:
        """Indexes in the repository that list `digest`: a signed index covers its platform images."""
        with self.source.db.read() as conn:
            return list(
                conn.execute(
                    select(manifests.c.digest)
                    .join(manifest_references, manifest_references.c.manifest_id == manifests.c.id)
                    .join(repositories, repositories.c.id == manifests.c.repository_id)
                    .where(
                        repositories.c.name == repository,
                        manifest_references.c.kind == "manifest",
                        manifest_references.c.digest == digest,
                    )
                ).scalars()
            )

    def covered(self, repository: str, digest: str, keys: Iterable[PublicKey]) -> tuple[bool, Verdict]:
        """(verified, the image's own verdict): verified by its own signature or a signed parent index."""
        keys = tuple(keys)
        own = self.verdict(repository, digest, keys)
        if own.verified:
            return True, own
        for parent in self.parent_indexes(repository, digest):
            if self.verdict(repository, parent, keys).verified:
                return True, own
        return False, own


def describe(verdict: Verdict) -> str:
    """Why an image is not verified, in one clause for an error message."""
    if not verdict.signed:
        return "it has no signature"
    layouts = ", ".join(sorted(str(layout) for layout in verdict.layouts))
    if verdict.layouts == {Layout.NOTATION}:
        return "it has only a Notation signature, which Dockyard recognizes but cannot verify"
    reason = verdict.reasons[0] if verdict.reasons else "no trusted key verified it"
    return f"its {layouts} signature(s) did not verify with a trusted key ({reason})"
