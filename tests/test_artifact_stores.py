"""The artifact-store protocol, on the filesystem and on a real S3 API (moto's server): the same
contract for both, files moved in without being read whole, and URLs signed where the store signs."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from broker.store.artifacts import ArtifactStore, FileArtifacts, open_artifacts, output_key
from broker.store.base import StoreUnavailable
from broker.store.s3_artifacts import S3Artifacts
from tests.support.s3 import S3Server, moto_endpoint, s3  # noqa: F401 - fixtures


@pytest.fixture(params=["files", "s3"])
async def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ArtifactStore]:
    if request.param == "files":
        store = open_artifacts(None, tmp_path / "data")
    else:
        server: S3Server = request.getfixturevalue("s3")
        store = open_artifacts(server.url("replica-test"), tmp_path / "data")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_a_file_is_moved_in_and_read_back_whole_and_in_chunks(artifacts: ArtifactStore) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)  # past one chunk, and past S3's single-part size
    partial = artifacts.partial_path("att_1")
    partial.write_bytes(body)
    await artifacts.put_file(output_key("job_1"), partial, "video/mp4")
    assert not partial.exists()
    assert await artifacts.exists(output_key("job_1"))
    assert await artifacts.get_bytes(output_key("job_1")) == body
    chunks = [chunk async for chunk in artifacts.stream(output_key("job_1"))]
    assert len(chunks) > 1 and b"".join(chunks) == body
    await artifacts.delete(output_key("job_1"))
    assert not await artifacts.exists(output_key("job_1"))
    await artifacts.delete(output_key("job_1"))  # deleting twice is no error


async def test_uploads_are_stored_once_by_digest(artifacts: ArtifactStore) -> None:
    digest = await artifacts.save_upload(b"\x89PNG not really")
    assert digest == hashlib.sha256(b"\x89PNG not really").hexdigest()
    assert await artifacts.save_upload(b"\x89PNG not really") == digest
    assert await artifacts.read_upload(digest) == b"\x89PNG not really"


async def test_a_missing_artifact_is_file_not_found(artifacts: ArtifactStore) -> None:
    assert not await artifacts.exists(output_key("nope"))
    with pytest.raises(FileNotFoundError):
        await artifacts.get_bytes(output_key("nope"))


async def test_s3_signs_urls_that_serve_without_credentials(s3: S3Server, tmp_path: Path) -> None:  # noqa: F811
    store = open_artifacts(s3.url(), tmp_path / "data")
    assert isinstance(store, S3Artifacts)
    await store.open()
    await store.put_bytes(output_key("job_1"), b"an mp4", "video/mp4")
    url = await store.signed_url(output_key("job_1"), 60)
    assert url is not None and url.startswith(s3.endpoint) and "X-Amz-Signature=" in url
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200 and await response.read() == b"an mp4"
        assert response.content_type == "video/mp4"


async def test_files_sign_nothing_and_refuse_keys_outside_their_root(tmp_path: Path) -> None:
    store = FileArtifacts(tmp_path / "data")
    await store.open()
    assert await store.signed_url(output_key("job_1"), 60) is None
    with pytest.raises(FileNotFoundError):
        await store.get_bytes("../../etc/passwd")


async def test_an_unreachable_bucket_is_store_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    store = open_artifacts("s3://media/broker", tmp_path / "data")
    with pytest.raises(StoreUnavailable, match="s3://media/broker"):
        await store.put_bytes(output_key("job_1"), b"x", "video/mp4")


def test_a_bad_artifacts_url_is_refused_with_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        open_artifacts("gs://media", tmp_path)
