"""Signature verification inside the registry: the same `verify` as the CLI, reading the
registry's own metadata and storage instead of HTTP.

Anyone with push controls what is verified here, so the work is bounded (verify.Limits, blob
size) and shared: verdicts are cached per (repository, digest, trusted keys, project security
generation). The generation is a counter in the database that every write which can change a
verdict bumps in its own transaction (metadata/generations.py), so a cached verdict stays valid
until something relevant changes, on every node. Concurrent evaluations of one key are merged
(single-flight): N pulls of a digest nobody has verified yet cost one evaluation.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from dockyard.domain import blob_refs
from dockyard.metadata import generations
from dockyard.metadata.db import Database
from dockyard.metadata.models import manifest_references, manifests, repositories, tags
from dockyard.policy.access import project_of
from dockyard.signing import formats
from dockyard.signing.cosign_keys import PublicKey, fingerprint
from dockyard.signing.trusted_keys import TrustedKeys
from dockyard.signing.verify import Layout, Limits, Verdict, verify
from dockyard.storage import StorageDriver

log = logging.getLogger(__name__)

MAX_SIGNATURE_BLOB = 4 * 1024 * 1024  # bundles and payloads are a few KiB; refuse to buffer layers
SIGNATURE_ARTIFACT_TYPES = tuple(sorted(
    formats.BUNDLE_MEDIA_TYPES | {formats.NOTATION_SIGNATURE, formats.COSIGN_ARTIFACT_SIG}))


class RegistrySignatureSource:
    """`SignatureSource` over the registry's own tables and blob store (read-only)."""

    def __init__(self, db: Database, storage: StorageDriver, *,
                 max_blob_bytes: int = MAX_SIGNATURE_BLOB, max_referrers: int = Limits.max_referrers):
        self.db = db
        self.storage = storage
        self.max_blob_bytes = max_blob_bytes
        self.max_referrers = max_referrers

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[dict]:
        """Signature referrers only (an image may carry thousands of other referrers), one past the
        cap so the verdict can say that some were left out."""
        wanted = (artifact_type,) if artifact_type else SIGNATURE_ARTIFACT_TYPES
        query = (
            select(manifests.c.digest, manifests.c.media_type, manifests.c.size, manifests.c.artifact_type)
            .join(repositories, repositories.c.id == manifests.c.repository_id)
            .where(repositories.c.name == repo, manifests.c.subject_digest == digest, manifests.c.artifact_type.in_(wanted))
            .order_by(manifests.c.id)
            .limit(self.max_referrers + 1)
        )
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        return [{"mediaType": r.media_type, "digest": r.digest, "size": int(r.size), "artifactType": r.artifact_type} for r in rows]

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
            row = blob_refs.present_blob(conn, digest)
        if row is None:
            return None
        if row.size > self.max_blob_bytes:
            raise formats.TooLarge(
                f"blob {digest} is {row.size} bytes, over the {self.max_blob_bytes}-byte limit for signature data "
                "(signature_max_blob_bytes)"
            )
        try:
            return b"".join(self.storage.open_read(row.storage_key, 0, self.max_blob_bytes))
        except Exception as exc:  # a storage fault: this signature cannot be read, the others still count
            log.warning("reading signature blob %s failed: %s", digest, exc)
            raise formats.FormatError(f"blob {digest} could not be read from storage") from exc


class SignatureChecker:
    def __init__(self, source: RegistrySignatureSource, *, limits: Limits | None = None, max_entries: int = 10_000):
        self.source = source
        self.limits = limits or Limits(max_referrers=source.max_referrers)
        self.max_entries = max_entries
        self.evaluations = 0  # verifications actually run (not served from the cache or a merged flight)
        self.merged = 0       # callers that waited for another caller's evaluation of the same key
        self._cache: OrderedDict[tuple, Verdict] = OrderedDict()
        self._flights: dict[tuple, Future] = {}
        self._lock = threading.Lock()

    def invalidate(self, repository: str) -> None:
        """Drop this node's verdicts of a repository at once (the generation expires them everywhere)."""
        with self._lock:
            for key in [k for k in self._cache if k[0] == repository]:
                self._cache.pop(key, None)

    def generation(self, repository: str) -> int:
        with self.source.db.read() as conn:
            return generations.current(conn, project_of(repository))

    def verdict(self, repository: str, digest: str, keys: Iterable[PublicKey], *, generation: int | None = None) -> Verdict:
        keys = tuple(keys)
        if generation is None:
            generation = self.generation(repository)
        cache_key = (repository, digest, tuple(sorted(fingerprint(k) for k in keys)), generation)
        with self._lock:
            hit = self._cache.get(cache_key)
            if hit is not None:
                self._cache.move_to_end(cache_key)
                return hit
            flight = self._flights.get(cache_key)
            leader = flight is None
            if leader:
                flight = self._flights[cache_key] = Future()
            else:
                self.merged += 1
        if not leader:
            return flight.result()  # another thread is evaluating this very key: share its answer
        try:
            with self._lock:
                self.evaluations += 1
            result = verify(self.source, repository, digest, keys, self.limits)
        except BaseException as exc:
            with self._lock:
                self._flights.pop(cache_key, None)
            flight.set_exception(exc)
            raise
        with self._lock:
            self._flights.pop(cache_key, None)
            if self.max_entries:
                self._cache[cache_key] = result
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        flight.set_result(result)
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
        generation = self.generation(repository)
        try:
            own = self.verdict(repository, digest, keys, generation=generation)
            if own.verified:
                return True, own
            for parent in self.parent_indexes(repository, digest)[: self.limits.max_referrers]:
                if self.verdict(repository, parent, keys, generation=generation).verified:
                    return True, own
        except SQLAlchemyError:
            raise  # the database is down: that is UNAVAILABLE, not a verdict
        except Exception:  # a bug must fail closed with a reason, never turn a gated pull into a 500
            log.exception("verifying the signatures of %s@%s failed", repository, digest)
            return False, Verdict(signed=False, verified_by=[], layouts=set(),
                                  reasons=["the signatures could not be evaluated (internal error; see the server log)"])
        return False, own


def describe(verdict: Verdict) -> str:
    """Why an image is not verified, in one clause for an error message."""
    if not verdict.signed:
        if verdict.reasons and not verdict.reasons[0].startswith("no signatures found"):
            return verdict.reasons[0]
        return "it has no signature"
    layouts = ", ".join(sorted(str(layout) for layout in verdict.layouts))
    if verdict.layouts == {Layout.NOTATION}:
        return "it has only a Notation signature, which Dockyard recognizes but cannot verify"
    reason = verdict.reasons[0] if verdict.reasons else "no trusted key verified it"
    return f"its {layouts} signature(s) did not verify with a trusted key ({reason})"


class GateSignatures:
    """What the pull and promotion gates ask about signatures (policy.lookups.SignatureLookup):
    a project's trusted keys, and the cached checker's verdict."""

    def __init__(self, checker: SignatureChecker, keys: TrustedKeys):
        self.checker = checker
        self.keys = keys

    def public_keys(self, project: str) -> tuple[PublicKey, ...]:
        return self.keys.public_keys(project)

    def covered(self, repository: str, digest: str, keys: Iterable[PublicKey]) -> tuple[bool, Verdict]:
        return self.checker.covered(repository, digest, keys)

    def describe(self, verdict: Verdict) -> str:
        return describe(verdict)

    def invalidate(self, repository: str) -> None:
        self.checker.invalidate(repository)
