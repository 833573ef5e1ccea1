"""Ping and catalog."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from dockyard.api.services import services_of
from dockyard.api.http import json_response
from dockyard.domain.listings import CursorPage, parse_page_size


async def ping(request: Request) -> Response:
    return json_response({})


def link_header(path: str, page: CursorPage) -> dict[str, str]:
    if page.next_last is None:
        return {}
    query = urlencode({"last": page.next_last, "n": page.limit})
    return {"Link": f'<{path}?{query}>; rel="next"'}


async def catalog(request: Request) -> Response:
    services = services_of(request)
    n = parse_page_size(request.query_params.get("n"))
    visible = await services.db.run(services.gate.admission.repository_filter, request.state.principal)
    page = await services.db.run(services.listings.catalog, n, request.query_params.get("last"), visible)
    return json_response({"repositories": page.items}, headers=link_header("/v2/_catalog", page))
