"""/api/v1/docs: Swagger UI from the pinned `swagger-ui-bundle` package, never from a CDN.

Works offline, and its Content-Security-Policy allows scripts and styles from this origin only (the
start-up script is a file too, not inline). "Try it out" sends X-Dockyard-Client, which state-changing
requests need (api/surface.py).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Dockyard management API</title>
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-spec="{spec}"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/init.js"></script>
</body>
</html>
"""

_INIT = """window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.spec,
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  deepLinking: true,
  requestInterceptor: function (request) {
    request.headers["X-Dockyard-Client"] = "swagger-ui";
    return request;
  },
});
"""


def add_docs(api: FastAPI) -> None:
    api.mount("/docs/assets", StaticFiles(directory=swagger_ui_path), name="swagger-ui-assets")

    @api.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        spec = request.scope.get("root_path", "").rstrip("/") + (api.openapi_url or "/openapi.json")
        html = _PAGE.format(spec=spec.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;"))
        return HTMLResponse(html, headers={"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-store"})

    @api.get("/docs/init.js", include_in_schema=False)
    async def docs_init() -> Response:
        return Response(_INIT, media_type="text/javascript", headers={"Content-Security-Policy": DOCS_CSP})
