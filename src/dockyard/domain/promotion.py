"""Promotion: make an image that is already in the registry available under other tags, in the same
repository (retag) or another repository or project (copy), without moving a single blob byte.

A copy links the existing blobs into the destination (repository_blobs) and inserts the manifests
there through ManifestService.store, so every copied reference gets the same checks and the same
`ref_count + 1 WHERE state = 'present'` row write as a push (the GC invariant of design.md §2). An
index comes with all its child manifests; referrers (signatures, SBOMs) optionally come along.
All destination tags are set in ONE transaction after TagPolicy approved each of them: all or nothing.

Gates are the extension point for "only promote what passed": each `PromotionGate` sees the source
and may refuse with a reason (the destination's promotion policy plugs in here). Before them, a copy
into another repository runs the SOURCE's pull gate for the caller: a copy is a pull that keeps the
bytes, so an image the caller may not pull cannot be promoted somewhere it could (issue 9, finding 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from dockyard.domain import artifact_events
from dockyard.domain.events import record
from dockyard.domain import blob_refs
from dockyard.domain.manifest_service import MAX_TAGS_PER_PUT, ManifestService, move_tag, tag_digest
from dockyard.domain.manifests import parse_manifest
from dockyard.domain.names import validate_digest, validate_name, validate_tag
from dockyard.domain.repositories import ensure_repository_id, hold_repository_id, require_repository_id
from dockyard.errors import Denied, InvalidRequest, ManifestBlobUnknown, ManifestUnknown
from dockyard.metadata import generations
from dockyard.policy.access import project_of
from dockyard.metadata.db import Database, utcnow
from dockyard.metadata.models import manifest_references, manifests
from dockyard.policy.promotion_gates import PromotionGate
from dockyard.policy.tag_rules import Override, TagPolicy

# Bounds a pathological graph (referrers of referrers of …); real images stay far below this.
MAX_PROMOTED_MANIFESTS = 1000


@dataclass(frozen=True)
class SourceRef:
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}" if self.digest else f"{self.repository}:{self.tag}"


def parse_reference(ref: str) -> SourceRef:
    """`proj/repo:tag`, `proj/repo@sha256:…` or bare `proj/repo` (tag None, digest None)."""
    if "@" in ref:
        name, _, digest = ref.partition("@")
        return SourceRef(validate_name(name), None, validate_digest(digest))
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return SourceRef(validate_name(name), validate_tag(tag), None)
    return SourceRef(validate_name(ref), None, None)


@dataclass
class PromotionResult:
    source_repository: str
    source_digest: str
    media_type: str
    destination: str
    tags: dict[str, str | None]  # tag -> digest it pointed at before (None: new tag)
    copied: list[str] = field(default_factory=list)  # manifests newly inserted in the destination
    referrers: list[str] = field(default_factory=list)  # referrer manifests that came along
    blobs_linked: int = 0  # repository_blobs rows added (no bytes moved)

    @property
    def is_copy(self) -> bool:
        return self.source_repository != self.destination


class PromotionService:
    def __init__(
        self, db: Database, manifests: ManifestService, tag_policy: TagPolicy, gates: list[PromotionGate], *,
        quotas=None, pull_gate=None,
    ):
        self.db = db
        self.pull_gate = pull_gate  # policy.pull_gate.PullGate: the source's pull gate for copies
        self.manifests = manifests
        self.tag_policy = tag_policy
        self.gates = gates  # the live list in Services: gates registered later are seen
        self.quotas = quotas  # domain.quotas.QuotaService: a copy counts against the destination project

    def resolve(self, source: SourceRef) -> tuple[str, str]:
        """(digest, media type) of the source manifest; MANIFEST_UNKNOWN / NAME_UNKNOWN if absent."""
        if source.tag is None and source.digest is None:
            raise InvalidRequest(f"source {source.repository} needs a :tag or an @digest")
        with self.db.read() as conn:
            repo_id = require_repository_id(conn, source.repository)
            digest = source.digest or tag_digest(conn, repo_id, source.tag)
            row = None if digest is None else conn.execute(
                select(manifests.c.media_type).where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
            ).first()
        if row is None:
            raise ManifestUnknown(f"manifest {source} is not in the registry", detail={"reference": str(source)})
        return digest, row.media_type

    def promote(
        self,
        source: SourceRef,
        destination: str,
        tags: list[str],
        *,
        include_referrers: bool = False,
        override: Override | None = None,
        caller: str | None = None,
        source_pull_gate: bool = True,
    ) -> PromotionResult:
        """Promote `source` to `destination` under `tags`. A copy into another repository runs the source's
        pull gate for `caller` unless `source_pull_gate` is False (the caller may push to the source)."""
        validate_name(destination)
        tags = list(dict.fromkeys(validate_tag(t) for t in tags))
        if len(tags) > MAX_TAGS_PER_PUT:
            raise InvalidRequest(f"at most {MAX_TAGS_PER_PUT} tags per promotion")
        same_repository = source.repository == destination
        if same_repository and not tags:
            raise InvalidRequest("promoting within one repository needs at least one destination tag")
        digest, media_type = self.resolve(source)
        if not same_repository and source_pull_gate and self.pull_gate is not None:
            self._check_source_gate(source.repository, digest, include_referrers, caller)
        # Gates run before the write transaction: they may be slow and must not hold the write lock.
        # Every gate runs, so one refusal lists every failing gate: fixing them one round-trip at a time is slow.
        failed = []
        for gate in list(self.gates):
            verdict = gate.check(source.repository, digest, media_type, destination)
            if not verdict.allowed:
                failed.append({"gate": gate.name, "reason": verdict.reason})
        if failed:
            shown = "; ".join(f"promotion gate {f['gate']} refused {source.repository}@{digest}: {f['reason']}" for f in failed)
            raise Denied(
                shown,
                # `gate`/`reason` name the first failure (kept for existing clients); `gates` lists them all.
                detail={"gate": failed[0]["gate"], "reason": failed[0]["reason"], "gates": failed, "digest": digest},
            )
        result = PromotionResult(source.repository, digest, media_type, destination, {})
        verdicts = self.tag_policy.prepare(destination, tags)  # pattern matching, before the write lock
        with self.db.write() as conn:
            src_id = (hold_repository_id if same_repository else require_repository_id)(conn, source.repository)
            if same_repository:
                dest_id = src_id
                manifest_id = self._manifest_id(conn, src_id, digest)
                if manifest_id is None:  # deleted between resolve and now
                    raise ManifestUnknown(f"manifest {digest} is not in repository {source.repository}", detail={"digest": digest})
            else:
                dest_id = ensure_repository_id(conn, destination, projects_required=self.manifests.projects_required)
                manifest_id = self._copy(conn, src_id, dest_id, destination, digest, include_referrers, result)
            for tag in tags:  # one transaction: any refusal rolls back every tag and every copied row
                result.tags[tag] = move_tag(
                    conn, self.tag_policy, destination, dest_id, tag, manifest_id, digest, override=override, verdicts=verdicts
                )
            self._record_events(conn, dest_id, result)
            generations.bump(conn, project_of(destination))  # copied signatures count at once
        return result

    @staticmethod
    def _record_events(conn: Connection, dest_id: int, result: PromotionResult) -> None:
        """artifact.pushed (via promotion) for each manifest now in the destination, with the tag and
        signature events of a push, and one artifact.promoted: consumers react as to a push."""
        items = [d for d in result.copied if d != result.source_digest] + [result.source_digest]
        rows = {
            r.digest: r for r in conn.execute(
                select(manifests.c.digest, manifests.c.media_type, manifests.c.size, manifests.c.payload,
                       manifests.c.artifact_type, manifests.c.subject_digest)
                .where(manifests.c.repository_id == dest_id, manifests.c.digest.in_(items))
            )
        }
        source = f"{result.source_repository}@{result.source_digest}"
        for item in items:
            row = rows[item]
            artifact_events.manifest_written(
                conn, result.destination, digest=item, media_type=row.media_type, size=row.size, via="promotion",
                tags=result.tags if item == result.source_digest else {}, payload=bytes(row.payload),
                artifact_type=row.artifact_type, subject=row.subject_digest, new=item in result.copied,
                extra={"source": source},
            )
        record(conn, "artifact.promoted", repository=result.destination, digest=result.source_digest, data={
            "source": source, "source_repository": result.source_repository, "tags": sorted(result.tags),
            "copied": len(result.copied), "referrers": len(result.referrers), "blobs_linked": result.blobs_linked,
        })

    def _check_source_gate(self, repository: str, digest: str, include_referrers: bool, caller: str | None) -> None:
        """The source's pull gate for everything the copy takes that a pull would judge on its own: the image,
        and each referrer (a referrer can be a runnable image with a `subject`, refused to a direct pull).
        Index children are judged through their index, as a pull of the index judges them."""
        digests = [digest]
        if include_referrers:
            with self.db.read() as conn:
                src_id = require_repository_id(conn, repository)
                probe = PromotionResult(repository, digest, "", repository, {})
                self._closure(conn, src_id, digest, True, probe)
            digests += probe.referrers
        for item in digests:
            stored = self.manifests.lookup(repository, None, item)
            self.pull_gate.check_copy(repository, item, stored.media_type, stored.payload, caller)

    # -- copying without bytes ---------------------------------------------------------------

    def _copy(
        self, conn: Connection, src_id: int, dest_id: int, destination: str, digest: str, include_referrers: bool, result: PromotionResult
    ) -> int:
        """Insert `digest`, its children (and referrers) into the destination; returns its manifest id there."""
        order = self._closure(conn, src_id, digest, include_referrers, result)
        if self.quotas is not None:
            wanted = conn.execute(
                select(manifest_references.c.digest)
                .join(manifests, manifests.c.id == manifest_references.c.manifest_id)
                .where(manifests.c.repository_id == src_id, manifests.c.digest.in_(order), manifest_references.c.kind == "blob")
            ).scalars()
            self.quotas.check(conn, destination, list(wanted))
        for item in order:  # children before parents, so each manifest's references already exist
            if self._manifest_id(conn, dest_id, item) is not None:
                continue
            row = conn.execute(
                select(manifests.c.payload, manifests.c.media_type).where(
                    manifests.c.repository_id == src_id, manifests.c.digest == item
                )
            ).one()
            parsed = parse_manifest(bytes(row.payload), row.media_type, item.partition(":")[0])
            result.blobs_linked += self._link_blobs(conn, dest_id, list(dict.fromkeys(parsed.blob_refs)))
            self.manifests.store(conn, dest_id, parsed)
            result.copied.append(item)
        return self._manifest_id(conn, dest_id, digest)

    def _closure(self, conn: Connection, src_id: int, root: str, include_referrers: bool, result: PromotionResult) -> list[str]:
        """Every manifest to promote, in dependency order (post-order: children first, referrers after subjects)."""
        order: list[str] = []
        state: dict[str, str] = {}

        def visit(d: str) -> None:
            if state.get(d):
                return
            state[d] = "visiting"
            if len(state) > MAX_PROMOTED_MANIFESTS:
                raise InvalidRequest(f"promotion would copy more than {MAX_PROMOTED_MANIFESTS} manifests")
            manifest_id = self._manifest_id(conn, src_id, d)
            if manifest_id is None:
                raise ManifestUnknown(f"manifest {d} is not in the source repository", detail={"digest": d})
            for child in conn.execute(
                select(manifest_references.c.digest).where(
                    manifest_references.c.manifest_id == manifest_id, manifest_references.c.kind == "manifest"
                )
            ).scalars():
                visit(child)
            order.append(d)
            state[d] = "done"

        visit(root)
        if include_referrers:
            pending = list(order)
            while pending:
                subject = pending.pop(0)
                for ref in conn.execute(
                    select(manifests.c.digest)
                    .where(manifests.c.repository_id == src_id, manifests.c.subject_digest == subject)
                    .order_by(manifests.c.id)
                ).scalars():
                    if ref in state:
                        continue
                    before = len(order)
                    visit(ref)
                    added = order[before:]
                    result.referrers.append(ref)
                    pending.extend(added)  # referrers of referrers (a signature on an SBOM) come too
        return order

    @staticmethod
    def _link_blobs(conn: Connection, dest_id: int, digests: list[str]) -> int:
        """Link present blobs into the destination; touching each row serializes us against GC marking it."""
        if not digests:
            return 0
        now = utcnow()
        if blob_refs.touch_present(conn, digests, now) != len(digests):
            raise ManifestBlobUnknown("a blob of the source image is missing or being garbage-collected; push it again")
        return blob_refs.link_digests(conn, dest_id, digests, now)

    @staticmethod
    def _manifest_id(conn: Connection, repo_id: int, digest: str) -> int | None:
        return conn.execute(
            select(manifests.c.id).where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
        ).scalar()
