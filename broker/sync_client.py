"""The synchronous twin of `broker.client.BrokerClient`, for scripts, notebooks and the CLI.

    with SyncBrokerClient("http://broker.internal:8080", api_key) as broker:
        job = broker.submit({"prompt": "slow push in"}, image=Path("still.png"))
        job = broker.wait(job.id)
        broker.download(job.id, Path("clip.mp4"))

The same calls and the same errors as the async client (`BrokerAPIError` for an error answer), built
on the standard library's `urllib` alone: it needs no event loop, so it also works inside a notebook,
whose loop is already running. A broker that cannot be reached raises `BrokerUnreachable`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from broker.client import (
    BrokerAPIError,
    JobLike,
    batch_body,
    batch_path,
    form_fields,
    job_path,
    list_params,
    policy_headers,
    report_params,
    request_fields,
)
from broker.schema import Job

DOWNLOAD_CHUNK = 1 << 20


class BrokerUnreachable(Exception):
    """No HTTP answer at all: the broker is down, the URL is wrong, or the connection broke."""


def _multipart(fields: dict[str, str], image: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with `fields` and an `image` part, and its content type."""
    boundary = f"broker-{secrets.token_hex(12)}"
    parts: list[bytes] = []
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(head.encode() + value.encode() + b"\r\n")
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    parts.append(head.encode() + image + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _api_error(error: urllib.error.HTTPError) -> BrokerAPIError:
    body = error.read()
    payload: Any = None
    if error.headers.get_content_type() == "application/json" and body:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
    envelope = payload.get("error", {}) if isinstance(payload, dict) else {}
    return BrokerAPIError(
        error.code,
        envelope.get("code", "http_error"),
        envelope.get("message", error.reason or ""),
        envelope.get("details"),
    )


class SyncBrokerClient:
    """Blocking calls to the broker's HTTP API; every method mirrors `BrokerClient`'s."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 60) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = timeout_s

    def __enter__(self) -> SyncBrokerClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (one connection per call); here so both clients read alike."""

    def _open(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        url = self._base + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        request = urllib.request.Request(
            url, data=body, method=method, headers={**self._headers, **(headers or {})}
        )
        try:
            return urllib.request.urlopen(request, timeout=self._timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise _api_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BrokerUnreachable(f"cannot reach the broker at {self._base}: {reason}") from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON (or its bytes when it is not JSON)."""
        with self._open(method, path, **kwargs) as response, self._reading():
            body = response.read()
        if response.headers.get_content_type() == "application/json" and body:
            return json.loads(body)
        return body

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """An answer cut off mid-body is the broker's connection breaking, not the caller's bug."""
        try:
            yield
        except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:
            raise BrokerUnreachable(f"the connection to {self._base} broke: {exc!r}") from None

    def quote(self, request: JobLike, *, image: bytes | Path | None = None) -> dict[str, Any]:
        """What the job would cost and where it would go; creates nothing. `image` as in `submit`."""
        answer: dict[str, Any] = self._send_job("/v1/quotes", request, image, {})
        return answer

    def submit(
        self, request: JobLike, *, image: bytes | Path | None = None, idempotency_key: str | None = None
    ) -> Job:
        """Submit a job; with `image` (bytes or a file) it goes as a multipart upload."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Job.model_validate(self._send_job("/v1/jobs", request, image, headers))

    def _send_job(
        self, path: str, request: JobLike, image: bytes | Path | None, headers: dict[str, str]
    ) -> Any:
        fields = request_fields(request)
        if image is None:
            body = json.dumps(fields).encode()
            return self._call(
                "POST", path, body=body, headers={**headers, "Content-Type": "application/json"}
            )
        data = image.read_bytes() if isinstance(image, Path) else image
        body, content_type = _multipart(form_fields(fields), data)
        return self._call("POST", path, body=body, headers={**headers, "Content-Type": content_type})

    def providers(self) -> list[dict[str, Any]]:
        """`GET /v1/providers`: each provider's circuit, capacity in use, latency and error rate."""
        providers: list[dict[str, Any]] = self._call("GET", "/v1/providers")["providers"]
        return providers

    def policies(self) -> list[dict[str, Any]]:
        """Every team's policy (the admin key), or the key's own team's, with versions and budgets."""
        policies: list[dict[str, Any]] = self._call("GET", "/v1/policies")["policies"]
        return policies

    def policy(self, team: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", f"/v1/policies/{urllib.parse.quote(team, safe='')}")
        return answer

    def put_policy(self, team: str, fields: dict[str, Any], *, version: int) -> dict[str, Any]:
        """Save `fields` as the team's policy, as the version after `version` (409 if it moved on)."""
        path = f"/v1/policies/{urllib.parse.quote(team, safe='')}"
        body = json.dumps(fields).encode()
        answer: dict[str, Any] = self._call("PUT", path, body=body, headers=policy_headers(version))
        return answer

    def policy_history(self, team: str) -> list[dict[str, Any]]:
        path = f"/v1/policies/{urllib.parse.quote(team, safe='')}/history"
        versions: list[dict[str, Any]] = self._call("GET", path)["versions"]
        return versions

    def cost_report(self, **query: str | None) -> dict[str, Any]:
        """`GET /v1/reports/costs` with `start`, `end`, `group_by`, `team` (see `report_params`)."""
        answer: dict[str, Any] = self._call("GET", "/v1/reports/costs", params=report_params(**query))
        return answer

    def reconciliation(self, **query: str | None) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(
            "GET", "/v1/reports/reconciliation", params=report_params(**query)
        )
        return answer

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._call("GET", job_path(job_id)))

    def list(
        self, *, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Job], str | None]:
        """One page of the team's jobs (every team's for the admin key), newest first, and the next cursor."""
        answer = self._call("GET", "/v1/jobs", params=list_params(status, limit, cursor))
        return [Job.model_validate(job) for job in answer["jobs"]], answer["next_cursor"]

    def cancel(self, job_id: str) -> Job:
        return Job.model_validate(self._call("DELETE", job_path(job_id)))

    def submit_batch(
        self,
        items: Sequence[JobLike],
        *,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit up to 1,000 jobs at once, all or none; the batch with each item's job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = json.dumps(batch_body(items, metadata)).encode()
        answer: dict[str, Any] = self._call(
            "POST", "/v1/batches", body=body, headers={**headers, "Content-Type": "application/json"}
        )
        return answer

    def batch(self, batch_id: str) -> dict[str, Any]:
        """The batch: counts by status, cost so far, each item's job."""
        answer: dict[str, Any] = self._call("GET", batch_path(batch_id))
        return answer

    def batch_manifest(self, batch_id: str) -> dict[str, Any]:
        """Each succeeded item's output link, and the items without one."""
        answer: dict[str, Any] = self._call("GET", batch_path(batch_id, "/manifest"))
        return answer

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Cancel the batch's jobs that have not ended."""
        answer: dict[str, Any] = self._call("DELETE", batch_path(batch_id))
        return answer

    def pricing(self) -> dict[str, Any]:
        """`GET /v1/pricing`: every route's price in its own unit and in USD."""
        answer: dict[str, Any] = self._call("GET", "/v1/pricing")
        return answer

    def wait(
        self,
        job_id: str,
        *,
        poll_s: float = 1.0,
        timeout_s: float = 900.0,
        on_update: Callable[[Job], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Job:
        """Poll until the job ends; `on_update` sees every answer. TimeoutError past `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get(job_id)
            if on_update is not None:
                on_update(job)
            if job.status.terminal:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status.value} after {timeout_s:g} s")
            sleep(poll_s)

    def download(self, job_id: str, dest: Path) -> Path:
        """Stream the job's MP4 to `dest` (written under a temporary name, then renamed into place)."""
        partial = dest.with_name(dest.name + ".part")
        try:
            with (
                self._open("GET", job_path(job_id, "/output")) as response,
                self._reading(),
                partial.open("wb") as out,
            ):
                written = sum(out.write(chunk) for chunk in _chunks(response))
                expected = response.headers.get("Content-Length")
                # A read of a given size returns short at a closed connection rather than raising.
                if expected is not None and written != int(expected):
                    raise BrokerUnreachable(
                        f"the connection to {self._base} broke after {written} of {expected} bytes"
                    )
            partial.replace(dest)
        finally:
            partial.unlink(missing_ok=True)
        return dest


def _chunks(response: Any) -> Iterator[bytes]:
    while chunk := response.read(DOWNLOAD_CHUNK):
        yield chunk
