"""Artifacts in an S3-compatible bucket (`BROKER_ARTIFACTS_URL=s3://bucket/prefix`), with obstore.

The endpoint, region and credentials come from the usual AWS variables (`AWS_ENDPOINT_URL`,
`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, ...), so MinIO, Ceph,
R2 or AWS itself take the same setting. Files are uploaded from disk in parts (multipart past a few
megabytes), read back as a stream, and served by presigned GET URLs (SigV4, signed locally: no
request). obstore is a Rust client with native async and typed stubs: no thread pool per call and
no botocore stack in the broker's memory, which aioboto3/aiobotocore would bring.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from broker.store.artifacts import CHUNK, ArtifactStore
from broker.store.base import StoreUnavailable

if TYPE_CHECKING:
    from obstore.store import ClientConfig


@contextmanager
def _reachable(url: str, key: str) -> Iterator[None]:
    """A bucket that fails (unreachable, refused credentials) is a `StoreUnavailable` naming it."""
    try:
        yield
    except BaseError as exc:
        raise StoreUnavailable(f"the artifact store {url} failed on {key}: {type(exc).__name__}") from exc


class S3Artifacts(ArtifactStore):
    def __init__(self, store: S3Store, scratch: Path, url: str) -> None:
        super().__init__(scratch)
        self._store = store
        self.url = url  # s3://bucket/prefix, for messages

    @classmethod
    def from_url(cls, url: str, scratch: Path) -> S3Artifacts:
        """The bucket and key prefix of `s3://bucket/prefix`; the rest from the AWS variables."""
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"BROKER_ARTIFACTS_URL {url!r} names no bucket (s3://bucket/prefix)")
        prefix = parts.path.strip("/") or None
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
        # A plain-http endpoint (MinIO in a cluster, a test server) must be allowed explicitly.
        options: ClientConfig | None = {"allow_http": True} if endpoint.startswith("http://") else None
        store = S3Store(parts.netloc, prefix=prefix, client_options=options)
        return cls(store, scratch, url)

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        with _reachable(self.url, key):
            await obstore.put_async(self._store, key, path, attributes={"Content-Type": content_type})
        path.unlink(missing_ok=True)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        with _reachable(self.url, key):
            await obstore.put_async(self._store, key, data, attributes={"Content-Type": content_type})

    async def get_bytes(self, key: str) -> bytes:
        with _reachable(self.url, key):
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        with _reachable(self.url, key):
            result = await obstore.get_async(self._store, key)
            async for chunk in result.stream(min_chunk_size=CHUNK):
                yield bytes(chunk)

    async def exists(self, key: str) -> bool:
        try:
            with _reachable(self.url, key):
                await obstore.head_async(self._store, key)
        except FileNotFoundError:
            return False
        return True

    async def delete(self, key: str) -> None:
        with _reachable(self.url, key):
            await obstore.delete_async(self._store, key)

    async def signed_url(self, key: str, expires_s: int) -> str | None:
        with _reachable(self.url, key):
            return await obstore.sign_async(self._store, "GET", key, timedelta(seconds=expires_s))
