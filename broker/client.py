"""A small async client for the broker's HTTP API, for product teams' Python services.

    async with BrokerClient("http://broker.internal:8080", api_key) as broker:
        job = await broker.submit({"prompt": "slow push in"}, image=Path("still.png"))
        job = await broker.wait(job.id)
        await broker.download(job.id, Path("clip.mp4"))

Every call returns the API's typed models (`Job`); an error answer raises `BrokerAPIError` with its
status, code and message. Retrying `submit` with the same `idempotency_key` is always safe.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from broker.schema import Job, JobRequest

if TYPE_CHECKING:  # imported when a client is made: the CLI's sync twin starts without aiohttp
    import aiohttp

JobLike = Mapping[str, Any] | JobRequest


class BrokerAPIError(Exception):
    """An error answer from the broker: the envelope's code, message and details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


def job_path(job_id: str, tail: str = "") -> str:
    """The API path of one job (a job id as one path segment, whatever a caller typed)."""
    return f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}{tail}"


def list_params(status: str | None, limit: int, cursor: str | None) -> dict[str, str]:
    """The query of one page of `GET /v1/jobs`."""
    given = {"status": status, "limit": limit, "cursor": cursor}
    return {key: str(value) for key, value in given.items() if value is not None}


def batch_path(batch_id: str, tail: str = "") -> str:
    """The API path of one batch."""
    return f"/v1/batches/{urllib.parse.quote(batch_id, safe='')}{tail}"


def batch_body(items: Sequence[JobLike], metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The JSON body of `POST /v1/batches`."""
    body: dict[str, Any] = {"items": [request_fields(item) for item in items]}
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return body


def policy_headers(version: int) -> dict[str, str]:
    """The headers of a policy write: the version the editor read, as `If-Match`."""
    return {"If-Match": f'"{version}"', "Content-Type": "application/json"}


def report_params(
    start: str | None = None, end: str | None = None, group_by: str | None = None, team: str | None = None
) -> dict[str, str]:
    """The query of `GET /v1/reports/costs` (and of the reconciliation, which ignores `group_by`)."""
    given = {"from": start, "to": end, "group_by": group_by, "team": team}
    return {key: value for key, value in given.items() if value is not None}


def request_fields(request: JobLike) -> dict[str, Any]:
    """The request's fields as a JSON body: those set, none that are None."""
    if isinstance(request, JobRequest):
        # Only what the caller set: an inferred mode must not contradict an image sent as an upload.
        return request.model_dump(mode="json", exclude_unset=True, exclude={"image_upload"})
    return {name: value for name, value in request.items() if value is not None}


def form_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """The same fields as multipart form values: objects, lists and booleans as JSON."""
    return {
        name: json.dumps(value) if isinstance(value, dict | list | bool) else str(value)
        for name, value in fields.items()
    }


class BrokerClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 60,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._session = session
        self._owned = session is None
        self._timeout_s = timeout_s

    async def __aenter__(self) -> BrokerClient:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owned and self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._session is None:
            raise RuntimeError("use `async with BrokerClient(...)`, or pass a session")
        headers = {**self._headers, **kwargs.pop("headers", {})}
        async with self._session.request(method, self._base + path, headers=headers, **kwargs) as response:
            body = await response.read()
            payload = json.loads(body) if response.content_type == "application/json" and body else None
            if response.status >= 400:
                error = (payload or {}).get("error", {}) if isinstance(payload, dict) else {}
                raise BrokerAPIError(
                    response.status,
                    error.get("code", "http_error"),
                    error.get("message", response.reason or ""),
                    error.get("details"),
                )
            return payload if payload is not None else body

    async def quote(self, request: JobLike) -> dict[str, Any]:
        """What the job would cost and where it would go; creates nothing."""
        answer: dict[str, Any] = await self._call("POST", "/v1/quotes", json=request_fields(request))
        return answer

    async def submit(
        self, request: JobLike, *, image: bytes | Path | None = None, idempotency_key: str | None = None
    ) -> Job:
        """Submit a job; with `image` (bytes or a file) it goes as a multipart upload."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        fields = request_fields(request)
        if image is None:
            answer = await self._call("POST", "/v1/jobs", json=fields, headers=headers)
            return Job.model_validate(answer)
        import aiohttp

        form = aiohttp.FormData()
        for name, value in form_fields(fields).items():
            form.add_field(name, value)
        data = image.read_bytes() if isinstance(image, Path) else image
        form.add_field("image", data, filename="image", content_type="application/octet-stream")
        return Job.model_validate(await self._call("POST", "/v1/jobs", data=form, headers=headers))

    async def pricing(self) -> dict[str, Any]:
        """`GET /v1/pricing`: every route's price in its own unit and in USD."""
        answer: dict[str, Any] = await self._call("GET", "/v1/pricing")
        return answer

    async def providers(self) -> list[dict[str, Any]]:
        """`GET /v1/providers`: each provider's circuit, capacity in use, latency and error rate."""
        answer = await self._call("GET", "/v1/providers")
        providers: list[dict[str, Any]] = answer["providers"]
        return providers

    async def policies(self) -> list[dict[str, Any]]:
        """Every team's policy (the admin key), or the key's own team's, with versions and budgets."""
        policies: list[dict[str, Any]] = (await self._call("GET", "/v1/policies"))["policies"]
        return policies

    async def policy(self, team: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call("GET", f"/v1/policies/{urllib.parse.quote(team, safe='')}")
        return answer

    async def put_policy(self, team: str, fields: Mapping[str, Any], *, version: int) -> dict[str, Any]:
        """Save `fields` as the team's policy, as the version after `version` (409 if it moved on)."""
        path = f"/v1/policies/{urllib.parse.quote(team, safe='')}"
        body = json.dumps(dict(fields)).encode()
        answer: dict[str, Any] = await self._call("PUT", path, data=body, headers=policy_headers(version))
        return answer

    async def policy_history(self, team: str) -> list[dict[str, Any]]:
        path = f"/v1/policies/{urllib.parse.quote(team, safe='')}/history"
        versions: list[dict[str, Any]] = (await self._call("GET", path))["versions"]
        return versions

    async def cost_report(self, **query: str | None) -> dict[str, Any]:
        """`GET /v1/reports/costs` with `start`, `end`, `group_by`, `team` (see `report_params`)."""
        answer: dict[str, Any] = await self._call("GET", "/v1/reports/costs", params=report_params(**query))
        return answer

    async def reconciliation(self, **query: str | None) -> dict[str, Any]:
        path = "/v1/reports/reconciliation"
        answer: dict[str, Any] = await self._call("GET", path, params=report_params(**query))
        return answer

    async def get(self, job_id: str) -> Job:
        return Job.model_validate(await self._call("GET", job_path(job_id)))

    async def list(
        self, *, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Job], str | None]:
        """One page of the team's jobs, newest first, and the cursor of the next page."""
        answer = await self._call("GET", "/v1/jobs", params=list_params(status, limit, cursor))
        return [Job.model_validate(job) for job in answer["jobs"]], answer["next_cursor"]

    async def cancel(self, job_id: str) -> Job:
        return Job.model_validate(await self._call("DELETE", job_path(job_id)))

    async def submit_batch(
        self,
        items: Sequence[JobLike],
        *,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit up to 1,000 jobs at once, all or none; the batch with each item's job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = batch_body(items, metadata)
        answer: dict[str, Any] = await self._call("POST", "/v1/batches", json=body, headers=headers)
        return answer

    async def batch(self, batch_id: str) -> dict[str, Any]:
        """The batch: counts by status, cost so far, each item's job."""
        answer: dict[str, Any] = await self._call("GET", batch_path(batch_id))
        return answer

    async def batch_manifest(self, batch_id: str) -> dict[str, Any]:
        """Each succeeded item's output link, and the items without one."""
        answer: dict[str, Any] = await self._call("GET", batch_path(batch_id, "/manifest"))
        return answer

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Cancel the batch's jobs that have not ended."""
        answer: dict[str, Any] = await self._call("DELETE", batch_path(batch_id))
        return answer

    async def wait(
        self,
        job_id: str,
        *,
        poll_s: float = 1.0,
        timeout_s: float = 900.0,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job ends; `on_update` sees every answer. TimeoutError past `timeout_s`."""
        import asyncio  # here, not at the top: the CLI's sync twin imports this module and needs none

        deadline = time.monotonic() + timeout_s
        while True:
            job = await self.get(job_id)
            if on_update is not None:
                on_update(job)
            if job.status.terminal:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status.value} after {timeout_s:g} s")
            await asyncio.sleep(poll_s)

    async def download(self, job_id: str, dest: Path) -> Path:
        """Write the job's MP4 to `dest`."""
        dest.write_bytes(await self._call("GET", job_path(job_id, "/output")))
        return dest
