"""Nothing the API accepts can fail to load back: any JSON body that parses and validates as a job
request is stored and read back unchanged, on every store kind. Hypothesis writes the bodies, nasty
ones included (deep nesting, NaN, huge numbers, lone surrogates, odd keys)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.api.intake import JSON_MAX_DEPTH, parse_job_request, parse_json, too_deep
from broker.errors import InvalidJson, InvalidRequest
from broker.schema import METADATA_MAX_DEPTH, Job, JobStatus
from broker.store import JobRecord, Store

# Every code point, lone surrogates often: json.dumps escapes them, json.loads brings them back.
ANY_TEXT = st.text(max_size=12) | st.text(
    st.characters(codec=None, exclude_categories=())
    | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    max_size=12,
)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | ANY_TEXT
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=40,
)
DEEP = st.integers(min_value=1, max_value=300).map(lambda n: "[" * n + "]" * n)


def body_text(body: dict[str, Any], deep: str | None) -> bytes:
    raw = json.dumps(body, allow_nan=True)
    if deep is not None:
        raw = raw[:-1] + (", " if body else "") + f'"metadata": {{"deep": {deep}}}}}'
    return raw.encode()


BODIES = st.builds(
    body_text,
    st.fixed_dictionaries(
        {"prompt": ANY_TEXT.filter(str.strip)},
        optional={"metadata": st.dictionaries(ANY_TEXT, VALUES, max_size=4), "seed": LEAVES},
    ),
    st.none() | DEEP,
)
_counter = 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=BODIES)
async def test_every_accepted_body_is_stored_and_read_back_unchanged(store: Store, raw: bytes) -> None:
    global _counter
    try:
        request = parse_job_request(parse_json(raw))
    except (InvalidRequest, InvalidJson):
        return  # refused with a 400: nothing was stored
    _counter += 1
    now = datetime.now(UTC)
    job = Job(
        id=f"job_{_counter:020x}",
        team="growth",
        status=JobStatus.QUEUED,
        request=request,
        created_at=now,
        updated_at=now,
    )
    _, created = await store.create_job(JobRecord(job=job, request_hash="0" * 64))
    assert created
    again = await store.get_job(job.id)
    assert again is not None and again.job == job and again.job.request.metadata == request.metadata


def test_the_depth_scan_agrees_with_the_bounds() -> None:
    assert too_deep(b"[" * JSON_MAX_DEPTH + b"]" * JSON_MAX_DEPTH) is None
    assert too_deep(b'{"metadata": ' + b"[" * JSON_MAX_DEPTH + b"]" * JSON_MAX_DEPTH + b"}") == "metadata"
    assert too_deep(b'{"prompt": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "a": []}') is None
    assert too_deep(b'{"p": "\\"[[[", "m": ' + b"{" * 40) == "m"  # escaped quotes stay inside strings
    inside = "metadata" + ".k" * METADATA_MAX_DEPTH
    nested: Any = 1
    for _ in range(METADATA_MAX_DEPTH):  # metadata itself, then seven more levels: the most allowed
        nested = {"k": nested}
    assert parse_job_request({"prompt": "x", "metadata": nested}).metadata == nested
    try:
        parse_job_request({"prompt": "x", "metadata": {"k": nested}})
    except InvalidRequest as exc:
        assert inside in exc.message and exc.details[0]["field"] == "metadata"
    else:
        raise AssertionError("metadata one level too deep was accepted")
