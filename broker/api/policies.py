"""`/v1/policies`: read a team's policy (a team its own, the admin every team's), edit it with the admin
key, and read who changed what and when.

Version 0 is the policy in config.yaml; every edit through the API stores the next version, compared
against the version the editor last read (`If-Match: "<version>"` or a `version` field), so two
editors cannot overwrite each other unseen. An edit replaces the team's own fields; fields it leaves
out inherit from the `default` policy.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from broker.api.common import identity_of, json_response
from broker.api.intake import read_json
from broker.appkeys import DEPLOYMENT, STORE
from broker.auth import Identity, require_admin
from broker.errors import Forbidden, InvalidRequest, NotFound
from broker.jobs.budgets import budget_status
from broker.jobs.routing import current_policy
from broker.store.base import PolicyVersion, policy_diff
from policies.edits import PolicyInvalid, check_names, parse_policy, stored_form

routes = web.RouteTableDef()
_VERSION_TAG = re.compile(r"[0-9]{1,18}")


def _known_team(request: web.Request, identity: Identity) -> str:
    """The team in the path, if it exists and the caller may read it."""
    team = request.match_info["team"]
    if not identity.admin and identity.team != team:
        raise Forbidden("a team key reads only its own team's policy; other teams need the admin key")
    if team not in {t.name for t in request.app[DEPLOYMENT].config.teams}:
        raise NotFound(f"no team named {team!r}")
    return team


def _config_form(request: web.Request, team: str) -> dict[str, Any]:
    """The team's own policy fields as config.yaml gives them (version 0)."""
    config = request.app[DEPLOYMENT].config
    named = next((t.policy for t in config.teams if t.name == team), None)
    if named is None or named not in config.policies:
        return {}
    return config.policies[named].model_dump(mode="json", exclude_unset=True)


async def _policy_body(request: web.Request, team: str) -> dict[str, Any]:
    stored = await request.app[STORE].get_policy(team)
    effective = await current_policy(request.app[DEPLOYMENT].config, request.app[STORE], team)
    body: dict[str, Any] = {
        "team": team,
        "version": 0 if stored is None else stored.version,
        "source": "config" if stored is None else "api",
        "policy": _config_form(request, team) if stored is None else stored.policy,
        "effective": effective.model_dump(mode="json"),
        "updated_by": None if stored is None else stored.actor,
        "updated_at": None if stored is None else stored.changed_at.isoformat(),
        "budgets": await budget_status(request.app[STORE], team, effective, datetime.now(UTC)),
    }
    return body


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


@routes.get("/v1/policies")
async def list_policies(request: web.Request) -> web.Response:
    """Every team's policy for the admin; a team's own for a team key."""
    identity = identity_of(request)
    names = [
        t.name for t in request.app[DEPLOYMENT].config.teams if identity.admin or t.name == identity.team
    ]
    return json_response({"policies": [await _policy_body(request, name) for name in names]})


@routes.get("/v1/policies/{team}")
async def get_policy(request: web.Request) -> web.Response:
    """One team's policy: its own fields, the effective policy, its version and its budgets."""
    team = _known_team(request, identity_of(request))
    body = await _policy_body(request, team)
    return json_response(body, headers=_etag(body["version"]))


def _expected_version(request: web.Request, body: dict[str, Any]) -> int:
    """The version the editor read: from `If-Match` or the body's `version` (which must agree)."""
    versions: list[int] = []
    if (header := request.headers.get("If-Match")) is not None:
        tag = header.strip().strip('"')
        # ASCII digits only, and few: str.isdigit() admits "²", and int() refuses 4,300+ digits.
        if _VERSION_TAG.fullmatch(tag) is None:
            raise InvalidRequest('If-Match: send the version read, as "<number>"')
        versions.append(int(tag))
    if "version" in body:
        version = body.pop("version")
        if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version < 2**63:
            raise InvalidRequest("version: must be a whole number of at least 0")
        versions.append(version)
    if not versions:
        raise InvalidRequest('send the version you read, as If-Match: "<version>" or a version field')
    if len(set(versions)) > 1:
        raise InvalidRequest("If-Match and version disagree")
    return versions[0]


@routes.put("/v1/policies/{team}")
async def put_policy(request: web.Request) -> web.Response:
    """Replace a team's policy (admin key), as the next version after the one the editor read."""
    identity = identity_of(request)
    require_admin(identity)
    team = _known_team(request, identity)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object of policy fields")
    expected = _expected_version(request, body)
    config = request.app[DEPLOYMENT].config
    try:
        policy = parse_policy(body)
        check_names(policy, config.providers, config.routes)
    except PolicyInvalid as exc:
        raise InvalidRequest(f"invalid policy: {exc}", details=exc.problems) from None
    at = datetime.now(UTC)
    await request.app[STORE].put_policy(
        team, stored_form(policy), expected_version=expected, actor=identity.name, at=at
    )
    answer = await _policy_body(request, team)
    return json_response(answer, headers=_etag(answer["version"]))


def _version_body(version: PolicyVersion, previous: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": version.version,
        "actor": version.actor,
        "changed_at": version.changed_at.isoformat(),
        "change": policy_diff(previous, version.policy),
        "policy": version.policy,
    }


@routes.get("/v1/policies/{team}/history")
async def policy_history(request: web.Request) -> web.Response:
    """Every version of a team's policy, oldest first: who changed what (field -> [old, new]) and when."""
    team = _known_team(request, identity_of(request))
    previous = _config_form(request, team)
    versions = [{"version": 0, "actor": "config.yaml", "changed_at": None, "change": {}, "policy": previous}]
    for stored in await request.app[STORE].policy_history(team):
        versions.append(_version_body(stored, previous))
        previous = stored.policy
    return json_response({"team": team, "versions": versions})
