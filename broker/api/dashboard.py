"""`GET /dashboard`: the cost and jobs page for people, and its vendored script and stylesheet.

The page holds no data of its own: its script asks the same JSON endpoints as any client
(`/v1/reports/costs`, `/v1/jobs`, `/v1/policies`, `/v1/providers`) with the key the visitor enters,
so a team key shows its team and the admin key every team. Nothing is loaded from elsewhere.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from broker.errors import NotFound

routes = web.RouteTableDef()

STATIC = resources.files("broker.api") / "static"
ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
# Everything the page needs comes from this origin; inline script and style are refused.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; media-src 'self' blob:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


@routes.get("/dashboard")
async def dashboard(request: web.Request) -> web.Response:
    return web.Response(text=_asset("dashboard.html"), content_type="text/html", headers=SECURITY_HEADERS)


@routes.get("/dashboard/static/{name}")
async def dashboard_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise NotFound(f"no dashboard asset named {name!r}")
    return web.Response(text=_asset(name), content_type=ASSETS[name], headers=SECURITY_HEADERS)
