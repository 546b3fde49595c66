"""Two replicas with no shared disk, on one Redis store and one S3 bucket: each serves the other's
outputs and posters by a presigned redirect, and an upload one accepted is there for the other."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import aiohttp

from broker.api.app import create_app
from broker.appkeys import ARTIFACTS, STORE
from broker.settings import Settings
from broker.store.redis import RedisStore
from tests.support.adapters import png_bytes as png
from tests.support.api import wait_for_status
from tests.support.deployment import REDIS_URL, TEST_ENV, auth, fake_config, fast_sleep
from tests.support.fakes import FakeProvider
from tests.support.s3 import S3Server, moto_endpoint, s3  # noqa: F401 - fixtures


async def _fetch(url: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.content_type, await response.read()


async def test_replicas_without_shared_disk_serve_each_others_outputs_by_redirect(
    aiohttp_client: Any,
    tmp_path: Path,
    providers: dict[str, FakeProvider],
    s3: S3Server,  # noqa: F811 - the fixture
    prefix: str,
) -> None:
    replicas = []
    for name in ("a", "b"):
        settings = Settings(
            store_url=REDIS_URL,
            redis_prefix=prefix,
            data_dir=tmp_path / f"replica-{name}",  # each its own disk
            artifacts_url=s3.url("outputs-test"),
            workers=2,
        )
        app = create_app(
            settings,
            fake_config(),
            env=TEST_ENV,
            factories={name: fake.build for name, fake in providers.items()},
            sleep=fast_sleep,
        )
        replicas.append(await aiohttp_client(app))
    a, b = replicas
    assert isinstance(a.app[STORE], RedisStore)

    form = aiohttp.FormData({"prompt": "a slow pan"})
    form.add_field("image", png(640, 360), filename="still.png", content_type="image/png")
    made_on_a = await a.post("/v1/jobs", data=form, headers=auth())
    made_on_b = await b.post("/v1/jobs", json={"prompt": "a slow tilt"}, headers=auth())
    assert made_on_a.status == made_on_b.status == 202
    jobs = [(await made_on_a.json())["id"], (await made_on_b.json())["id"]]
    for job_id, other in zip(jobs, (b, a), strict=True):
        done = await wait_for_status(other, job_id, "succeeded", "failed")
        assert done["status"] == "succeeded", done
        output = done["output"]
        redirect = await other.get(output["url"], headers=auth(), allow_redirects=False)
        assert redirect.status == 302 and redirect.headers["Cache-Control"] == "private, no-store"
        location = redirect.headers["Location"]
        assert location.startswith(s3.endpoint) and "X-Amz-Expires=300" in location
        status, content_type, body = await _fetch(location)
        assert (status, content_type) == (200, "video/mp4")
        assert hashlib.sha256(body).hexdigest() == output["sha256"] and len(body) == output["bytes"]
        poster = await other.get(f"/v1/jobs/{job_id}/poster", headers=auth(), allow_redirects=False)
        assert poster.status == 302
        status, content_type, body = await _fetch(poster.headers["Location"])
        assert (status, content_type, body[:2]) == (200, "image/jpeg", b"\xff\xd8")
    # Nothing of either job's output is on either replica's own disk.
    assert not list(tmp_path.rglob("*.mp4")) and not list(tmp_path.rglob("*.jpg"))
    # The upload replica a accepted is in the bucket, where replica b reads it.
    upload = (await (await b.get(f"/v1/jobs/{jobs[0]}", headers=auth())).json())["request"]["image_upload"]
    assert await b.app[ARTIFACTS].read_upload(upload) == png(640, 360)
