"""The invariants of /work/shared/design.md section 2, checked against a registry's database and store.

Reusable by functional tests (in-process app), e2e tests and benchmarks/soak.py (a stopped or
running server's data): give it a SQLAlchemy engine and a storage driver. It only reads.

    violations = check_invariants(engine, storage)   # [] when everything holds
    assert_invariants(engine, storage)

What is checked:
- every `present` blob row has its object at `storage_key`, of the row's size, whose bytes hash
  to the digest (with verify_bytes; otherwise size only);
- no object under blobs/ without a row that owns it, unless a storage intent records it (GC
  will reclaim it; with allow_intents=False even those count);
- no temporary file left behind by an interrupted write (filesystem driver);
- every manifest's payload hashes to its digest; every tag points at a manifest of its own repository;
- every blob a manifest references is `present` and linked to the manifest's repository;
  every child manifest an index lists is in the same repository;
- each blob's ref_count equals the number of manifests that reference it (never negative);
- no repository link points at a blob that is not `present`.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter

from sqlalchemy import Engine, text

from dockyard.storage import StorageDriver


def check_invariants(engine: Engine, storage: StorageDriver, *, verify_bytes: bool = True,
                     allow_intents: bool = True) -> list[str]:
    problems: list[str] = []
    with engine.connect() as conn:
        blob_rows = conn.execute(text("SELECT id, digest, size, storage_key, state, ref_count FROM blobs")).all()
        manifests = conn.execute(text("SELECT id, repository_id, digest, payload FROM manifests")).all()
        tags = conn.execute(
            text("SELECT t.repository_id, t.name, m.repository_id FROM tags t LEFT JOIN manifests m ON m.id = t.manifest_id")
        ).all()
        refs = conn.execute(
            text("SELECT r.manifest_id, r.kind, r.digest, m.repository_id FROM manifest_references r"
                 " JOIN manifests m ON m.id = r.manifest_id")
        ).all()
        links = {(r[0], r[1]) for r in conn.execute(text("SELECT repository_id, blob_id FROM repository_blobs"))}
        upload_keys = {r[0] for r in conn.execute(text("SELECT storage_key FROM uploads"))}
        intent_keys = _intent_keys(conn)

    by_digest = {r.digest: r for r in blob_rows}
    by_id = {r.id: r for r in blob_rows}
    owned = {r.storage_key for r in blob_rows}
    for row in blob_rows:
        if row.state != "present":
            continue
        size = storage.stat(row.storage_key)
        if size is None:
            problems.append(f"blob row {row.digest} has no object at {row.storage_key}")
        elif size != row.size:
            problems.append(f"blob {row.digest}: object is {size} bytes, row says {row.size}")
        elif verify_bytes:
            algorithm, _, encoded = row.digest.partition(":")
            h = hashlib.new(algorithm)
            for chunk in storage.open_read(row.storage_key):
                h.update(chunk)
            if h.hexdigest() != encoded:
                problems.append(f"blob {row.digest}: object {row.storage_key} hashes to {h.hexdigest()}")
        if row.ref_count < 0:
            problems.append(f"blob {row.digest} has ref_count {row.ref_count}")
    for key in storage.list("blobs/"):
        if key not in owned and not (allow_intents and key in intent_keys):
            problems.append(f"orphaned object {key}: no blob row owns it and no intent records it")
    for key in storage.list("uploads/"):
        if key not in upload_keys and not (allow_intents and key in intent_keys):
            problems.append(f"orphaned upload object {key}: no upload row owns it and no intent records it")
    root = getattr(storage, "root", None)
    if root is not None:
        for dirpath, _dirs, files in os.walk(root):
            problems += [f"temporary file left behind: {os.path.join(dirpath, f)}" for f in files if ".tmp-" in f]

    by_repo_digest = {(m.repository_id, m.digest) for m in manifests}
    for m in manifests:
        algorithm, _, encoded = m.digest.partition(":")
        if hashlib.new(algorithm, bytes(m.payload)).hexdigest() != encoded:
            problems.append(f"manifest {m.digest} payload does not hash to its digest")
    for repo_id, name, manifest_repo_id in tags:
        if manifest_repo_id != repo_id:
            problems.append(f"tag {name} of repository {repo_id} points at a manifest of repository {manifest_repo_id}")
    counts: Counter[str] = Counter()
    for manifest_id, kind, digest, repo_id in refs:
        if kind == "blob":
            counts[digest] += 1
            row = by_digest.get(digest)
            if row is None or row.state != "present":
                problems.append(f"manifest {manifest_id} references blob {digest}, which is {row.state if row else 'missing'}")
            elif (repo_id, row.id) not in links:
                problems.append(f"manifest {manifest_id} references blob {digest}, not linked to repository {repo_id}")
        elif (repo_id, digest) not in by_repo_digest:
            problems.append(f"index {manifest_id} lists manifest {digest}, missing from repository {repo_id}")
    for row in blob_rows:
        if row.ref_count != counts.get(row.digest, 0):
            problems.append(f"blob {row.digest} has ref_count {row.ref_count}, but {counts.get(row.digest, 0)} manifests reference it")
    for repo_id, blob_id in links:
        row = by_id.get(blob_id)
        if row is None or row.state != "present":
            problems.append(f"repository {repo_id} links blob {blob_id}, which is {row.state if row else 'missing'}")
    return problems


def _intent_keys(conn) -> set[str]:
    try:
        return {r[0] for r in conn.execute(text("SELECT storage_key FROM storage_intents"))}
    except Exception:  # a database from before storage intents existed
        conn.rollback()
        return set()


def assert_invariants(engine: Engine, storage: StorageDriver, **kwargs) -> None:
    problems = check_invariants(engine, storage, **kwargs)
    assert not problems, "invariants violated:\n" + "\n".join(problems[:50])
