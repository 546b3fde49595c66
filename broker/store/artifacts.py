"""The artifact store: uploaded images, finished MP4s and their posters, behind one protocol.

Two implementations: `FileArtifacts`, files under `BROKER_DATA_DIR` (the embedded default; replicas
would have to mount one directory), and `S3Artifacts` (broker/store/s3_artifacts.py), an S3-compatible
bucket named by `BROKER_ARTIFACTS_URL=s3://bucket/prefix`, which replicas share with no common disk.
Artifacts are addressed by key (`output_key`, `poster_key`, `upload_key`); a download in progress is
a local scratch file (`partial_path`) that `put_file` moves into the store once it is checked.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from adapters.errors import OutputInvalid

__all__ = ["ArtifactStore", "FileArtifacts", "OutputInvalid", "open_artifacts"]

CHUNK = 1 << 20


def output_key(job_id: str) -> str:
    return f"outputs/{job_id}.mp4"


def poster_key(job_id: str) -> str:
    """The job's poster: the first frame of its output as a JPEG (the `thumbnail` of a video)."""
    return f"posters/{job_id}.jpg"


def upload_key(digest: str) -> str:
    return f"uploads/{digest}"


class ArtifactStore(abc.ABC):
    """Where artifacts live. A missing key raises `FileNotFoundError` from every read."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch  # this process's own folder for downloads in progress

    async def open(self) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:  # noqa: B027 - a store without connections has nothing to close
        pass

    def partial_path(self, attempt_id: str) -> Path:
        """Where an attempt's download is written before it is checked and moved into the store."""
        return self.scratch / f"{attempt_id}.mp4"

    @abc.abstractmethod
    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Move the local file at `path` into the store under `key` (streamed; `path` is gone after)."""

    @abc.abstractmethod
    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    @abc.abstractmethod
    async def get_bytes(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def stream(self, key: str) -> AsyncIterator[bytes]:
        """The artifact in chunks, never whole in memory."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the artifact; a missing one is no error."""

    def local_path(self, key: str) -> Path | None:
        """The artifact as a local file, where the store keeps files (else None)."""
        return None

    async def signed_url(self, key: str, expires_s: int) -> str | None:
        """A URL that serves the artifact without credentials for `expires_s`, where the store signs."""
        return None

    async def save_upload(self, data: bytes, digest: str | None = None) -> str:
        """Store an uploaded image under its SHA-256 (`digest`, where the caller has it) and return the
        digest (a repeat is free)."""
        digest = digest or hashlib.sha256(data).hexdigest()
        if not await self.exists(upload_key(digest)):
            await self.put_bytes(upload_key(digest), data, "application/octet-stream")
        return digest

    async def read_upload(self, digest: str) -> bytes:
        return await self.get_bytes(upload_key(digest))


class FileArtifacts(ArtifactStore):
    """Artifacts as files under `root`; written to a scratch name and renamed, so a crash never leaves a
    half-written artifact under its final name."""

    def __init__(self, root: Path) -> None:
        super().__init__(root / "partial")
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise FileNotFoundError(f"no artifact {key!r}")
        return path

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, final)
        except OSError:  # another filesystem: copy beside the target, then rename into place
            temp = final.with_name(f".{final.name}.{os.getpid()}")
            shutil.copyfile(path, temp)
            os.replace(temp, final)
            path.unlink(missing_ok=True)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        temp = self.scratch / f"put-{uuid.uuid4().hex}"  # its own name: two saves of one upload never meet
        try:
            await asyncio.to_thread(temp.write_bytes, data)
            await self.put_file(key, temp, content_type)
        finally:
            temp.unlink(missing_ok=True)  # a full disk leaves no partial file behind

    async def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        with self._path(key).open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def open_artifacts(artifacts_url: str | None, data_dir: Path) -> ArtifactStore:
    """The store `BROKER_ARTIFACTS_URL` names: `s3://bucket/prefix`, else files under `data_dir`."""
    if not artifacts_url:
        return FileArtifacts(data_dir)
    if artifacts_url.startswith("file://"):
        return FileArtifacts(Path(artifacts_url.removeprefix("file://")))
    if not artifacts_url.startswith("s3://"):
        raise ValueError(
            f"BROKER_ARTIFACTS_URL must be s3://bucket/prefix or file:///path, not {artifacts_url!r}"
        )
    from broker.store.s3_artifacts import S3Artifacts

    return S3Artifacts.from_url(artifacts_url, scratch=data_dir / "partial")
