"""GC benchmark (not a test): how long online GC takes, and that its cost follows the garbage.

Builds a registry's metadata straight through the database (bulk inserts: repositories,
blobs, manifests, their references, repository links), gives every garbage blob a tiny
object in a filesystem blob store (the sweeper really deletes files; live blobs' objects
are never touched by GC, so they are not materialised), ages everything past the grace
period, then times one GC run (and a dry run) per scenario and prints a table.

    python benchmarks/gc.py                 # 100k/10%, 100k/1%, 50k/10%, 200k/1% (~1 min)
    python benchmarks/gc.py --quick         # 10k blobs
    python benchmarks/gc.py --out docs.md   # also write the table as markdown
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sqlalchemy import insert  # noqa: E402

from dockyard.jobs.gc import GarbageCollector  # noqa: E402
from dockyard.metadata.db import Database, utcnow  # noqa: E402
from dockyard.metadata.models import blobs, manifest_references, manifests, repositories, repository_blobs  # noqa: E402
from dockyard.storage.filesystem import FilesystemDriver  # noqa: E402
from dockyard.storage.paths import blob_key  # noqa: E402

CHUNK = 5000


def digest_of(n: int) -> str:
    return f"sha256:{n:064x}"


def build(root: Path, total_blobs: int, garbage_fraction: float, manifests_count: int) -> tuple[Database, FilesystemDriver, float]:
    db = Database(f"sqlite:///{root / 'dockyard.db'}")
    db.migrate()
    storage = FilesystemDriver(root / "storage")
    rnd = random.Random(42)
    old = utcnow() - timedelta(days=3)
    garbage = set(rnd.sample(range(total_blobs), int(total_blobs * garbage_fraction)))
    live = [n for n in range(total_blobs) if n not in garbage]
    started = time.monotonic()
    with db.write() as conn:
        conn.execute(insert(repositories), [{"id": r + 1, "name": f"team/repo{r}", "created_at": old} for r in range(20)])
        rows = [
            {"id": n + 1, "digest": digest_of(n), "size": 1000 + n % 5000, "storage_key": blob_key(digest_of(n), 1),
             "generation": 1, "state": "present", "ref_count": 0, "created_at": old, "touched_at": old}
            for n in range(total_blobs)
        ]
        refs: dict[int, int] = {}
        mrows, rrows = [], []
        per = max(1, len(live) // max(manifests_count, 1))
        for m in range(manifests_count):
            chunk = live[m * per:(m + 1) * per] or [live[m % len(live)]]
            mrows.append({"id": m + 1, "repository_id": m % 20 + 1, "digest": f"sha256:{m:060x}ffff", "media_type": "application/vnd.oci.image.manifest.v1+json",
                          "size": 500, "payload": b"{}", "created_at": old})
            for n in chunk:
                rrows.append({"manifest_id": m + 1, "kind": "blob", "digest": digest_of(n)})
                refs[n] = refs.get(n, 0) + 1
        for n in live:  # live blobs past the manifests' share still carry a reference
            rows[n]["ref_count"] = refs.get(n, 1)
        for i in range(0, len(rows), CHUNK):
            conn.execute(insert(blobs), rows[i:i + CHUNK])
        for i in range(0, len(mrows), CHUNK):
            conn.execute(insert(manifests), mrows[i:i + CHUNK])
        for i in range(0, len(rrows), CHUNK):
            conn.execute(insert(manifest_references), rrows[i:i + CHUNK])
        links = [{"repository_id": n % 20 + 1, "blob_id": n + 1, "created_at": old} for n in range(total_blobs)]
        for i in range(0, len(links), CHUNK):
            conn.execute(insert(repository_blobs), links[i:i + CHUNK])
    for n in garbage:
        storage.put(blob_key(digest_of(n), 1), b"x")
    return db, storage, time.monotonic() - started


def scenario(total: int, fraction: float, manifests_count: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="dockyard-gc-bench-"))
    try:
        db, storage, build_s = build(root, total, fraction, manifests_count)
        gc = GarbageCollector(db, storage, grace_seconds=86400)
        dry = gc.run(dry_run=True)
        result = gc.run()
        files_left = sum(1 for _ in (root / "storage" / "blobs").rglob("g1"))
        assert result["deleted"] == int(total * fraction) and files_left == 0, (result, files_left)
        db.dispose()
        return {"blobs": total, "manifests": manifests_count, "garbage": result["deleted"], "fraction": fraction,
                "dry_s": dry["seconds"], "gc_s": result["seconds"], "per_blob_us": 1e6 * result["seconds"] / max(result["deleted"], 1),
                "build_s": build_s}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def table(results: list[dict]) -> str:
    lines = ["| blobs | manifests | garbage | dry run (s) | GC run (s) | µs per deleted blob |", "|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['blobs']:,} | {r['manifests']:,} | {r['garbage']:,} ({r['fraction']:.0%}) | {r['dry_s']:.3f} | "
                     f"{r['gc_s']:.2f} | {r['per_blob_us']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    plan = [(10_000, 0.10, 2_000), (10_000, 0.01, 2_000)] if args.quick else [
        (100_000, 0.10, 20_000), (100_000, 0.01, 20_000), (50_000, 0.10, 10_000), (200_000, 0.01, 40_000)]
    results = []
    for total, fraction, mcount in plan:
        r = scenario(total, fraction, mcount)
        print(f"{total:>7} blobs, {fraction:.0%} garbage: GC {r['gc_s']:.2f}s, dry run {r['dry_s']:.3f}s (built in {r['build_s']:.1f}s)", flush=True)
        results.append(r)
    text = table(results)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
