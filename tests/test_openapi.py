"""/openapi.json describes exactly the routes the app serves, with the request schema it validates."""

from __future__ import annotations

import json
import re
from typing import Any

from broker.api.openapi import document
from broker.schema import JobRequest


async def test_every_served_route_is_documented_and_nothing_else(make_client: Any) -> None:
    client = await make_client()
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    body = await (await client.get("/openapi.json")).json()
    documented = {(method.upper(), path) for path, ops in body["paths"].items() for method in ops}
    assert served == documented


def test_job_schema_is_the_one_the_handlers_validate() -> None:
    schema = document()["components"]["schemas"]["JobRequest"]
    assert set(schema["properties"]) == set(JobRequest.model_fields)
    assert schema["properties"]["duration_s"]["maximum"] == 10
    assert schema["additionalProperties"] is False
    assert schema["properties"]["image_upload"]["readOnly"] is True  # set from a multipart upload only


def test_every_reference_resolves_to_a_component() -> None:
    doc = document()
    refs = set(re.findall(r'"\$ref": "([^"]+)"', json.dumps(doc)))
    assert refs, "the document uses shared components"
    components = doc["components"]["schemas"]
    assert {ref for ref in refs if ref.removeprefix("#/components/schemas/") not in components} == set()
