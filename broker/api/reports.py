"""`GET /v1/reports/costs`: spend, savings and outcomes per provider, team, model and day; and
`GET /v1/reports/reconciliation`: what was booked against what the providers reported. Both read the
jobs still kept and, for those expired, the daily ledger."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from broker.api.common import identity_of, json_response
from broker.appkeys import CLOCK, DEPLOYMENT, STORE
from broker.auth import Identity
from broker.errors import Forbidden, InvalidRequest
from broker.observability.ledger_figures import ledger_span
from broker.observability.reconciliation import build_reconciliation
from broker.observability.reports import BadParameter, build_report, parse_group_by, report_window
from broker.store import JobRecord
from broker.store.retention import LedgerRow

routes = web.RouteTableDef()
FORMATS = ("json", "csv")


def _bad(exc: BadParameter) -> InvalidRequest:
    return InvalidRequest(str(exc), details=[{"field": exc.param, "message": exc.message}])


def _team_scope(identity: Identity, asked: str | None) -> str | None:
    """The team whose jobs the caller may see: its own, or any (None: all) for the admin."""
    if identity.admin:
        return asked
    if asked is not None and asked != identity.team:
        raise Forbidden("a team key reads only its own team's report")
    return identity.team


async def _records(
    request: web.Request, identity: Identity
) -> tuple[list[JobRecord], list[LedgerRow], datetime, datetime, str | None]:
    """The jobs of the asked window (`from`, `to`) the caller may see and the ledger of those expired,
    with the window and team."""
    query = request.query
    try:
        now = datetime.fromtimestamp(request.app[CLOCK](), UTC)
        start, end = report_window(query.get("from"), query.get("to"), now)
    except BadParameter as exc:
        raise _bad(exc) from None
    team = _team_scope(identity, query.get("team"))
    store = request.app[STORE]
    # The ledger first: a job expiring between the two reads is then missed once, never counted twice.
    ledger = await store.ledger_rows(*ledger_span(start, end), team=team)
    return await store.jobs_created_between(start, end, team=team), ledger, start, end, team


@routes.get("/v1/reports/costs")
async def cost_report(request: web.Request) -> web.Response:
    identity = identity_of(request)
    query = request.query
    fmt = query.get("format", "json")
    try:
        if fmt not in FORMATS:
            raise BadParameter("format", f"must be one of {', '.join(FORMATS)}")
        group_by = parse_group_by(query.get("group_by", "provider"))
    except BadParameter as exc:
        raise _bad(exc) from None
    records, ledger, start, end, team = await _records(request, identity)
    report = build_report(records, group_by, start, end, ledger)
    if fmt == "csv":
        return web.Response(
            text=report.to_csv(),
            content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="costs.csv"'},
        )
    return json_response({**report.to_json(), "team": team})


@routes.get("/v1/reports/reconciliation")
async def reconciliation_report(request: web.Request) -> web.Response:
    """Per provider and day: booked against the providers' own figures, and every attempt that differs."""
    records, ledger, start, end, team = await _records(request, identity_of(request))
    routes = {route.key: route for route in request.app[DEPLOYMENT].config.routes}
    found = build_reconciliation(records, routes, start, end, ledger)
    return json_response({**found.to_json(), "team": team})
