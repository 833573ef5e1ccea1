#!/usr/bin/env python3
"""SQL statements and transactions per push that webhook delivery costs (issue 10, feature cost).

    python benchmarks/webhook_sql.py [--pushes 120] [--batch 6] [--no-hook]

In process (ASGI, SQLite, webhook receiver an httpx.MockTransport answering 204, no background worker):
`--batch` sequential tag PUTs, then one feed drain and one run of the due jobs, as the server's 50 ms
dispatch coalescing would group them; repeated up to `--pushes`. Counts what SQLAlchemy sends (BEGIN
IMMEDIATE is a write transaction, BEGIN a read one) in the PUT requests and in the background
(fan-out, scan-on-push, webhook jobs), plus the raw reads through Database.fetchone. Counts are
deterministic; the ms figures are wall time on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import tempfile
import time
from pathlib import Path

import anyio.to_thread
import httpx
from sqlalchemy import event

from dockyard.app import create_app
from dockyard.settings import Settings

ADMIN = ("admin", "admin-password-1")
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


async def run(pushes: int, batch: int, hook: bool) -> None:
    settings = Settings(data_dir=Path(tempfile.mkdtemp()) / "data", admin_password=ADMIN[1], worker_enabled=False,
                        auth_mode="none")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = app.state.services
        received: list[httpx.Request] = []
        services.webhook_dispatcher.transport = httpx.MockTransport(lambda r: (received.append(r), httpx.Response(204))[1])
        services.webhooks.resolver = lambda host, port: ["93.184.216.34"]
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://registry.test", auth=ADMIN,
                                   headers={"X-Dockyard-Client": "bench"})
        if hook:
            r = await client.post("/api/v1/system/webhooks", json={"url": "https://hooks.example/in", "name": "bench"})
            assert r.status_code == 201, r.text
        await client.post("/api/v1/projects", json={"name": "bench"})
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        digest = "sha256:" + hashlib.sha256(config).hexdigest()
        r = await client.post("/v2/bench/app/blobs/uploads/", params={"digest": digest}, content=config)
        assert r.status_code == 201, r.text
        manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "layers": [], "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(config)}}).encode()

        async def background() -> None:
            await anyio.to_thread.run_sync(services.feed.drain)
            await anyio.to_thread.run_sync(services.worker.run_pending)

        await background()
        counts: collections.Counter = collections.Counter()
        phase = ["put"]

        def on_execute(conn, cursor, statement, *args) -> None:
            counts[(phase[0], "statements")] += 1
            if statement.startswith("BEGIN"):
                counts[(phase[0], "write transactions" if "IMMEDIATE" in statement else "read transactions")] += 1

        fetchone = services.db.fetchone

        def counted_fetchone(sql, params):
            counts[(phase[0], "raw reads (Database.fetchone)")] += 1
            return fetchone(sql, params)

        event.listen(services.db.engine, "before_cursor_execute", on_execute)
        services.db.fetchone = counted_fetchone
        seconds = collections.Counter()
        for i in range(pushes // batch):
            phase[0], t0 = "put", time.perf_counter()
            for j in range(batch):
                r = await client.put(f"/v2/bench/app/manifests/t{i}-{j}", content=manifest, headers={"Content-Type": MANIFEST})
                assert r.status_code == 201, r.text
            phase[0], t1 = "background", time.perf_counter()
            await background()
            seconds["put"] += t1 - t0
            seconds["background"] += time.perf_counter() - t1
        done = pushes // batch * batch
        print(f"{done} pushes in groups of {batch}, webhook {'on' if hook else 'off'}: {len(received)} deliveries")
        for (where, what), n in sorted(counts.items()):
            print(f"  {where:10s} {what:32s} {n / done:7.2f} per push")
        for where, s in seconds.items():
            print(f"  {where:10s} {'wall ms':32s} {s * 1000 / done:7.2f} per push")
        await client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pushes", type=int, default=120)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--no-hook", action="store_true")
    args = ap.parse_args()
    asyncio.run(run(args.pushes, args.batch, not args.no_hook))


if __name__ == "__main__":
    main()
