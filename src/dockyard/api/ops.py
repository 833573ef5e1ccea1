"""Operator endpoints outside /v2 and /api/v1: /metrics, /healthz (liveness), /readyz (readiness).

They skip registry authentication (a load balancer or Prometheus has no registry account);
/metrics has its own guard, `metrics_access`: open, token (a bearer token from the settings,
compared in constant time) or off (404, as if the route did not exist).
"""

from __future__ import annotations

import asyncio
import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dockyard.observability.metrics import CONTENT_TYPE, Metrics
from dockyard.observability.readiness import Readiness
from dockyard.settings import Settings

_NO_STORE = {"Cache-Control": "no-store"}


def ops_routes(settings: Settings, metrics: Metrics, readiness: Readiness) -> list[Route]:
    access = settings.metrics_access
    expected = settings.metrics_token.get_secret_value().encode() if settings.metrics_token else b""

    async def metrics_endpoint(request: Request) -> Response:
        if access == "off":
            return JSONResponse({"errors": [{"code": "NOT_FOUND", "message": "not found"}]}, 404)
        if access == "token":
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not expected or not hmac.compare_digest(given.strip().encode(), expected):
                sent = scheme.lower() == "bearer" and given.strip()
                message = "a valid metrics bearer token is required" + ("" if sent else " (send Authorization: Bearer TOKEN)")
                return JSONResponse(
                    {"errors": [{"code": "UNAUTHORIZED", "message": message}]}, 401,
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        return Response(await exposition(), media_type=CONTENT_TYPE, headers=_NO_STORE)

    running: list[asyncio.Future] = []  # the exposition being made, shared by scrapes that arrive meanwhile

    async def exposition() -> bytes:
        """One exposition at a time (single flight): a scrape runs the database collectors, and with
        metrics_access open anyone may send scrapes; those that arrive while one is made share it."""
        if not running:
            metrics.flush()  # this process's batched numbers (on the loop, where they are kept)
            future = asyncio.ensure_future(asyncio.to_thread(metrics.exposition))  # collectors read the database
            running.append(future)
            future.add_done_callback(lambda _f: running.clear())
        return await asyncio.shield(running[0])

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers=_NO_STORE)

    async def readyz(_request: Request) -> Response:
        checks = await readiness.check()
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                            status_code=200 if ready else 503, headers=_NO_STORE)

    return [
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]
